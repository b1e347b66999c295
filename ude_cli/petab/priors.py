"""PEtab's objective priors: log-densities of parameter values, a term of the log-posterior.

A parameter-table row's prior is ``priorDistribution`` + ``priorParameters`` (PEtab v2) or
``objectivePriorType`` + ``objectivePriorParameters`` (PEtab v1). Densities are of the parameter's value on
the linear scale, except v1's ``parameterScale*`` types, which are of the value on its ``parameterScale``
(``log10(x)`` for a ``log10`` parameter). Normalised densities (every constant kept), as PEtab.jl and pypesto
report them; a prior is not truncated to the parameter's bounds. The log-posterior is the log-likelihood
plus the sum of these terms; :func:`log_prior` is differentiable (torch) in the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..likelihood.prior import PARAMETERS

#: name -> (number of parameters, what they are): PEtab v2 spellings, and v1's camel case as aliases
KINDS = {name: (2, what) for name, what in PARAMETERS.items()}
ALIASES = {"logNormal": "log-normal", "logLaplace": "log-laplace", "lognormal": "log-normal",
           "loglaplace": "log-laplace"}
#: v1's types on the parameter scale
SCALED = {"parameterScaleNormal": "normal", "parameterScaleLaplace": "laplace", "parameterScaleUniform": "uniform"}


@dataclass(frozen=True)
class Prior:
    """One prior: its distribution, its parameters, and whether it is of the value on ``parameterScale``."""

    kind: str
    parameters: tuple[float, ...]
    on_scale: bool = False

    def describe(self) -> str:
        where = " (on the parameter scale)" if self.on_scale else ""
        return f"{self.kind}({', '.join(f'{p:g}' for p in self.parameters)}){where}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "parameters": list(self.parameters), "on_scale": self.on_scale}

    def to_config(self, scale: str = "lin") -> dict:
        """As a ``ude`` config's ``prior:`` (``scale``: the parameter's ``parameterScale``, for the
        ``parameterScale*`` priors)."""
        return {"distribution": self.kind, "parameters": list(self.parameters),
                "scale": scale if self.on_scale else "lin"}

    @classmethod
    def from_json(cls, raw: dict) -> Prior:
        return cls(raw["kind"], tuple(raw["parameters"]), bool(raw.get("on_scale", False)))


def read_prior(row, v2: bool) -> Prior | None:
    """The objective prior of a parameter-table row, or None (no prior, or v1's default
    ``parameterScaleUniform`` without parameters, which is a flat prior)."""
    kind_column, par_column = (("priorDistribution", "priorParameters") if v2
                               else ("objectivePriorType", "objectivePriorParameters"))
    kind = str(row.get(kind_column, "")).strip()
    if not v2 and not kind and str(row.get("priorType", "")).strip():
        kind_column, par_column = "priorType", "priorParameters"
        kind = str(row.get(kind_column, "")).strip()
    text = str(row.get(par_column, "")).strip()
    if not kind:
        return None
    on_scale = kind in SCALED
    if on_scale and kind == "parameterScaleUniform" and not text:
        return None  # v1's default: flat on the parameter scale within the bounds
    name = SCALED.get(kind, ALIASES.get(kind, kind))
    if name not in KINDS:
        raise ConfigError(f"line {row['_row']}, column {kind_column}: prior {kind!r} is not supported; expected one "
                          f"of {', '.join(KINDS)}", where=row["_file"])
    n, what = KINDS[name]
    try:
        values = tuple(float(x) for x in text.split(";")) if text else ()
    except ValueError:
        raise ConfigError(f"line {row['_row']}, column {par_column}: {text!r}; expected {n} numbers ({what}) "
                          f"separated by ';'", where=row["_file"]) from None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"line {row['_row']}, column {par_column}: {text!r}; expected {n} finite numbers ({what}) "
                          f"separated by ';'", where=row["_file"])
    if name == "uniform" and not values[0] < values[1]:
        raise ConfigError(f"line {row['_row']}, column {par_column}: {text!r}; a uniform prior needs lower < upper",
                          where=row["_file"])
    if name != "uniform" and values[1] <= 0:
        raise ConfigError(f"line {row['_row']}, column {par_column}: {text!r}; the {what.split('; ')[1]} must be > 0",
                          where=row["_file"])
    return Prior(name, values, on_scale)


def log_density(prior: Prior, x: torch.Tensor, scale: str = "lin") -> torch.Tensor:
    """The sum over the elements of ``x`` (values on the linear scale) of the prior's log-density; ``scale`` is
    the parameter's ``parameterScale`` (used by the ``parameterScale*`` priors only)."""
    from ..likelihood.prior import log_density as elementwise

    a, b = prior.parameters
    return elementwise(prior.kind, (a, b), x, scale if prior.on_scale else "lin").sum()
