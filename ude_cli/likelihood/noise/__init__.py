"""Noise models: one module per distribution, registered here by the name a config uses.

Adding one is a module with a :class:`~ude_cli.likelihood.noise.base.NoiseModel` subclass and a line in
:data:`REGISTRY`. The registry names modules instead of importing them, so that the config schema
(:data:`ude_cli.config.NOISE_DISTRIBUTIONS` is :data:`NOISE_DISTRIBUTIONS`) is read without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import NoiseModel

#: distribution name (as a config writes it) -> (module of this package, class)
REGISTRY: dict[str, tuple[str, str]] = {
    "normal": ("normal", "Normal"),
    "lognormal": ("lognormal", "LogNormal"),
    "poisson": ("poisson", "Poisson"),
    "negative_binomial": ("negative_binomial", "NegativeBinomial"),
    "laplace": ("laplace", "Laplace"),
    "loglaplace": ("loglaplace", "LogLaplace"),
}

#: the distribution names the config schema accepts
NOISE_DISTRIBUTIONS: tuple[str, ...] = tuple(REGISTRY)


def noise_class(distribution: str) -> type[NoiseModel]:
    """The class of a registered distribution (its module imported on first use)."""
    module, name = REGISTRY[distribution]
    return getattr(import_module(f"{__name__}.{module}"), name)


def noise_model(distribution: str, error: str = "constant") -> NoiseModel:
    """The noise model of a distribution name (as the schema accepts it)."""
    return noise_class(distribution)(error)


__all__ = ["NOISE_DISTRIBUTIONS", "REGISTRY", "noise_class", "noise_model"]


def squared_error_description(loss) -> str:
    """A ``training.loss`` without a noise model, in words, with the likelihood reported beside it."""
    if loss.log:
        return "squared error of logarithms (log-normal, one sigma at its maximum-likelihood value)"
    if loss.scale == "std":
        return ("squared error over the observable's spread (normal, sigma proportional to the spread, at its "
                "maximum-likelihood value)")
    return "squared error (normal, one sigma for all observables at its maximum-likelihood value)"


def describe_observation_model(problem) -> list[str]:
    """The resolved observation and noise model of a problem, one line per observable and noise parameter."""
    lines = []
    for o in problem.observables.values():
        what = f"state {o.state}" if o.state is not None else o.expression.text
        if o.noise is None:
            noise = f"training.loss, no noise model: {squared_error_description(problem.config.training.loss)}"
        else:
            noise = noise_model(o.noise.distribution, o.noise.error).describe()
        lines.append(f"observable {o.name}: column '{o.column}' = {what}; noise: {noise}")
        for role, name in o.noise_parameters.items():
            p = problem.noise_parameters.get(name)
            if p is None:
                continue
            how = f"fixed at {p.init:g}" if p.fixed else f"estimated from {p.init:.4g}"
            bounds = f", bounds [{p.lower}, {p.upper}]" if (p.lower, p.upper) != (None, None) else ""
            lines.append(f"  {name} ({role}): {how}{bounds}")
    for p in problem.parameters.values():
        if p.role == "observation" or p.per_experiment:
            kind = "observation parameter" if p.role == "observation" else "parameter"
            lines.append(f"{kind} {p.name}: {'fixed' if p.fixed else 'learned'}"
                         + (", one value per experiment" if p.per_experiment else ""))
    return lines
