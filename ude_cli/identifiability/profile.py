"""Profile likelihoods: each value held at a grid of points, everything else re-optimised, network included.

For a target ``theta`` (:class:`~.function.Target`), the profile is ``PL(c) = min L`` over every other learned
value with ``theta = c``: mechanistic, observation, noise and initial values and every network weight. The
profile steps away from the fit on each side (on log scale for a positive value), each point warm-started
from its neighbour (a few LBFGS iterations on the compiled engine), with the step adapted so that the
statistic ``2 (PL - L_min)`` grows by about a tenth of the threshold per step. The ``level`` interval is where
the statistic stays below the threshold (:meth:`~.function.LikelihoodFunction.threshold`), its ends found by
linear interpolation of the statistic's square root (nearly linear in the value) between the last
point inside and the first outside.

A side on which the statistic never reaches the threshold (up to a bound, or over a factor
:data:`MAX_FACTOR` in the value, or within ``max_steps``) is open: the interval is unbounded there, and the
value is reported as *not identifiable* (practically: the data, with the network free, do not pin it).
A profile point better than the fit (the fit was not at its optimum) is reported, and the interval is
computed relative to the best point found.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engines.torchdiffeq import SolverError
from .function import LikelihoodFunction, Target

#: a side is open when the value moves by this factor (a positive value) or this many of its own
#: magnitudes (others) without the statistic reaching the threshold
MAX_FACTOR = 1000.0
#: the statistic's growth per step aimed at, as a fraction of the threshold
TARGET_RISE = 0.15


@dataclass
class Profile:
    name: str
    value: float
    points: list[tuple[float, float]]  # (value, statistic), sorted by value, the fit included
    lower: float  # -inf / nan where open
    upper: float
    lower_open: str  # why the lower side is open ("" when closed)
    upper_open: str
    threshold: float
    threshold_method: str
    seconds: float
    optimisations: int
    better: float = 0.0  # how much lower than the fit the best profile point's L was (0: none)

    @property
    def identifiable(self) -> bool:
        return not (self.lower_open or self.upper_open)

    @property
    def reason(self) -> str:
        sides = [f"below: {self.lower_open}" if self.lower_open else "", f"above: {self.upper_open}"
                 if self.upper_open else ""]
        return "; ".join(s for s in sides if s)

    def to_json(self) -> dict:
        def num(x):
            return None if not np.isfinite(x) else float(x)

        return {"name": self.name, "value": self.value, "lower": num(self.lower), "upper": num(self.upper),
                "lower_open": self.lower_open or None, "upper_open": self.upper_open or None,
                "identifiable": self.identifiable, "threshold": self.threshold,
                "threshold_method": self.threshold_method, "seconds": round(self.seconds, 3),
                "optimisations": self.optimisations, "better_than_fit": self.better or None,
                "points": [[float(v), float(s)] for v, s in self.points]}


@dataclass
class ProfileSettings:
    max_steps: int = 40
    iterations: int = 200  # LBFGS iterations per point at most
    initial_step: dict[str, float] = field(default_factory=dict)  # target -> step on the stepping scale


class _HeldObjective:
    """The fit's objective with the profiled-out noise parameters held at the model's values (the profile of
    a sigma that the objective otherwise profiles out in closed form)."""

    def __init__(self, f: LikelihoodFunction):
        self._f = f
        self._objective = f.objective

    def loss(self, solutions, split: str = "train"):
        values = self._f.model.noise.values()
        nll, _ = self._objective._likelihood(solutions, split, {n: values[n][:, 0] for n in self._f.held_noise})
        return nll / self._objective.counts[split]

    def __getattr__(self, name):
        return getattr(self._objective, name)


def _scale(t: Target, value: float) -> float:
    return math.log(value) if t.log_scale else value


def _unscale(t: Target, s: float) -> float:
    return math.exp(s) if t.log_scale else s


def profile_target(f: LikelihoodFunction, target: Target, *, threshold: float, threshold_method: str,
                   settings: ProfileSettings, step: float | None = None, monitor=None,
                   edges: Sequence[Target] = ()) -> Profile:
    """The profile of one target (the model is left at the fit).

    ``edges``: values the fit drove to the edge of their range (:func:`edge_targets`), where their gradient
    vanishes and a warm-started re-optimisation cannot move them back: at every point each is also restarted
    from its start value, and the better of the two re-optimisations is kept."""
    model = f.model
    started = time.perf_counter()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    f.held_noise = {target.name} if target.profiled_noise else set()
    objective = _HeldObjective(f) if f.held_noise else f.objective
    mask = torch.ones_like(target.tensor)
    mask[target.index] = 0.0
    hook = target.tensor.register_hook(lambda g: g * mask)
    others = bool(mask.sum() > 0) or any(p.requires_grad for p in model.parameters() if p is not target.tensor)
    free: list = [p for p in model.parameters() if p.requires_grad]
    optimisations = 0
    value0 = target.value
    L0 = f.value()
    s0 = _scale(target, value0)
    if step is None or not np.isfinite(step) or step <= 0:
        step = 0.05 if target.log_scale else 0.05 * max(abs(value0), 1e-3)
    points: list[tuple[float, float]] = [(value0, 0.0)]
    opens = {}
    raw_L: list[tuple[float, float]] = [(value0, L0)]
    try:
        for direction in (-1, 1):
            model.load_state_dict(base)
            s, h, last = s0, step, 0.0
            why = ""
            for _ in range(settings.max_steps):
                s_new = s + direction * h
                v_new = _unscale(target, s_new)
                hit = _bound_hit(target, v_new)
                if hit is not None:
                    v_new, s_new = hit, _scale(target, hit)
                target.set_u(target.u_of(v_new))
                if others:
                    try:
                        reoptimise(f, objective, free, settings.iterations)
                        optimisations += 1
                        optimisations += _restart_edges(f, objective, free, settings.iterations,
                                                        [e for e in edges if e is not target])
                    except SolverError as exc:  # a point the solver cannot simulate ends the side there
                        why = f"the model cannot be solved near {v_new:.4g}: {exc.message}"
                        break
                L = f.value()
                stat = 2.0 * (L - L0)
                if not np.isfinite(stat):
                    why = f"the likelihood is not finite at {v_new:.4g}"
                    break
                raw_L.append((v_new, L))
                points.append((v_new, stat))
                if stat > threshold:
                    break
                if hit is not None:
                    why = f"reaches its bound {hit:g} inside the interval"
                    break
                if _too_far(target, value0, v_new):
                    why = f"the profile stays below the threshold from {value0:.4g} to {v_new:.4g}"
                    break
                rise = stat - last
                if rise > 2 * TARGET_RISE * threshold:
                    h /= 2
                elif rise < 0.5 * TARGET_RISE * threshold:
                    h *= 1.6
                s, last = s_new, stat
            else:
                why = f"the profile stays below the threshold after {settings.max_steps} steps (to {v_new:.4g})"
            opens[direction] = why
    finally:
        hook.remove()
        f.held_noise = set()
        model.load_state_dict(base)
    # relative to the best point found (a profile point may beat the fit)
    L_best = min(L for _, L in raw_L)
    better = max(L0 - L_best, 0.0)
    pts = sorted((v, 2.0 * (L - L_best)) for v, L in raw_L)
    lower, upper = _ends(pts, value0, threshold, opens)
    if monitor is not None:
        monitor.message(f"profile of {target.name}: {len(pts)} points in {time.perf_counter() - started:.1f} s")
    return Profile(target.name, value0, pts, lower, upper, opens[-1], opens[1], threshold, threshold_method,
                   time.perf_counter() - started, optimisations, better if better > 1e-6 * max(abs(L0), 1) else 0.0)


def _restart_edges(f: LikelihoodFunction, objective, free: list, iterations: int, edges: Sequence[Target]) -> int:
    """Re-optimise once more with each edge value restarted from its start; keep it where the objective is lower
    (else go back to the warm-started point). Returns the number of re-optimisations run."""
    if not edges:
        return 0
    model = f.model
    kept, L_kept = {k: v.detach().clone() for k, v in model.state_dict().items()}, f.value()
    for e in edges:
        assert e.spec is not None  # edge_targets keeps values with a start
        e.set_u(e.u_of(e.spec.init))
    try:
        reoptimise(f, objective, free, iterations)
        L = f.value()
    except SolverError:
        L = math.inf
    if not L_kept > L:
        model.load_state_dict(kept)
    return 1


#: a value kept positive that ends this many times below its start has run to the edge of its range (0)
EDGE_FACTOR = 1e6


def edge_targets(ts: Sequence[Target]) -> list[Target]:
    """The values kept positive that the fit drove towards 0, :data:`EDGE_FACTOR` times below their start: at the
    edge of their log scale, where the gradient vanishes."""
    return [t for t in ts if t.positive and t.spec is not None and t.spec.init > 0
            and 0 < t.value < t.spec.init / EDGE_FACTOR]


#: a re-optimisation ends when LBFGS_CHUNK iterations lower the objective by less than this fraction, or
#: lower L by less than L_TOL (a statistic of 2 * L_TOL: far below the threshold's scale of 1 to 4)
REL_TOL = 1e-8
L_TOL = 1e-3
LBFGS_CHUNK = 10


def reoptimise(f: LikelihoodFunction, objective, free: list, iterations: int) -> None:
    """Minimise the fit's objective over ``free`` (a held value's gradient is masked by a hook) with LBFGS,
    from where the model is: the warm start from the neighbouring profile point. Keeps the best point seen."""
    from ..fitting.flat_parameters import FlatParameters

    model = f.model
    flat = FlatParameters({str(i): p for i, p in enumerate(free)}, 1)
    opt = torch.optim.LBFGS([flat.parameter], lr=1.0, max_iter=LBFGS_CHUNK, history_size=10,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)
    wd = f.weight_decay if model.network_parameters() else 0.0
    best_value, best = math.inf, flat.parameter.detach().clone()

    def closure():
        nonlocal best_value
        flat.zero_grad()
        data = objective.loss(model(), "train")
        total = (data + wd * model.weight_penalty() if wd else data).sum()
        value = float(total.detach())
        if math.isfinite(value) and value < best_value:
            best_value = value
            best.copy_(flat.parameter.detach())
        total.backward()
        return total

    try:
        done, previous = 0, math.inf
        while done < iterations:
            try:
                opt.step(closure)
            except SolverError:
                if not math.isfinite(best_value):
                    raise
                break
            done += LBFGS_CHUNK
            if not previous - best_value > max(REL_TOL * abs(best_value), f.objective_change(L_TOL, best_value)):
                break
            previous = best_value
        with torch.no_grad():
            flat.parameter.copy_(best)
    finally:
        flat.release()


def _bound_hit(t: Target, value: float) -> float | None:
    """The value just inside a bound when ``value`` is at or past it, else None."""
    lo = t.lower if t.lower is not None else (0.0 if t.positive else None)
    hi = t.upper
    span = (hi - lo) if lo is not None and hi is not None else max(abs(value), 1.0)
    eps = 1e-6 * span
    if lo is not None and value <= lo + eps:
        return None if t.positive and lo == 0.0 else lo + eps  # log steps never reach 0
    if hi is not None and value >= hi - eps:
        return hi - eps
    return None


def _too_far(t: Target, v0: float, v: float) -> bool:
    if t.log_scale:
        return v > v0 * MAX_FACTOR or v < v0 / MAX_FACTOR
    return abs(v - v0) > MAX_FACTOR * max(abs(v0), 1e-3)


def _ends(points: list[tuple[float, float]], value: float, threshold: float, opens: dict[int, str]
          ) -> tuple[float, float]:
    """Where the statistic crosses the threshold on each side of ``value`` (linear interpolation), -inf/inf
    on an open side."""
    below = [p for p in points if p[0] <= value]
    above = [p for p in points if p[0] >= value]

    root = math.sqrt(threshold)

    def cross(side: list[tuple[float, float]]) -> float:
        # on the root of the statistic, nearly linear in the value near the fit (exactly for a linear model)
        for (v1, s1), (v2, s2) in zip(side, side[1:], strict=False):
            r1, r2 = math.sqrt(max(s1, 0.0)), math.sqrt(max(s2, 0.0))
            if r1 <= root < r2 or r2 <= root < r1:
                return v1 + (root - r1) * (v2 - v1) / (r2 - r1)
        return math.nan

    lo = -math.inf if opens.get(-1) else cross(sorted(below, key=lambda p: -p[0]))
    hi = math.inf if opens.get(1) else cross(sorted(above, key=lambda p: p[0]))
    return lo, hi
