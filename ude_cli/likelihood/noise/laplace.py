"""Laplace (double-exponential) noise: ``y ~ Laplace(mu, b)``, heavier tails than the normal, so that an outlier
weighs by its distance, not its square (a least-absolute-deviation fit with a likelihood).

``nll = log(2*b) + |y - mu|/b`` (PEtab's ``laplace``); the standard deviation is ``sqrt(2)*b``. The scale ``b`` is
the ``sigma`` of the config (and of PEtab's ``noiseFormula``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import NoiseModel


class Laplace(NoiseModel):
    name = "laplace"
    scale_information = 1.0

    @property
    def roles(self) -> tuple[str, ...]:
        return ("sigma",)

    @property
    def profiles(self) -> bool:
        return True

    def squared_residuals(self, y: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (torch.abs(y - mu) * mask).sum(dim=(0, 2))  # the sum of absolute residuals (not squared)

    def profiled(self, total: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # b = mean |r| maximises the likelihood: the NLL becomes n (log(2 mean|r|) + 1)
        b = total / count
        return count * (torch.log(2.0 * b) + 1.0), b

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        b = p["sigma"]
        return math.log(2.0) + torch.log(b) + torch.abs(y - mu) / b

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return math.sqrt(2.0) * p["sigma"] + torch.zeros_like(mu)

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return mu + rng.laplace(0.0, 1.0, np.shape(mu)) * p["sigma"]

    def initial(self, role: str, y: np.ndarray) -> float:
        spread = float(np.std(y)) if y.size > 1 else 0.0
        scale = spread if spread > 0 else (float(np.mean(np.abs(y))) if y.size else 1.0)
        return 0.1 * scale if scale > 0 else 1.0

    def describe(self) -> str:
        return "Laplace, scale sigma (standard deviation sqrt(2)*sigma): absolute deviations"
