"""Simulating fitted models beyond the data, and describing what they do there.

The check the issue asks for after a symbolic recovery: does the recovered model stay bounded far
beyond the data (the UDE paper's extrapolation test runs Lotka–Volterra from t = 5 to t = 50), and
when it oscillates, with what period and amplitude.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Points of an extrapolated trajectory per unit of its time span, at least this many in all.
MIN_POINTS = 1000


@dataclass
class Oscillation:
    """Late-time behaviour of one state: its range and, when it oscillates, its period.

    Attributes:
        amplitude: max - min over the second half of the window.
        period: mean time between successive maxima there (None with fewer than 3 maxima, or when
            the state has settled).
        mean: mean over the second half of the window.
        settled: the late-time range is under 1/1000 of the whole window's: a steady state, not a
            cycle (ripples of a decayed transient have "maxima" too).
    """

    amplitude: float
    period: float | None
    mean: float
    settled: bool = False

    def as_dict(self) -> dict:
        return {"amplitude": self.amplitude, "period": self.period, "mean": self.mean, "settled": self.settled}


def late_time_text(oscillations: dict[str, dict]) -> str:
    """What the states do late in a bounded extrapolation, in words: ``"settles to a steady state
    (x ≈ 0.27, y ≈ 0.49)"`` or ``"x: period 7.6, amplitude 1.8"`` ("" when neither applies).
    ``oscillations``: state -> :meth:`Oscillation.as_dict`."""
    if oscillations and all(o.get("settled") for o in oscillations.values()):
        return "settles to a steady state (" + ", ".join(f"{s} ≈ {o['mean']:.4g}" for s, o in oscillations.items()) + ")"
    return ", ".join(f"{s}: period {o['period']:.4g}, amplitude {o['amplitude']:.4g}"
                     for s, o in oscillations.items() if o.get("period") is not None)


def oscillation(t: np.ndarray, y: np.ndarray) -> Oscillation:
    """Amplitude, period and mean of a sampled signal over the second half of its window.

    Maxima are located to sub-sample accuracy by a parabola through the three samples around
    each; only maxima above the signal's midline count (noise on a plateau is not a cycle).
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    half = t >= t[0] + (t[-1] - t[0]) / 2
    th, yh = t[half], y[half]
    if yh.size < 5 or not np.all(np.isfinite(yh)):
        return Oscillation(float("nan"), None, float("nan"))
    lo, hi = float(yh.min()), float(yh.max())
    mid = (lo + hi) / 2
    peaks = []
    for i in range(1, len(yh) - 1):
        if yh[i] > yh[i - 1] and yh[i] >= yh[i + 1] and yh[i] > mid:
            a, b, c = yh[i - 1], yh[i], yh[i + 1]
            denom = a - 2 * b + c
            shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
            peaks.append(th[i] + shift * (th[i + 1] - th[i]))
    whole = float(np.nanmax(y) - np.nanmin(y)) if np.isfinite(y).any() else 0.0
    settled = hi - lo <= 1e-3 * whole or hi - lo <= 1e-9 * max(abs(hi), 1.0)
    period = float(np.mean(np.diff(peaks))) if len(peaks) >= 3 and not settled else None
    return Oscillation(amplitude=hi - lo, period=period, mean=float(yh.mean()), settled=settled)


@dataclass
class Extrapolation:
    """A model simulated from each experiment's start to a horizon.

    Attributes:
        name: which model ("recovered", "mechanistic only", "UDE").
        horizon: the end time.
        trajectories: per experiment, ``(t, y)`` with ``y`` of shape ``(T, n)`` (NaN after a failure).
        bounded: every solve reached the horizon with finite states inside the bound.
        message: what went wrong, when something did.
        oscillations: per experiment, state -> :class:`Oscillation`.
        observables: per experiment, each observable given by a formula along the trajectory (name -> ``(T,)``).
    """

    name: str
    horizon: float
    trajectories: list[tuple[np.ndarray, np.ndarray]]
    bounded: bool
    message: str = ""
    oscillations: list[dict[str, Oscillation]] = field(default_factory=list)
    observables: list[dict[str, np.ndarray]] = field(default_factory=list)

    def summary(self, states: list[str]) -> dict:
        return {"horizon": self.horizon, "bounded": self.bounded, "message": self.message,
                "oscillations": [{s: o.as_dict() for s, o in osc.items()} for osc in self.oscillations]}


def default_horizon(problem, factor: float = 10.0) -> float:
    """``t0 + factor × (last time - t0)`` of the longest experiment (t = 50 for the LV sample)."""
    ends = []
    for e in problem.dataset.experiments:
        t0 = problem.t0 if problem.t0 is not None else float(e.t[0])
        ends.append(t0 + factor * (float(e.t[-1]) - t0))
    return max(ends)


#: A trajectory diverges where a state leaves this many times the data's largest magnitude (or stops being
#: finite): the one definition behind every "diverges at t = ..." (ude discover, ude predict, the figures).
RUNAWAY_FACTOR = 1e3


def runaway_bound(problem) -> float:
    """``RUNAWAY_FACTOR`` times the largest magnitude the problem gives: of an observation (a state's or an
    observable's) or of a state's initial value given as a number (an unobserved susceptible population of 10000
    beside case counts of 100 does not diverge at t0); 1 without any."""
    values = [np.abs(a[np.isfinite(a)]) for e in problem.dataset.experiments for a in (e.values, e.observations)]
    values.append(np.abs(np.array([float(i.value) for i in problem.initial.values()
                                   if i.source == "value" and i.value is not None and np.isfinite(i.value)])))
    return RUNAWAY_FACTOR * max([float(v.max()) for v in values if v.size] or [1.0])


def divergence_time(t: np.ndarray, y: np.ndarray, bound: float) -> float | None:
    """The first time any state of ``y`` (``(T,)`` or ``(T, n)`` on the grid ``t``) exceeds ``bound`` in
    magnitude or is not finite; None when it never does. Between the last grid point inside and the first
    outside, the crossing is found by interpolating log|y| linearly (exact for exponential growth), so
    that grids of different spacing give the same time to a few digits."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float).reshape(len(t), -1)
    keep = np.isfinite(t)  # a NaN time separates experiments drawn as one line
    t, y = t[keep], y[keep]
    with np.errstate(invalid="ignore", over="ignore"):
        size = np.where(np.isfinite(y), np.abs(y), np.inf).max(axis=1) if y.size else np.zeros(len(t))
    out = size > bound
    if not out.any():
        return None
    k = int(np.argmax(out))
    if k == 0:
        return float(t[0])
    m0, m1 = float(size[k - 1]), float(size[k])
    if not np.isfinite(m1) or m0 <= 0:
        return float(t[k - 1] + 0.5 * (t[k] - t[k - 1]))  # the solve stopped between them: the middle
    frac = (np.log(bound) - np.log(m0)) / (np.log(m1) - np.log(m0))
    return float(t[k - 1] + frac * (t[k] - t[k - 1]))


def time_text(t: float) -> str:
    """A time as the messages and legends print it: 3 significant digits, more for large times (1903, not 1.9e+03)."""
    digits = max(3, int(np.log10(abs(t))) + 2) if t else 3
    return f"{t:.{digits}g}"


def grid(t0: float, horizon: float, span: float) -> np.ndarray:
    n = max(MIN_POINTS, int(200 * (horizon - t0) / max(span, 1e-12)))
    return np.linspace(t0, horizon, min(n, 20_000))


def extrapolate_system(system, values, initial: np.ndarray, horizon: float, name: str) -> Extrapolation:
    """Simulate an :class:`~ude_cli.discovery.refit.OdeSystem` from each experiment's start to ``horizon``."""
    trajectories, messages = [], []
    span = system.problem.dataset.time_span
    for b, e in enumerate(system.experiments):
        times = grid(system.t0[b], horizon, span)
        sim = system.simulate(b, values, times, y0=initial[b])
        trajectories.append((times, sim.y))
        if not sim.ok:
            messages.append(sim.message if len(system.experiments) == 1 else f"experiment '{e.name}': {sim.message}")
    ext = Extrapolation(name=name, horizon=horizon, trajectories=trajectories, bounded=not messages,
                        message="; ".join(messages))
    ext.oscillations = [_oscillations(system.states, t, y) for t, y in trajectories]
    return ext


def dense_as_far_as_possible(model, n_points: int, until: float, t0: float, data_end: float | None = None):
    """``model.dense(n_points, until)``; when the solver fails (with the run's own
    ``solver.max_steps``: a learned field that runs away beyond the data fails fast), the same to
    the end of the data (``data_end``), so that the reader still sees the fit, with the failure said.

    Returns:
        ``(dense, reached, message)``: the trajectories (None when even the data window fails),
        the end time reached, and the solver's message for ``until`` ("" when it succeeded).
    """
    from ..errors import UdeError

    message = ""
    for end in (until, data_end):
        if end is None or (message and end >= until):
            continue
        try:
            return model.dense(n_points, until=end), end, message
        except UdeError as exc:
            message = message or f"cannot be simulated to t = {until:g}: {exc.message}"
    return None, t0, message


def extrapolate_model(problem, model, horizon: float, start: int = 0, name: str = "UDE") -> Extrapolation:
    """Simulate a fitted UDE model (torch) to ``horizon``; a solver failure is reported, not raised."""
    span = problem.dataset.time_span
    t0 = min(problem.t0 if problem.t0 is not None else float(e.t[0]) for e in problem.dataset.experiments)
    n = len(grid(t0, horizon, span))
    data_end = max(float(e.t[-1]) for e in problem.dataset.experiments)
    dense, reached, failure = dense_as_far_as_possible(model, n, horizon, t0, data_end)
    if dense is None:
        return Extrapolation(name=name, horizon=horizon, trajectories=[], bounded=False, message=failure)
    trajectories = [(t, y[:, start, :]) for t, y in dense]
    bound = runaway_bound(problem)
    times = [d for d in (divergence_time(t, y, bound) for t, y in trajectories) if d is not None]
    message = failure
    if times:
        message = (f"the solution diverges (leaves {RUNAWAY_FACTOR:g} times the data's largest value, {bound:.3g}) "
                   f"at t = {time_text(min(times))}")
    inside = not times and not failure
    ext = Extrapolation(name=name, horizon=horizon, trajectories=trajectories, bounded=inside, message=message)
    ext.oscillations = [_oscillations(problem.states, t, y) for t, y in trajectories]
    return ext


def _oscillations(states, t, y) -> dict[str, Oscillation]:
    return {s: oscillation(t, y[:, j]) for j, s in enumerate(states)}
