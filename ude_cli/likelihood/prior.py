"""Prior distributions of single values: their log-densities, a term of the objective (the log-posterior).

A prior is a distribution, its two parameters, and the scale of the value its density is of (``lin``: the
value; ``log`` / ``log10``: its logarithm, PEtab v1's ``parameterScale*`` priors). The densities are
normalised (every constant kept, as PEtab.jl and pypesto report them) and not truncated to any bounds:

- ``normal`` (mean; standard deviation), ``laplace`` (location; scale), ``cauchy`` (location; scale),
  ``uniform`` (lower; upper: ``-inf`` outside);
- ``log-normal`` / ``log-laplace`` (of ``log x``): the density of ``x`` itself, ``-log x`` included.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DISTRIBUTIONS = ("normal", "laplace", "log-normal", "log-laplace", "uniform", "cauchy")
#: what each distribution's two parameters are
PARAMETERS = {"normal": "mean; standard deviation", "laplace": "location; scale",
              "log-normal": "mean; standard deviation of log(x)", "log-laplace": "location; scale of log(x)",
              "uniform": "lower; upper", "cauchy": "location; scale"}


def check(distribution: str, parameters: tuple[float, float]) -> str | None:
    """Why ``parameters`` do not define a ``distribution`` (None when they do)."""
    a, b = parameters
    if not (math.isfinite(a) and math.isfinite(b)):
        return "its parameters must be finite"
    if distribution == "uniform":
        return None if a < b else "a uniform prior needs lower < upper"
    return None if b > 0 else f"the {PARAMETERS[distribution].split('; ')[1]} must be > 0"


def log_density(distribution: str, parameters: tuple[float, float], x: torch.Tensor,
                scale: str = "lin") -> torch.Tensor:
    """The log-density at every element of ``x`` (values on the linear scale; the prior is of the value on
    ``scale``)."""
    import torch

    if scale != "lin":
        x = torch.log(x) if scale == "log" else torch.log10(x)
    a, b = parameters
    if distribution in ("log-normal", "log-laplace"):
        z = torch.log(torch.where(x > 0, x, torch.full_like(x, math.nan)))
        jac = -z  # the density of x: that of log(x) divided by x
    else:
        z, jac = x, torch.zeros_like(x)
    if distribution in ("normal", "log-normal"):
        out = -0.5 * ((z - a) / b) ** 2 - math.log(b) - 0.5 * math.log(2 * math.pi) + jac
    elif distribution in ("laplace", "log-laplace"):
        out = -torch.abs(z - a) / b - math.log(2 * b) + jac
    elif distribution == "cauchy":
        out = -torch.log1p(((z - a) / b) ** 2) - math.log(math.pi * b)
    elif distribution == "uniform":
        out = torch.where((x >= a) & (x <= b), torch.full_like(x, -math.log(b - a)), torch.full_like(x, -math.inf))
    else:
        raise ValueError(f"unknown prior distribution {distribution!r}")
    return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)  # log-normal at x <= 0
