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
#: a point past the threshold whose statistic rose by more than the threshold in one step (or whose
#: re-optimisation did not finish) is retried, then the step is cut by 4, at most this many times on a side
MAX_HALVINGS = 4
#: a retried point's re-optimisation may take this many times the iterations of the others
RETRY_ITERATIONS = 5


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
    #: why a closed interval still says the value is not identifiable (too wide, or the profile flat over it)
    flat: str = ""
    #: points whose re-optimisation jumped past the threshold and were retried with a smaller step (value, statistic)
    rejected: list[tuple[float, float]] = field(default_factory=list)
    log_scale: bool = False

    @property
    def identifiable(self) -> bool:
        return not (self.lower_open or self.upper_open or self.flat)

    @property
    def reason(self) -> str:
        sides = [f"below: {self.lower_open}" if self.lower_open else "", f"above: {self.upper_open}"
                 if self.upper_open else "", self.flat]
        return "; ".join(s for s in sides if s)

    def to_json(self) -> dict:
        def num(x):
            return None if not np.isfinite(x) else float(x)

        return {"name": self.name, "value": self.value, "lower": num(self.lower), "upper": num(self.upper),
                "lower_open": self.lower_open or None, "upper_open": self.upper_open or None,
                "identifiable": self.identifiable, "threshold": self.threshold,
                "threshold_method": self.threshold_method, "seconds": round(self.seconds, 3),
                "optimisations": self.optimisations, "better_than_fit": self.better or None,
                "flat": self.flat or None, "log_scale": self.log_scale,
                "points": [[float(v), float(s)] for v, s in self.points],
                "rejected": [[float(v), float(s)] for v, s in self.rejected]}


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
    rejected: list[tuple[float, float]] = []
    far = _far(target, value0)
    try:
        for direction in (-1, 1):
            model.load_state_dict(base)
            s, h, last = s0, min(step, far / 4), 0.0
            why = ""
            # the optima at the last two accepted points (the warm start, and the extrapolation of a retry)
            here = {k: v.detach().clone() for k, v in model.state_dict().items()}
            before: tuple[dict, float] | None = None  # (optimum, position on the stepping scale)
            halvings = 0
            for _ in range(settings.max_steps):
                s_new = s + direction * h
                if abs(s_new - s0) > far:  # land on the limit: the side is open there if still below the threshold
                    s_new = s0 + direction * far * (1 + 1e-9)
                v_new = _unscale(target, s_new)
                hit = _bound_hit(target, v_new)
                if hit is not None:
                    v_new, s_new = hit, _scale(target, hit)
                target.set_u(target.u_of(v_new))
                converged = True
                if others:
                    try:
                        converged = reoptimise(f, objective, free, settings.iterations)
                        optimisations += 1
                        optimisations += _restart_edges(f, objective, free, settings.iterations,
                                                        [e for e in edges if e is not target])
                    except SolverError as exc:  # a point the solver cannot simulate ends the side there
                        why = f"the model cannot be solved near {v_new:.4g}: {exc.message}"
                        break
                L = f.value()
                stat = 2.0 * (L - L0)
                if others and np.isfinite(stat) and stat > threshold and (stat - last > threshold or not converged):
                    # a point that would close the interval after a jump (or an unfinished re-optimisation): the
                    # inner fit may have failed from a warm start far from the optimum (found profiling V of an
                    # oral PK model where only V/F is determined): retry it, then a smaller step
                    L, n = _retry(f, objective, free, settings.iterations, target, v_new, here, before, s, s_new)
                    optimisations += n
                    stat = 2.0 * (L - L0)
                    if stat > threshold and stat - last > threshold:
                        rejected.append((v_new, stat))
                        if halvings < MAX_HALVINGS:
                            halvings += 1
                            h /= 4
                            model.load_state_dict(here)
                            continue
                        why = (f"the statistic jumps from {last:.3g} to {stat:.3g} between {_unscale(target, s):.4g} "
                               f"and {v_new:.4g}, and still does after {MAX_HALVINGS} smaller steps and restarts of "
                               "the re-optimisation: the inner fit fails there (or the likelihood is discontinuous); "
                               "the end of the interval is not known")
                        break
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
                h = min(h, far / 4)
                before, here = (here, s), {k: v.detach().clone() for k, v in model.state_dict().items()}
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
                   time.perf_counter() - started, optimisations, better if better > 1e-6 * max(abs(L0), 1) else 0.0,
                   _flat(target, pts, value0, lower, upper, threshold), rejected, target.log_scale)


#: a closed profile interval is flat when the statistic stays below FLAT_FRACTION of the threshold over at least
#: FLAT_SHARE of it (on the stepping scale): a quadratic profile does over a tenth of it only (|x| < 0.1 w)
FLAT_FRACTION = 0.01
FLAT_SHARE = 0.5


def _flat(t: Target, points: list[tuple[float, float]], value: float, lower: float, upper: float,
          threshold: float) -> str:
    """Why a closed interval does not identify the value ("" when it does): it spans more than Wald's
    :data:`~.hessian.WIDE_FACTOR` (a positive value: upper/lower; others: half-width/|value|), or the profile is flat
    over most of it, so that its ends are where the re-optimisation ran into something, not where the data say."""
    from .hessian import WIDE_FACTOR, _too_wide

    if not (np.isfinite(lower) and np.isfinite(upper)):
        return ""
    if _too_wide(t.log_scale and lower > 0, value, lower, upper):
        return (f"its interval [{lower:.4g}, {upper:.4g}] spans more than a factor {WIDE_FACTOR:g} (or {WIDE_FACTOR:g} "
                "times its size): the data barely constrain it")
    inside = [(_scale(t, v), s) for v, s in points if lower <= v <= upper]
    low = [x for x, s in inside if s <= FLAT_FRACTION * threshold]
    width = _scale(t, upper) - _scale(t, lower) if not t.log_scale or lower > 0 else math.inf
    if len(low) >= 3 and max(low) - min(low) >= FLAT_SHARE * width:
        a, b = _unscale(t, min(low)), _unscale(t, max(low))
        return (f"the profile is flat (2 (PL - L_min) < {FLAT_FRACTION * threshold:.3g}) from {a:.4g} to {b:.4g}, over "
                f"most of its interval: the data determine a combination of it with other values, not it")
    return ""


def _retry(f: LikelihoodFunction, objective, free: list, iterations: int, target: Target, value: float,
           here: dict, before: tuple[dict, float] | None, s: float, s_new: float) -> tuple[float, int]:
    """Re-optimise a suspicious profile point at ``value`` again, from the neighbour's optimum ``here`` with
    :data:`RETRY_ITERATIONS` times the iterations, and from the straight-line extrapolation (on the unconstrained
    scale) of the last two optima ``before`` and ``here`` to ``s_new``, which follows a ridge along which the
    others change with the held value (log F with log V where only V/F is determined). Leaves the model at the
    best of these and the point as it was; returns its ``L`` and the number of re-optimisations run."""
    model = f.model
    best, L_best = {k: v.detach().clone() for k, v in model.state_dict().items()}, f.value()
    ratios: list[float | None] = [None]
    previous = before[0] if before is not None else {}
    if before is not None and before[1] != s:
        ratios.append((s_new - s) / (s - before[1]))
    runs = 0
    for ratio in ratios:
        model.load_state_dict(here)
        if ratio is not None:  # the learned tensors (not buffers) moved on along the line
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if p.requires_grad:
                        p += ratio * (here[name] - previous[name])
        target.set_u(target.u_of(value))
        try:
            reoptimise(f, objective, free, RETRY_ITERATIONS * iterations)
            L = f.value()
        except SolverError:
            L = math.inf
        runs += 1
        if L_best > L:
            best, L_best = {k: v.detach().clone() for k, v in model.state_dict().items()}, L
    model.load_state_dict(best)
    return L_best, runs


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


def reoptimise(f: LikelihoodFunction, objective, free: list, iterations: int) -> bool:
    """Minimise the fit's objective over ``free`` (a held value's gradient is masked by a hook) with LBFGS,
    from where the model is: the warm start from the neighbouring profile point. Keeps the best point seen.
    Returns whether it converged (rather than running out of iterations or into a point it cannot solve)."""
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

    converged = False
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
                converged = True
                break
            previous = best_value
        with torch.no_grad():
            flat.parameter.copy_(best)
    finally:
        flat.release()
    return converged


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


def _far(t: Target, v0: float) -> float:
    """How far from the fit, on the stepping scale, a side is followed before it is open (:func:`_too_far`)."""
    return math.log(MAX_FACTOR) if t.log_scale else MAX_FACTOR * max(abs(v0), 1e-3)


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
