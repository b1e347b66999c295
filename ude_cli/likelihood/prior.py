"""Prior distributions of single values: their log-densities, a term of the objective (the log-posterior).

A prior is a distribution, its parameters, the scale of the value its density is of (``lin``: the value;
``log`` / ``log10``: its logarithm, PEtab v1's ``parameterScale*`` priors), and optionally the interval it is
truncated to (PEtab v2 truncates a prior to the parameter's bounds where they cut into its support: the
density divided by ``CDF(upper) - CDF(lower)``, computed once by scipy.stats; ``-inf`` outside). The densities
are normalised (every constant kept, as PEtab.jl and pypesto report them), PEtab v2's list:

- ``normal`` (mean; standard deviation), ``laplace`` (location; scale), ``cauchy`` (location; scale),
  ``uniform`` (lower; upper: ``-inf`` outside);
- ``log-normal`` / ``log-laplace`` (of ``log x``): the density of ``x`` itself, ``-log x`` included;
  ``log-uniform`` (lower; upper: ``1 / (x (log b - log a))``);
- ``chisquare`` (degrees of freedom), ``exponential`` (scale), ``gamma`` (shape; scale), ``rayleigh`` (scale),
  on ``x > 0``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DISTRIBUTIONS = ("normal", "laplace", "log-normal", "log-laplace", "uniform", "cauchy", "chisquare", "exponential",
                 "gamma", "log-uniform", "rayleigh")
#: what each distribution's parameters are (';'-separated, as many as it has)
PARAMETERS = {"normal": "mean; standard deviation", "laplace": "location; scale",
              "log-normal": "mean; standard deviation of log(x)", "log-laplace": "location; scale of log(x)",
              "uniform": "lower; upper", "cauchy": "location; scale", "chisquare": "degrees of freedom",
              "exponential": "scale", "gamma": "shape; scale", "log-uniform": "lower; upper", "rayleigh": "scale"}


def count(distribution: str) -> int:
    """How many parameters ``distribution`` has."""
    return len(PARAMETERS[distribution].split("; "))


def check(distribution: str, parameters: tuple[float, ...]) -> str | None:
    """Why ``parameters`` do not define a ``distribution`` (None when they do)."""
    if len(parameters) != count(distribution):
        return f"expected {count(distribution)} parameter(s) ({PARAMETERS[distribution]})"
    if not all(math.isfinite(p) for p in parameters):
        return "its parameters must be finite"
    if distribution == "uniform":
        return None if parameters[0] < parameters[1] else "a uniform prior needs lower < upper"
    if distribution == "log-uniform":
        return None if 0 < parameters[0] < parameters[1] else "a log-uniform prior needs 0 < lower < upper"
    if distribution in ("chisquare", "exponential", "rayleigh"):
        return None if parameters[0] > 0 else f"the {PARAMETERS[distribution]} must be > 0"
    if distribution == "gamma":
        return None if min(parameters) > 0 else "the shape and the scale must be > 0"
    return None if parameters[1] > 0 else f"the {PARAMETERS[distribution].split('; ')[1]} must be > 0"


def _frozen(distribution: str, parameters: tuple[float, ...]):
    """The scipy.stats distribution of the value (for its CDF); log-laplace through the Laplace CDF of log x."""
    from scipy import stats

    p = parameters
    return {"normal": lambda: stats.norm(p[0], p[1]), "laplace": lambda: stats.laplace(p[0], p[1]),
            "cauchy": lambda: stats.cauchy(p[0], p[1]), "uniform": lambda: stats.uniform(p[0], p[1] - p[0]),
            "log-normal": lambda: stats.lognorm(s=p[1], scale=math.exp(p[0])),
            "log-uniform": lambda: stats.loguniform(p[0], p[1]), "chisquare": lambda: stats.chi2(p[0]),
            "exponential": lambda: stats.expon(scale=p[0]), "gamma": lambda: stats.gamma(p[0], scale=p[1]),
            "rayleigh": lambda: stats.rayleigh(scale=p[0])}[distribution]()


def cdf(distribution: str, parameters: tuple[float, ...], x: float, upper: bool = False) -> float:
    """The prior's cumulative distribution function at ``x`` (of the value on its own scale); ``upper``: its
    survival function, 1 - CDF, computed as such (no cancellation in the upper tail)."""
    if distribution == "log-laplace":
        from scipy import stats

        if x <= 0:
            return 1.0 if upper else 0.0
        laplace = stats.laplace(parameters[0], parameters[1])
        return float(laplace.sf(math.log(x)) if upper else laplace.cdf(math.log(x)))
    frozen = _frozen(distribution, parameters)
    return float(frozen.sf(x) if upper else frozen.cdf(x))


@lru_cache(maxsize=256)
def log_mass(distribution: str, parameters: tuple[float, ...], truncated: tuple[float, float] | None) -> float:
    """``log(CDF(upper) - CDF(lower))`` of the truncation interval (0 without one)."""
    if truncated is None:
        return 0.0
    lower, upper = truncated
    if cdf(distribution, parameters, lower) > 0.5:  # in the upper tail: by the survival function
        mass = cdf(distribution, parameters, lower, upper=True) - cdf(distribution, parameters, upper, upper=True)
    else:
        mass = cdf(distribution, parameters, upper) - cdf(distribution, parameters, lower)
    return math.log(mass) if mass > 0 else -math.inf


def log_density(distribution: str, parameters: tuple[float, ...], x: torch.Tensor, scale: str = "lin",
                truncated: tuple[float, float] | None = None) -> torch.Tensor:
    """The log-density at every element of ``x`` (values on the linear scale; the prior is of the value on
    ``scale``), truncated to ``truncated`` (of the value on ``scale``) when given."""
    import torch

    if scale != "lin":
        x = torch.log(x) if scale == "log" else torch.log10(x)
    a = parameters[0]
    b = parameters[1] if len(parameters) > 1 else math.nan
    positive = torch.where(x > 0, x, torch.full_like(x, math.nan))  # NaN (so -inf) at x <= 0
    nonnegative = torch.where(x >= 0, x, torch.full_like(x, math.nan))  # (the support of chisquare, gamma, ...)
    if distribution in ("log-normal", "log-laplace"):
        z = torch.log(positive)
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
    elif distribution == "log-uniform":
        out = torch.where((x >= a) & (x <= b), -torch.log(positive) - math.log(math.log(b) - math.log(a)),
                          torch.full_like(x, -math.inf))
    elif distribution == "chisquare":  # on x >= 0: at 0 finite for 2 degrees of freedom (xlogy: 0 log 0 = 0)
        out = torch.xlogy(torch.tensor(a / 2 - 1, dtype=x.dtype), nonnegative) - nonnegative / 2 \
            - (a / 2) * math.log(2) - math.lgamma(a / 2)
    elif distribution == "exponential":
        out = -math.log(a) - nonnegative / a
    elif distribution == "gamma":
        out = torch.xlogy(torch.tensor(a - 1, dtype=x.dtype), nonnegative) - nonnegative / b - math.lgamma(a) \
            - a * math.log(b)
    elif distribution == "rayleigh":
        out = torch.log(positive) - 2 * math.log(a) - positive ** 2 / (2 * a * a)
    else:
        raise ValueError(f"unknown prior distribution {distribution!r}")
    if truncated is not None:
        lower, upper = truncated
        out = torch.where((x >= lower) & (x <= upper), out - log_mass(distribution, parameters, truncated),
                          torch.full_like(x, -math.inf))
    return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)  # log-normal at x <= 0
