"""The base of a noise model: the distribution of an observation around its prediction.

A noise model is one small module with one class; :data:`ude_cli.likelihood.noise.REGISTRY` lists them.
Each gives, elementwise and in torch (so that training, refits and reports compute the same number):

- ``nll(y, mu, p)``: the negative log-likelihood of ``y`` given the prediction ``mu`` and the noise
  parameters ``p``, with every normalising constant, so that sums equal what PEtab, AMICI and PEtab.jl
  report for the same problem;
- ``sd(mu, p)``: the standard deviation of an observation (for prediction intervals and standardised
  residuals);
- ``sample(mu, p, rng)``: observations drawn from the distribution (prediction bands);
- ``standardised(y, mu, p)``: the residual in units of that standard deviation (Pearson residuals for
  counts; on log scale for log-normal noise);
- ``roles``: the noise parameters it needs (``sigma``, ``sigma_rel``, ``dispersion``);
- ``data_problem(y)``: which observed values it cannot describe (negative counts, values <= 0 for
  log-normal), for a one-line error before any fit.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

#: log(2*pi)
LOG_2PI = math.log(2.0 * math.pi)


class NoiseModel:
    """One distribution family. Subclasses set :attr:`name` and implement the methods below."""

    name: ClassVar[str] = ""
    #: whether predictions must be > 0 (they are floored at a small positive value before use)
    positive: ClassVar[bool] = False
    #: the expected (Fisher) information of the scale sigma per observed cell, times sigma^2, where the model is a
    #: location-scale family in y (or log y) with location information 1/sigma^2 per cell: 2 for the normal, 1 for
    #: the Laplace distribution (None: not such a family)
    scale_information: ClassVar[float | None] = None

    def __init__(self, error: str = "constant"):
        self.error = error

    @property
    def roles(self) -> tuple[str, ...]:
        """The noise parameters this model needs, by role."""
        return ()

    def nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def sd(self, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def standardised(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (y - mu) / self.sd(mu, p)

    def sample(self, mu: np.ndarray, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Observations drawn around the predictions ``mu`` (prediction intervals)."""
        raise NotImplementedError

    # -- the training objective's fast path: sums over the observed cells -------------------------------
    def prepare(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The observations as :meth:`masked_nll` takes them, and the part of each cell's NLL that depends on
        the observation alone (summed once, not at every evaluation)."""
        return y, torch.zeros_like(y)

    def masked_nll(self, y: torch.Tensor, mu: torch.Tensor, p: dict[str, torch.Tensor], mask: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
        """``sum(mask * (nll - constant))`` over time and experiments, per start and observable ``(S, k)``.

        ``y`` and ``mu`` are ``(T, S, B, k)`` (``y`` as :meth:`prepare` made it), ``p`` each ``(S, k)``, ``mask``
        ``(T, 1, B, k)`` and ``count`` its sum ``(1, k)``. The default sums :meth:`nll`."""
        wide = {role: v[:, None, :] for role, v in p.items()}  # (S, 1, k) against (T, S, B, k)
        return (self.nll(y, mu, wide) * mask).sum(dim=(0, 2))

    @property
    def profiles(self) -> bool:
        """Whether :meth:`profiled` exists: the noise parameter has a closed-form maximum-likelihood value."""
        return False

    def squared_residuals(self, y: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The residual statistic the noise parameter's closed-form maximum is a function of, per start and
        observable ``(S, k)`` (only where :attr:`profiles`): ``sum(mask * r^2)`` for normal noise, ``r`` the residual
        whose variance the noise parameter is; ``sum(mask * |r|)`` for Laplace noise."""
        raise NotImplementedError

    def profiled(self, rss: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The NLL (less the data-only constants) with the noise parameter at its maximum-likelihood value
        given the residuals' squared sum ``rss`` over ``count`` cells, and that value: ``(S, k)`` each."""
        raise NotImplementedError

    def data_problem(self, y: np.ndarray) -> tuple[np.ndarray, str] | None:
        """``(bad, requirement)``: a boolean mask of the finite values it cannot describe, and what it needs."""
        return None

    def initial(self, role: str, y: np.ndarray) -> float:
        """A starting value of the noise parameter ``role`` from the observed values ``y`` (finite ones)."""
        return 1.0

    def describe(self) -> str:
        return self.name
