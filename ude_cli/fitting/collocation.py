"""Collocation (gradient matching): fit the right-hand side to smoothed derivatives of the data.

Each observed state of each experiment is smoothed with a cubic smoothing spline whose
smoothness is chosen by generalised cross-validation (:func:`scipy.interpolate.make_smoothing_spline`),
and differentiated. The loss is then ``mean(((f(t, s(t)) - s'(t)) / spread)^2)`` at the training
times: no ODE is solved, so an iteration costs microseconds to milliseconds instead of a solve and
its backward pass. It is a warm start: the trajectory stages that follow refine the fit against
the data themselves. It needs every state observed (the spline is the state).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .model import UDEModel

#: Fewest observations of a state in an experiment for a smoothing spline.
MIN_SPLINE_POINTS = 5


def applicable(problem) -> str | None:
    """None when collocation can be used, else the reason it cannot."""
    ds = problem.dataset
    if problem.events:
        return "the states jump at given times (model.events), where a spline through the data is wrong"
    if not problem.networks and all(p.fixed for p in problem.parameters.values()):
        # the right-hand side has nothing to learn (only initial or noise values are): no gradient to follow
        return "the right-hand side learns nothing (no network, no learned parameter)"
    missing = [s for s in problem.states if s not in ds.columns]
    if missing:
        return f"state(s) {', '.join(missing)} have no data column"
    for e in ds.experiments:
        for j, s in enumerate(problem.states):
            n = int(np.isfinite(e.values[e.train, j]).sum())
            if n < MIN_SPLINE_POINTS:
                return f"state '{s}' has {n} training observations in experiment '{e.name}' (at least {MIN_SPLINE_POINTS} needed)"
    return None


class CollocationObjective:
    """Squared mismatch between the right-hand side on smoothed states and their derivatives."""

    def __init__(self, model: UDEModel):
        from scipy.interpolate import make_smoothing_spline

        problem = model.problem
        reason = applicable(problem)
        if reason is not None:
            raise ConfigError(f"a collocation stage cannot be used: {reason}", where=f"{problem.config.label}: training.stages",
                              hint="use objective: trajectory")
        self.model = model
        dt = model.dtype
        ds = problem.dataset
        states, rates, times, exp_index = [], [], [], []
        for b, e in enumerate(ds.experiments):
            t = e.t[e.train]
            s_cols, d_cols = [], []
            for j in range(len(problem.states)):
                v = e.values[e.train, j]
                ok = np.isfinite(v)
                spline = make_smoothing_spline(t[ok], v[ok])
                s_cols.append(spline(t))
                d_cols.append(spline.derivative()(t))
            states.append(np.stack(s_cols, -1))
            rates.append(np.stack(d_cols, -1))
            times.append(t)
            exp_index.append(np.full(len(t), b))
        self.states = torch.tensor(np.concatenate(states), dtype=dt)[None]  # (1, N, n)
        self.rates = torch.tensor(np.concatenate(rates), dtype=dt)[None]
        self.times = torch.tensor(np.concatenate(times), dtype=dt)  # (N,)
        spread = self.rates[0].std(dim=0)
        self.weights = 1.0 / torch.where(spread > 0, spread, torch.ones_like(spread))
        # per-experiment constants and parameters become per-point ones
        self.points = torch.as_tensor(np.concatenate(exp_index), dtype=torch.long)

    def loss(self) -> torch.Tensor:
        """Mean squared scaled mismatch, per start ``(S,)``."""
        rhs = self.model.rhs
        n_starts = self.model.n_starts
        y = self.states.expand(n_starts, -1, -1)
        rhs.select(self.points)
        try:
            rhs.bind()
            r = (rhs(self.times, y) - self.rates) * self.weights
        finally:
            rhs.unbind()
            rhs.select(None)
        return (r * r).mean(dim=(1, 2))
