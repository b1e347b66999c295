"""The loss: mean squared error over observed cells, optionally scaled per state or on log scale.

Observations are aligned with each group's union time grid once (:mod:`ude_cli.model`); a loss
evaluation is then a handful of tensor operations per group. Empty cells carry weight 0.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import LossSpec
from .model import UDEModel

#: Predictions are clamped at this fraction of a state's spread before a log is taken.
LOG_FLOOR = 1e-9


class Objective:
    """Loss of a :class:`UDEModel`'s solutions against the data, per start.

    Arguments:
        model: the model whose groups hold the aligned observations.
        spec: the loss settings.
    """

    def __init__(self, model: UDEModel, spec: LossSpec):
        self.spec = spec
        self.model = model
        dt = model.dtype
        mean, std = model.problem.dataset.state_stats()
        self.weights = torch.tensor(1.0 / std if spec.scale == "std" else np.ones_like(std), dtype=dt)
        self.floor = torch.tensor(LOG_FLOOR * np.maximum(std, 1e-300), dtype=dt)
        self._obs, self._masks = [], {"train": [], "validation": []}
        for g in model.groups:
            obs = np.where(np.isfinite(g.observed), g.observed, 1.0 if spec.log else 0.0)
            obs_t = torch.tensor(obs, dtype=dt)[:, None]  # (T, 1, Bg, n)
            self._obs.append(torch.log(obs_t) if spec.log else obs_t)
            self._masks["train"].append(torch.tensor(g.train, dtype=dt)[:, None])
            self._masks["validation"].append(torch.tensor(g.valid, dtype=dt)[:, None])
        self.counts = {k: float(sum(m.sum() for m in v)) for k, v in self._masks.items()}

    def _transform(self, pred: torch.Tensor) -> torch.Tensor:
        if self.spec.log:
            return torch.log(torch.maximum(pred, self.floor))
        return pred

    def loss(self, solutions: list[torch.Tensor], split: str = "train") -> torch.Tensor:
        """Mean squared (scaled / log) error over the observed cells of ``split``, per start ``(S,)``."""
        count = self.counts[split]
        total = None
        for sol, obs, mask in zip(solutions, self._obs, self._masks[split], strict=True):
            r = (self._transform(sol) - obs) * self.weights
            part = (r * r * mask).sum(dim=(0, 2, 3))
            total = part if total is None else total + part
        if count == 0:
            return torch.full((self.model.n_starts,), float("nan"), dtype=self.model.dtype)
        return total / count

    def per_state_mse(self, solutions: list[torch.Tensor], split: str = "train") -> np.ndarray:
        """Plain MSE in data units per start and state ``(S, n)`` (NaN where nothing is observed)."""
        sq = 0.0
        cnt = 0.0
        with torch.no_grad():
            for k, sol in enumerate(solutions):
                g = self.model.groups[k]
                obs = torch.tensor(np.nan_to_num(g.observed), dtype=sol.dtype)[:, None]
                mask = self._masks[split][k]
                r = (sol - obs) * mask
                sq = sq + (r * r).sum(dim=(0, 2))
                cnt = cnt + mask.sum(dim=(0, 2))
        sq, cnt = np.asarray(sq), np.asarray(cnt)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cnt > 0, sq / np.maximum(cnt, 1), np.nan)
