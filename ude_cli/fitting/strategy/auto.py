"""``training.strategy: auto``: single shooting unless it is known to struggle.

Single shooting fails where a wrong network sends the solution far from the data early on and the
gradient of the whole series then says little (long series, oscillations), unless a warm start has put
the network near the data first. The rule, from the training data alone (measured in docs/training.md):

- the collocation warm start runs and no state is sparse: single shooting (it reaches the noise floor on
  8 periods of Lotka-Volterra from the warm start);
- otherwise (no warm start, or a state observed at under a quarter of its experiment's times, whose
  spline misleads the warm start: ``auto`` then skips the warm start): multiple shooting when a directly observed state oscillates (at
  least :data:`MIN_EXTREMA` turning points of its smoothing spline in one experiment: two periods, a
  series long against its time scale); else single shooting.

Curriculum is not chosen automatically: the time-scale measure tried for it (span x RMS rate / spread of
a state's spline, :func:`shape_of`) called one period of Lotka-Volterra (13), theophylline's absorption
(25) and Robertson's kinetics on a log time axis (3263) "long" alike (docs/training.md).
"""

from __future__ import annotations

import numpy as np

#: Turning points of a state's smoothing spline (2 periods) from which a series counts as oscillating.
MIN_EXTREMA = 4
#: Fewest observations of a state in an experiment for its shape to be judged.
MIN_POINTS = 8
#: A state observed at fewer than this fraction of its experiment's times is sparse.
SPARSE = 0.25


def shape_of(problem) -> tuple[int, float, str]:
    """The most turning points and the longest span-to-time-scale ratio of any directly observed state in any
    experiment, and the state and experiment with the most turning points."""
    from scipy.interpolate import make_smoothing_spline

    ds = problem.dataset
    most, longest, where = 0, 0.0, ""
    for e in ds.experiments:
        t_all = e.t[e.train]
        for j, s in enumerate(problem.states):
            if s not in ds.columns:
                continue
            v = e.values[e.train, j]
            ok = np.isfinite(v)
            if ok.sum() < MIN_POINTS:
                continue
            t, y = t_all[ok], v[ok]
            try:
                spline = make_smoothing_spline(t, y)
            except ValueError:
                continue
            grid = np.linspace(t[0], t[-1], 20 * len(t))
            smooth, rate = spline(grid), spline.derivative()(grid)
            spread = float(smooth.std())
            if not spread > 0:
                continue
            # turning points: sign changes of the rate, ignoring wiggles below 1 % of the spread
            big = np.abs(rate) * (grid[1] - grid[0]) * 20 > 0.01 * spread
            signs = np.sign(rate[big])
            turns = int((signs[1:] != signs[:-1]).sum())
            ratio = float((t[-1] - t[0]) * np.sqrt(np.mean(rate * rate)) / spread)
            if turns > most:
                most, where = turns, f"{s} in experiment '{e.name}'" if len(ds.experiments) > 1 else s
            longest = max(longest, ratio)
    return most, longest, where


def sparse_states(problem) -> list[str]:
    """Directly observed states seen at under :data:`SPARSE` of an experiment's (at least 8) times."""
    ds = problem.dataset
    out = []
    for j, s in enumerate(problem.states):
        if s not in ds.columns:
            continue
        for e in ds.experiments:
            n = int(e.train.sum())
            seen = int(np.isfinite(e.values[e.train, j]).sum())
            if n >= MIN_POINTS and seen < SPARSE * n:
                out.append(s)
                break
    return out


def choose(problem, warm_start: bool) -> tuple[str, str]:
    """The strategy ``auto`` picks and why, in words."""
    from ..collocation import applicable

    sparse = sparse_states(problem)
    if warm_start and not sparse:
        return "single_shooting", "the collocation warm start runs"
    if sparse:
        why = (f"{', '.join(sparse)} observed at under {SPARSE:.0%} of the times, so no collocation warm start: its "
               f"spline there misleads it")
    else:
        reason = applicable(problem)
        why = f"no warm start ({reason})" if reason else "no warm start (training.warm_start: none)"
    turns, _, where = shape_of(problem)
    if problem.events:  # a segment's free start would have to know the jumps before it
        return "single_shooting", f"{why}, and the states jump at given times (model.events)"
    if turns >= MIN_EXTREMA:
        return "multiple_shooting", f"{why} and the data oscillate ({turns} turning points in {where})"
    return "single_shooting", f"{why}, but the data do not oscillate ({turns} turning points, {MIN_EXTREMA} needed)"
