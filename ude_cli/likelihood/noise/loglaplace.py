"""Log-Laplace noise: ``log y ~ Laplace(log mu, b)`` (multiplicative errors with heavy tails; data and
predictions > 0).

The density is that of ``y`` itself, with the Jacobian ``log y``: ``nll = log(2*b) + log(y) + |log y - log mu|/b``
(PEtab's ``laplace`` noise with ``observableTransformation: log``). ``b`` is the config's ``sigma``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import NoiseModel


class LogLaplace(NoiseModel):
    name = "loglaplace"
    scale_information = 1.0
    positive = True

    @property
    def roles(self) -> tuple[str, ...]:
        return ("sigma",)

    @property
    def profiles(self) -> bool:
        return True

    def prepare(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_y = torch.log(y)
        return log_y, log_y  # the Jacobian log(y) depends on the data alone

    def masked_nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor], mask: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
        b = p["sigma"]  # y: log y (prepare)
        return count * (math.log(2.0) + torch.log(b)) + (torch.abs(y - torch.log(mu)) * mask).sum(dim=(0, 2)) / b

    def squared_residuals(self, y: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (torch.abs(y - torch.log(mu)) * mask).sum(dim=(0, 2))  # the sum of absolute log residuals

    def profiled(self, total: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = total / count  # b = mean |log y - log mu| maximises the likelihood
        return count * (torch.log(2.0 * b) + 1.0), b

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        b = p["sigma"]
        log_y = torch.log(y)
        return math.log(2.0) + torch.log(b) + log_y + torch.abs(log_y - torch.log(mu)) / b

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        # of y around its median mu: E[y^k] = mu^k / (1 - (k b)^2) for k b < 1 (infinite beyond)
        b = p["sigma"]
        m1, m2 = 1.0 / (1.0 - b * b), 1.0 / (1.0 - 4.0 * b * b)
        var = torch.where(2.0 * b < 1.0, m2 - m1 * m1, torch.full_like(b, math.inf))
        return mu * torch.sqrt(var)

    def standardised(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (torch.log(y) - torch.log(mu)) / (math.sqrt(2.0) * p["sigma"])

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return np.exp(np.log(np.maximum(mu, 1e-300)) + rng.laplace(0.0, 1.0, np.shape(mu)) * p["sigma"])

    def data_problem(self, y: np.ndarray) -> tuple[np.ndarray, str] | None:
        return y <= 0, "log-Laplace noise needs values > 0"

    def initial(self, role: str, y: np.ndarray) -> float:
        return 0.1

    def describe(self) -> str:
        return "log-Laplace: log(y) Laplace around log(prediction), scale sigma"
