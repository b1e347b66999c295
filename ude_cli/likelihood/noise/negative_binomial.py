"""Negative-binomial noise for overdispersed counts, with mean ``mu`` and dispersion ``phi``:
variance ``mu + mu^2/phi`` (Stan's ``neg_binomial_2``; large ``phi`` approaches Poisson).

``nll = -[lgamma(y + phi) - lgamma(phi) - lgamma(y + 1) + phi*log(phi/(phi + mu)) + y*log(mu/(phi + mu))]``
"""

from __future__ import annotations

import numpy as np
import torch

from .base import NoiseModel


class NegativeBinomial(NoiseModel):
    name = "negative_binomial"
    positive = True

    @property
    def roles(self) -> tuple[str, ...]:
        return ("dispersion",)

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        phi = p["dispersion"]
        log_total = torch.log(phi + mu)
        return -(torch.lgamma(y + phi) - torch.lgamma(phi) - torch.lgamma(y + 1)
                 + phi * (torch.log(phi) - log_total) + y * (torch.log(mu) - log_total))

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        phi = np.broadcast_to(p["dispersion"], np.shape(mu))
        return rng.negative_binomial(phi, phi / (phi + np.maximum(mu, 1e-300))).astype(float)

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sqrt(mu + mu * mu / p["dispersion"])

    def data_problem(self, y: np.ndarray) -> tuple[np.ndarray, str] | None:
        return (y < 0) | (y != np.round(y)), "negative-binomial noise needs counts (whole numbers >= 0)"

    def initial(self, role: str, y: np.ndarray) -> float:
        return 10.0

    def describe(self) -> str:
        return "negative binomial counts (variance = prediction + prediction^2/dispersion)"
