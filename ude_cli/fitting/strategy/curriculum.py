"""Curriculum: the stages see a time window that grows in steps, then the whole series.

With ``steps`` windows, the stages fit the first 1/steps of each group's time span, then 2/steps, ...,
then the whole: each window starts from the fit of the one before, so the network meets the long-time
behaviour only once it reproduces the beginning. A window's solution is solved (by torchdiffeq, whatever
the fit's engine) only up to the window's end, and the data term is the fit's own objective on the
training cells inside the window.
"""

from __future__ import annotations

import torch

from ...config import StageSpec, TrainingSpec
from .base import Strategy


class Curriculum(Strategy):
    name = "curriculum"

    def stages(self, training: TrainingSpec, warm_start: bool) -> list[StageSpec]:
        steps = training.curriculum.steps
        out = []
        for i in range(1, steps):
            if i == 1 and not warm_start:
                out.append(StageSpec(optimizer="adam", lr=0.01, iterations=300, window=i / steps))
            out.append(StageSpec(optimizer="lbfgs", iterations=300, tolerance=1e-3, window=round(i / steps, 6)))
        return out + [StageSpec(optimizer="lbfgs", iterations=1000, tolerance=1e-3)]


class WindowObjective:
    """The fit's objective on the first ``fraction`` of each group's time span, per start ``(S,)``."""

    def __init__(self, model, objective, fraction: float):
        self.model, self.objective = model, objective
        self.rows = []
        for g in model.groups:
            end = g.times[0] + fraction * (g.times[-1] - g.times[0])
            self.rows.append(max(2, int((g.times <= end + 1e-12 * max(1.0, abs(end))).sum())))
        self.split = f"window {fraction:g}"
        objective.add_split(self.split, self.rows)

    def loss(self) -> torch.Tensor:
        model = self.model
        y0 = model.initial()
        solutions = []
        for k, (g, m) in enumerate(zip(model.groups, self.rows, strict=True)):
            sol = model.solve_from(k, y0[:, g.experiments, :], model.times[k][:m])
            if m < len(g.times):  # the cells after the window carry weight 0: the last state stands in for them
                sol = torch.cat([sol, sol[-1:].expand(len(g.times) - m, *sol.shape[1:])])
            solutions.append(sol)
        return self.objective.loss(solutions, self.split)
