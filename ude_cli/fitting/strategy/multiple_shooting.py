"""Multiple shooting: the series cut into segments, each solved from a free initial state.

Each group's time grid is cut at data times into segments; the first starts from the model's initial
states, every later one from a state that is a free parameter of its own (per start, experiment and
state). The objective is the fit's own data term (:class:`~ude_cli.likelihood.objective.Objective`, the
likelihood with a noise model) on the segments' solutions, each data time predicted by the segment it
lies in, plus ``continuity`` times the mean squared gap between a segment's end and the next one's start
(each state's gap over its spread). A long or oscillating series is then many short ones: a wrong
network cannot send the solution far from the data before the next segment starts again near it.

The segment states start from the data (a directly observed state: its observations interpolated
linearly in time, per experiment) or, for a state without observations, from a single-shooting pass
(the warm start's trajectory when one ran, else the initial values'). The stages after these run on the
whole trajectory, where the gaps are gone. The segments are solved by torchdiffeq, whatever the fit's
engine (the compiled engine solves whole data grids only); the stages on the whole trajectory use the
fit's engine.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...config import StageSpec, TrainingSpec
from .base import Strategy

#: Data times per segment when the config gives neither segments nor segment_length, and most segments then.
POINTS_PER_SEGMENT = 8
MAX_AUTO_SEGMENTS = 20


class MultipleShooting(Strategy):
    name = "multiple_shooting"

    def stages(self, training: TrainingSpec, warm_start: bool) -> list[StageSpec]:
        shooting = [StageSpec(optimizer="lbfgs", objective="multiple_shooting", iterations=1000, tolerance=1e-3)]
        if not warm_start:
            shooting.insert(0, StageSpec(optimizer="adam", lr=0.01, objective="multiple_shooting", iterations=300))
        return shooting + [StageSpec(optimizer="lbfgs", iterations=1000, tolerance=1e-3)]


def boundaries(times: np.ndarray, training: TrainingSpec) -> np.ndarray:
    """Indices into ``times`` where segments start and end: ``[0, ..., len(times) - 1]`` (two entries: one
    segment)."""
    spec = training.multiple_shooting
    n = len(times)
    span = float(times[-1] - times[0])
    if spec.segments is not None:
        k = spec.segments
    elif spec.segment_length is not None:
        k = max(1, int(round(span / spec.segment_length)))
    else:
        k = min(MAX_AUTO_SEGMENTS, max(1, int(round((n - 1) / POINTS_PER_SEGMENT))))
    k = max(1, min(k, n - 1))
    targets = times[0] + span * np.arange(1, k) / k
    inner: np.ndarray = (np.unique(np.clip(np.abs(times[:, None] - targets[None, :]).argmin(axis=0), 1, n - 2))
                         if k > 1 else np.zeros(0, dtype=int))
    return np.concatenate([[0], np.asarray(inner, dtype=int), [n - 1]]).astype(int)


class ShootingObjective:
    """The multiple-shooting objective of a model, per start ``(S,)``, and its segment states.

    Arguments:
        model: the :class:`~ude_cli.fitting.model.UDEModel`.
        objective: the fit's data term.
        training: ``training.multiple_shooting`` gives the segments and the continuity weight.
    """

    def __init__(self, model, objective, training: TrainingSpec):
        if model.problem.events:  # (resolve refuses the config's; this, a TrainingSpec given to train() directly)
            from ...errors import ConfigError

            raise ConfigError("multiple shooting cannot be used with jumps of states at given times (model.events)",
                              where=f"{model.problem.config.label}: training", hint="use single shooting or a "
                              "curriculum (training.strategy)")
        self.model, self.objective = model, objective
        self.continuity = training.multiple_shooting.continuity
        self.bounds = [boundaries(g.times, training) for g in model.groups]
        n = len(model.problem.states)
        #: segment k's free starting states, (S, segments - 1, Bg, n), under the name shooting.<group>
        self.states: dict[str, nn.Parameter] = {}
        for k, (g, b) in enumerate(zip(model.groups, self.bounds, strict=True)):
            if len(b) > 2:
                self.states[f"shooting.{k}"] = nn.Parameter(
                    torch.zeros(model.n_starts, len(b) - 2, len(g.experiments), n, dtype=model.dtype))
        self.scale = torch.ones(n, dtype=model.dtype)
        self.gaps = sum(int(p[0].numel()) for p in self.states.values())  # per start
        problem = model.problem
        #: an autonomous system (no t in an equation or a network's inputs) solves all segments at once
        self.autonomous = (not any("t" in e.names for e in problem.equations.values())
                           and not any("t" in spec.inputs for spec in problem.networks.values()))
        #: per group: the union of the segments' times shifted to start at 0, and each segment's rows in it
        self.shifted: list[tuple[torch.Tensor, np.ndarray, list[np.ndarray]]] = []
        for g, b in zip(model.groups, self.bounds, strict=True):
            pieces = [g.times[b[j]:b[j + 1] + 1] - g.times[b[j]] for j in range(len(b) - 1)]
            grid = np.unique(np.concatenate(pieces))
            rows = [np.searchsorted(grid, piece) for piece in pieces]
            batch = np.tile(np.asarray(g.experiments), len(pieces))  # segment-major, as the stacked starts
            self.shifted.append((torch.tensor(grid, dtype=model.dtype), batch, rows))

    @property
    def segments(self) -> list[int]:
        """Segments per group."""
        return [len(b) - 1 for b in self.bounds]

    def initialise(self) -> None:
        """The segment states from the data (observed states, interpolated) or a single-shooting pass from the
        current parameters (other states; where that fails or is not finite: the initial values)."""
        from ...engines.torchdiffeq import SolverError

        model = self.model
        problem = model.problem
        ds = problem.dataset
        with torch.no_grad():
            try:
                trajectory = [s.detach().cpu().numpy() for s in model()]
            except SolverError:
                trajectory = None
            initial = model.initial().detach().cpu().numpy()  # (S, B, n)
        spread = np.ones(len(problem.states))
        _, data_spread = ds.state_stats()
        for j, s in enumerate(problem.states):
            if s in ds.columns:
                spread[j] = data_spread[j]
            elif trajectory is not None:
                values = np.concatenate([x[..., j].ravel() for x in trajectory])
                values = values[np.isfinite(values)]
                size = float(values.std()) if values.size else 0.0
                size = size if size > 0 else (float(np.abs(values).mean()) if values.size else 0.0)
                spread[j] = size if size > 0 and math.isfinite(size) else 1.0
        self.scale = torch.tensor(spread, dtype=model.dtype)
        for k, (g, b) in enumerate(zip(model.groups, self.bounds, strict=True)):
            name = f"shooting.{k}"
            if name not in self.states:
                continue
            at = g.times[b[1:-1]]
            value = np.empty(tuple(self.states[name].shape))  # (S, segments - 1, Bg, n)
            for i, e_index in enumerate(g.experiments):
                e = ds.experiments[e_index]
                for j, s in enumerate(problem.states):
                    fallback = initial[:, e_index, j][:, None]
                    if trajectory is not None:
                        guess = trajectory[k][b[1:-1], :, i, j].T  # (S, segments - 1)
                        guess = np.where(np.isfinite(guess), guess, fallback)
                    else:
                        guess = np.broadcast_to(fallback, value.shape[:2])
                    v = e.values[e.train, j] if s in ds.columns else np.array([])
                    ok = np.isfinite(v)
                    if ok.any():
                        guess = np.broadcast_to(np.interp(at, e.t[e.train][ok], v[ok]), value.shape[:2])
                    value[:, :, i, j] = guess
            with torch.no_grad():
                self.states[name].copy_(torch.tensor(value, dtype=model.dtype))

    def loss(self) -> torch.Tensor:
        """The data term on the segments' solutions plus the continuity penalty, per start ``(S,)``."""
        data, gap = self.parts()
        return data + self.continuity * gap if self.gaps else data

    def parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The data term on the segments' solutions and the mean squared scaled gap at the boundaries, per start."""
        model = self.model
        solutions = []
        gap = torch.zeros(model.n_starts, dtype=model.dtype)
        y0_all = model.initial()
        for k, (g, b) in enumerate(zip(model.groups, self.bounds, strict=True)):
            times = model.times[k]
            starts = self.states.get(f"shooting.{k}")
            y0 = y0_all[:, g.experiments, :]
            if self.autonomous and starts is not None:
                sol, d = self._all_at_once(k, y0, starts)
                solutions.append(sol)
                gap = gap + d
                continue
            pieces = []
            for j in range(len(b) - 1):
                sol = model.solve_from(k, y0, times[b[j]:b[j + 1] + 1])
                if j == len(b) - 2:
                    pieces.append(sol)
                    break
                assert starts is not None  # more than one segment: the group has segment states
                y0 = starts[:, j]
                pieces.append(sol[:-1])  # the boundary time belongs to the next segment (its start)
                d = (sol[-1] - y0) / self.scale
                gap = gap + (d * d).sum(dim=(1, 2))
            solutions.append(torch.cat(pieces) if len(pieces) > 1 else pieces[0])
        return self.objective.loss(solutions), gap / max(self.gaps, 1)

    def _all_at_once(self, k: int, y0: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Group ``k``'s segments as one batch on their shifted times (an autonomous system): the solution on the
        group's grid ``(T, S, Bg, n)`` and the sum of squared scaled gaps per start."""
        model = self.model
        grid, batch, rows = self.shifted[k]
        S, Bg, n = y0.shape
        segments = len(rows)
        stacked = torch.cat([y0[:, None], starts], 1).reshape(S, segments * Bg, n)
        compiled = model.compiled if model.engine == "compiled" else None
        if compiled is not None and compiled.method == "dopri5":
            sol = model.solve_segments(stacked, batch.tolist(), grid.numpy())
        else:
            sol = model.solve_from(k, stacked, grid, torch.as_tensor(batch, dtype=torch.long))
        sol = sol.reshape(len(grid), S, segments, Bg, n)
        pieces = [sol[rows[j][:-1], :, j] for j in range(segments - 1)] + [sol[rows[-1], :, segments - 1]]
        ends = torch.stack([sol[rows[j][-1], :, j] for j in range(segments - 1)], 1)  # (S, segments - 1, Bg, n)
        d = (ends - starts) / self.scale
        return torch.cat(pieces), (d * d).sum(dim=(1, 2, 3))
