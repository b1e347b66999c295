"""PEtab's objective priors: log-densities of parameter values, a term of the log-posterior.

A parameter-table row's prior is ``priorDistribution`` + ``priorParameters`` (PEtab v2) or
``objectivePriorType`` + ``objectivePriorParameters`` (PEtab v1). Densities are of the parameter's value on
the linear scale, except v1's ``parameterScale*`` types, which are of the value on its ``parameterScale``
(``log10(x)`` for a ``log10`` parameter). Normalised densities (every constant kept), as PEtab.jl and pypesto
report them. PEtab v2 truncates a prior to the parameter's bounds where they cut into its support, and gives
every other estimated parameter a uniform prior on its bounds once any parameter has a prior (the PEtab test
suite's 0024 and 0025); v1's priors are not truncated. The log-posterior is the log-likelihood plus the sum
of these terms; :func:`log_prior` is differentiable (torch) in the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..likelihood.prior import PARAMETERS, check, count, log_mass

#: name -> (number of parameters, what they are): PEtab v2 spellings, and v1's camel case as aliases
KINDS = {name: (count(name), what) for name, what in PARAMETERS.items()}
ALIASES = {"logNormal": "log-normal", "logLaplace": "log-laplace", "lognormal": "log-normal",
           "loglaplace": "log-laplace", "logUniform": "log-uniform", "chiSquare": "chisquare",
           "chi-square": "chisquare"}
#: v1's types on the parameter scale
SCALED = {"parameterScaleNormal": "normal", "parameterScaleLaplace": "laplace", "parameterScaleUniform": "uniform"}


@dataclass(frozen=True)
class Prior:
    """One prior: its distribution, its parameters, and whether it is of the value on ``parameterScale``."""

    kind: str
    parameters: tuple[float, ...]
    on_scale: bool = False
    #: PEtab v2: the parameter's bounds, where they cut into the prior's support
    truncated: tuple[float, float] | None = None

    def describe(self) -> str:
        where = " (on the parameter scale)" if self.on_scale else ""
        cut = f" truncated to [{self.truncated[0]:g}, {self.truncated[1]:g}]" if self.truncated else ""
        return f"{self.kind}({', '.join(f'{p:g}' for p in self.parameters)}){where}{cut}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "parameters": list(self.parameters), "on_scale": self.on_scale,
                "truncated": list(self.truncated) if self.truncated else None}

    def to_config(self, scale: str = "lin") -> dict:
        """As a ``ude`` config's ``prior:`` (``scale``: the parameter's ``parameterScale``, for the
        ``parameterScale*`` priors)."""
        out = {"distribution": self.kind, "parameters": list(self.parameters),
               "scale": scale if self.on_scale else "lin"}
        if self.truncated is not None:
            out["truncated"] = list(self.truncated)
        return out

    @classmethod
    def from_json(cls, raw: dict) -> Prior:
        cut = raw.get("truncated")
        return cls(raw["kind"], tuple(raw["parameters"]), bool(raw.get("on_scale", False)),
                   tuple(cut) if cut else None)


def read_prior(row, v2: bool, bounds: tuple[float, float] | None = None) -> Prior | None:
    """The objective prior of a parameter-table row, or None (no prior, or v1's default
    ``parameterScaleUniform`` without parameters, which is a flat prior); in v2, truncated to ``bounds`` (the
    parameter's) where they cut into its support."""
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
        raise ConfigError(f"line {row['_row']}, column {par_column}: {text!r}; expected {n} finite number"
                          f"{'s' if n > 1 else ''} ({what}){' separated by ;' if n > 1 else ''}", where=row["_file"])
    why = check(name, values)
    if why is not None:
        raise ConfigError(f"line {row['_row']}, column {par_column}: {text!r}; {why}", where=row["_file"])
    truncated = None
    if v2 and bounds is not None and not on_scale:
        cut = log_mass(name, values, (float(bounds[0]), float(bounds[1])))
        if cut == -math.inf:
            raise ConfigError(f"line {row['_row']}: the bounds [{bounds[0]:g}, {bounds[1]:g}] have no probability "
                              f"under the prior {name}({text})", where=row["_file"])
        if cut < -1e-14:  # the bounds cut into its support
            truncated = (float(bounds[0]), float(bounds[1]))
    return Prior(name, values, on_scale, truncated)


def log_density(prior: Prior, x: torch.Tensor, scale: str = "lin") -> torch.Tensor:
    """The sum over the elements of ``x`` (values on the linear scale) of the prior's log-density; ``scale`` is
    the parameter's ``parameterScale`` (used by the ``parameterScale*`` priors only)."""
    from ..likelihood.prior import log_density as elementwise

    return elementwise(prior.kind, prior.parameters, x, scale if prior.on_scale else "lin", prior.truncated).sum()
