"""Log-normal noise: ``log y ~ N(log mu, sigma^2)`` (multiplicative errors; data and predictions > 0).

The density is that of ``y`` itself, so it includes the Jacobian ``log y``:
``nll = 0.5*log(2*pi) + log(sigma) + log(y) + 0.5*((log y - log mu)/sigma)^2`` (PEtab's ``log-normal``).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import LOG_2PI, NoiseModel


class LogNormal(NoiseModel):
    name = "lognormal"
    scale_information = 2.0
    positive = True

    @property
    def profiles(self) -> bool:
        return True

    @property
    def roles(self) -> tuple[str, ...]:
        return ("sigma",)

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        sigma = p["sigma"]
        log_y = torch.log(y)
        z = (log_y - torch.log(mu)) / sigma
        return 0.5 * LOG_2PI + torch.log(sigma) + log_y + 0.5 * z * z

    def prepare(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_y = torch.log(y)
        return log_y, log_y  # the Jacobian log(y) depends on the data alone

    def masked_nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor], mask: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
        r = y - torch.log(mu)  # y: log y (prepare)
        sigma = p["sigma"]
        return count * (0.5 * LOG_2PI + torch.log(sigma)) + 0.5 * (r * r * mask).sum(dim=(0, 2)) / (sigma * sigma)

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return np.exp(np.log(np.maximum(mu, 1e-300)) + p["sigma"] * rng.standard_normal(np.shape(mu)))

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        s2 = p["sigma"] ** 2  # of y around its median mu
        return mu * torch.sqrt(torch.expm1(s2) * torch.exp(s2))

    def standardised(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (torch.log(y) - torch.log(mu)) / p["sigma"]

    def data_problem(self, y: np.ndarray) -> tuple[np.ndarray, str] | None:
        return y <= 0, "log-normal noise needs values > 0"

    def squared_residuals(self, y: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r = y - torch.log(mu)
        return (r * r * mask).sum(dim=(0, 2))

    def profiled(self, rss: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # sigma^2 = RSS/n maximises the likelihood: the NLL becomes n/2 (log(2 pi RSS/n) + 1)
        variance = rss / count
        return 0.5 * count * (torch.log(variance) + LOG_2PI + 1.0), torch.sqrt(variance)

    def initial(self, role: str, y: np.ndarray) -> float:
        return 0.1

    def describe(self) -> str:
        return "log-normal: log(y) normal around log(prediction), standard deviation sigma"
