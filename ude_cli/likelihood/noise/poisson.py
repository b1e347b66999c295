"""Poisson noise for counts: ``y ~ Poisson(mu)``; ``nll = mu - y*log(mu) + lgamma(y + 1)``."""

from __future__ import annotations

import numpy as np
import torch

from .base import NoiseModel


class Poisson(NoiseModel):
    name = "poisson"
    positive = True

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return mu - y * torch.log(mu) + torch.lgamma(y + 1)

    def prepare(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y, torch.lgamma(y + 1)

    def masked_nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor], mask: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
        return ((mu - y * torch.log(mu)) * mask).sum(dim=(0, 2))

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(np.maximum(mu, 0.0)).astype(float)

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sqrt(mu)

    def data_problem(self, y: np.ndarray) -> tuple[np.ndarray, str] | None:
        return (y < 0) | (y != np.round(y)), "Poisson noise needs counts (whole numbers >= 0)"

    def describe(self) -> str:
        return "Poisson counts (variance = prediction)"
