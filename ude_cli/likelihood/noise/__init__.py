"""Noise models: one module per distribution, registered here by the name a config uses.

Adding one is a module with a :class:`~ude_cli.likelihood.noise.base.NoiseModel` subclass and a line in
:data:`NOISE_MODELS` (and its name in :data:`ude_cli.config.NOISE_DISTRIBUTIONS`, which the schema checks).
"""

from __future__ import annotations

from .base import NoiseModel
from .lognormal import LogNormal
from .negative_binomial import NegativeBinomial
from .normal import Normal
from .poisson import Poisson

NOISE_MODELS: dict[str, type[NoiseModel]] = {
    "normal": Normal,
    "lognormal": LogNormal,
    "poisson": Poisson,
    "negative_binomial": NegativeBinomial,
}


def noise_model(distribution: str, error: str = "constant") -> NoiseModel:
    """The noise model of a distribution name (as the schema accepts it)."""
    return NOISE_MODELS[distribution](error)


__all__ = ["NOISE_MODELS", "NoiseModel", "noise_model"]
