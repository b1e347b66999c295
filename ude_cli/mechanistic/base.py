"""What a built-in mechanistic model is: states, parameters with defaults, equations, citation.

A built-in model is data, not code: its equations are strings in the same language a user writes
in a config (:mod:`ude_cli.expressions`), parsed through the same whitelist. Adding a model is one
new module holding a :class:`BuiltinModel` and one line in :mod:`ude_cli.mechanistic`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParameterDefault:
    """Default settings of one parameter of a built-in model (each can be overridden in a config)."""

    init: float
    description: str
    positive: bool = True
    bounds: tuple[float | None, float | None] | None = None
    fixed: bool = False
    unit: str | None = None  # with {t} for the time's unit and {STATE} for a state's: "1/({y}·{t})"


@dataclass(frozen=True)
class BuiltinModel:
    """A mechanistic ODE model known by name (``model.builtin`` in a config)."""

    name: str
    summary: str
    states: Mapping[str, str]  # state -> description, in order
    parameters: Mapping[str, ParameterDefault]
    equations: Mapping[str, str]  # state -> right-hand side
    citation: str
    constants: Mapping[str, float | None] = field(default_factory=dict)  # None: the config must give it
    constant_descriptions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.equations) != list(self.states):
            raise ValueError(f"{self.name}: equations must be given for the states, in order")


def unit_text(template: str | None, units: Mapping[str, str | None]) -> str | None:
    """A parameter's unit with the data's units put in: ``{t}`` the time's, ``{x}`` state x's (from
    ``units``: name -> unit). An unknown unit reads ``time`` or ``[x]``; a compound one is bracketed
    where it is part of a larger unit ("[depot]/(mg/L)")."""
    import re

    if template is None:
        return None

    def put(match) -> str:
        name = match.group(1)
        unit = units.get(name) or ("time" if name == "t" else f"[{name}]")
        whole = template == match.group(0)
        return f"({unit})" if not whole and any(c in unit for c in "/· *") else unit

    return re.sub(r"\{(\w+)\}", put, template)
