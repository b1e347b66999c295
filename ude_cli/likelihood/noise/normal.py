"""Normal (Gaussian) noise: ``y ~ N(mu, sd^2)`` with ``sd`` constant (``sigma``), proportional
(``sigma*|mu|``), combined (``sigma + sigma_rel*|mu|``) or combined2 (``sqrt(sigma^2 + (sigma_rel*mu)^2)``: the
two variances add, Monolix's combined2).

``nll = 0.5*log(2*pi) + log(sd) + 0.5*((y - mu)/sd)^2`` (PEtab's ``normal``).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import LOG_2PI, NoiseModel


class Normal(NoiseModel):
    name = "normal"
    scale_information = 2.0

    @property
    def profiles(self) -> bool:
        return self.error == "constant"

    @property
    def roles(self) -> tuple[str, ...]:
        return ("sigma", "sigma_rel") if self.error in ("combined", "combined2") else ("sigma",)

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        sd = self.sd(torch.as_tensor(mu), {k: torch.as_tensor(v) for k, v in p.items()}).numpy()
        return mu + sd * rng.standard_normal(np.shape(mu))

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.error == "constant":
            return p["sigma"] + torch.zeros_like(mu)
        if self.error == "proportional":
            return p["sigma"] * torch.abs(mu)
        if self.error == "combined2":
            return torch.sqrt(p["sigma"] ** 2 + (p["sigma_rel"] * mu) ** 2)
        return p["sigma"] + p["sigma_rel"] * torch.abs(mu)

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        sd = self.sd(mu, p)
        z = (y - mu) / sd
        return 0.5 * LOG_2PI + torch.log(sd) + 0.5 * z * z

    def masked_nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor], mask: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
        if self.error != "constant":
            return super().masked_nll(y, mu, p, mask, count)
        r = y - mu  # a constant sd: the NLL is a function of the sum of squared residuals
        sigma = p["sigma"]
        return count * (0.5 * LOG_2PI + torch.log(sigma)) + 0.5 * (r * r * mask).sum(dim=(0, 2)) / (sigma * sigma)

    def squared_residuals(self, y: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r = y - mu
        return (r * r * mask).sum(dim=(0, 2))

    def profiled(self, rss: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # sigma^2 = RSS/n maximises the likelihood: the NLL becomes n/2 (log(2 pi RSS/n) + 1)
        variance = rss / count
        return 0.5 * count * (torch.log(variance) + LOG_2PI + 1.0), torch.sqrt(variance)

    def initial(self, role: str, y: np.ndarray) -> float:
        if self.error == "proportional" or role == "sigma_rel":
            return 0.1
        spread = float(np.std(y)) if y.size > 1 else 0.0
        scale = spread if spread > 0 else (float(np.mean(np.abs(y))) if y.size else 1.0)
        return 0.1 * scale if scale > 0 else 1.0

    def describe(self) -> str:
        return {"constant": "normal, constant standard deviation sigma",
                "proportional": "normal, standard deviation sigma*|prediction| (proportional error)",
                "combined": "normal, standard deviation sigma + sigma_rel*|prediction| (combined error)",
                "combined2": "normal, standard deviation sqrt(sigma^2 + (sigma_rel*prediction)^2) (combined error, "
                             "the variances added)"}[self.error]
