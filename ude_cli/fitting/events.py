"""Jumps of states at given times (``model.events``): doses, feeds, a PEtab period's condition.

A group's solve is split at its jump times into pieces (:func:`pieces`). Each piece is solved by whatever
engine solves the group, from the states the jump before it left; the jump itself (:class:`Jumps`) is a torch
function of the states just before it, the parameters and the constants, so the gradient of the fit goes
through it and through every piece. The states at a jump time are those after the jump (PEtab's convention:
a measurement at a period's start sees its condition), or those before it for the events with ``observed:
before`` (a trough sample taken just before a dose); a jump at the model's start time changes the initial
state (from which the solve starts: an observation at t0 sees it, or the initial state before it).

Experiments solved together (:func:`ude_cli.fitting.model.make_groups`) share their start time and their
schedule of jumps, so a group has one list of pieces whatever its experiments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

if TYPE_CHECKING:
    from ..data import Experiment
    from ..problem import Event
    from .hybrid import HybridRHS

#: a group's jumps: (time, the indices into model.events of the events that happen then), by time
Schedule = tuple[tuple[float, tuple[int, ...]], ...]


def schedule(events: Sequence[Event], experiment: Experiment) -> Schedule:
    """When the states of ``experiment`` jump, and by which events."""
    at: dict[float, list[int]] = {}
    for i, event in enumerate(events):
        for t in event.times_in(experiment):
            at.setdefault(t, []).append(i)
    return tuple((t, tuple(at[t])) for t in sorted(at))


#: a piece of a group's grid between jumps: its times, the events that happen at its first time, and whether an
#: observation at that time sees the states before the jump (the previous piece's last) rather than after it
Piece = tuple[np.ndarray, tuple[int, ...], bool]


def before_times(events: Sequence[Event], jumps: Schedule) -> frozenset[float]:
    """The jump times of ``jumps`` at which an observation sees the states before the jump (``observed: before``;
    the events at one time agree, :func:`ude_cli.problem._check_events`)."""
    return frozenset(t for t, which in jumps if events[which[0]].before)


def pieces(grid: np.ndarray, jumps: Schedule, at_start: bool, before: frozenset[float] = frozenset()
           ) -> list[Piece]:
    """``grid`` cut at the jump times within it: (a piece's times, the events that happen at its first time,
    whether the states there are seen before the jump).

    Consecutive pieces share their boundary (the jump time, added where the grid lacks it), which the solve
    keeps once (:func:`joined`): after the jump, or before it at the times in ``before``. A jump at ``grid[0]``
    happens only with ``at_start`` (the solve starts from the initial states there, not from states that have
    already jumped; seen before it, the initial states are a piece of one time of their own); jumps after
    ``grid[-1]`` do not happen."""
    start, end = float(grid[0]), float(grid[-1])
    out: list[Piece] = []
    first: tuple[int, ...] = ()
    cuts = []
    for t, which in jumps:
        if t == start and at_start:
            if t in before:  # the initial states, seen at t0, then the jump
                cuts.append((t, which))
            else:
                first = which
        elif start < t <= end:
            cuts.append((t, which))
    lo, events, seen_before = start, first, False
    for t, which in cuts:
        inside = grid[(grid > lo) & (grid < t)]
        out.append((np.concatenate([[lo], inside, [t]]) if t > lo else np.array([lo]), events, seen_before))
        lo, events, seen_before = t, which, t in before
    out.append((np.concatenate([[lo], grid[grid > lo]]), events, seen_before))
    return out


def joined(parts: Sequence[Any], before: Sequence[bool] | None = None) -> Any:
    """Pieces solved one after the other, each boundary once: their times (arrays) or their solutions ``(T_i,
    ...)`` (tensors). A boundary holds the state after the jump there (the next piece's first), or the one before
    it (the previous piece's last) where ``before`` (a flag per piece, :data:`Piece`'s third) says so."""
    flags = list(before) if before is not None else [False] * len(parts)
    cat = torch.cat if torch.is_tensor(parts[0]) else np.concatenate
    kept = []
    for i, p in enumerate(parts):
        lo = 1 if i > 0 and flags[i] else 0
        hi = len(p) - 1 if i < len(parts) - 1 and not flags[i + 1] else len(p)
        kept.append(p[lo:hi])
    return cat(kept)


class Jumps:
    """The events' assignments compiled to torch, applied to a group's states ``(S, B, n)``."""

    def __init__(self, events: Sequence[Event], states: Sequence[str], rhs: HybridRHS,
                 experiments: Sequence[Experiment]):
        self.events = list(events)
        self.states = list(states)
        self.rhs = rhs
        self.experiments = list(experiments)
        self.functions = [{self.states.index(s): e.compile("torch") for s, e in event.assignments.items()}
                          for event in events]
        self._records: dict[tuple[int, float, tuple[int, ...]], torch.Tensor] = {}

    def _record(self, e: int, t: float, experiments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The dosing record's value at ``t`` of each of ``experiments`` (event ``e``'s column), read once."""
        key = (e, t, tuple(experiments.tolist()))
        if key not in self._records:
            self._records[key] = torch.tensor([self.events[e].value(self.experiments[b], t) for b in key[2]],
                                              dtype=dtype)
        return self._records[key]

    def apply(self, y: torch.Tensor, t: float, events: Sequence[int], experiments: torch.Tensor) -> torch.Tensor:
        """The states after the jumps of ``events`` at time ``t``, from the states ``y`` before them (every
        formula reads the states before the jump), for trajectories of ``experiments`` (an index per column); a
        dosing record's value is that of each experiment's row at ``t``."""
        env = self.rhs.values(experiments)
        env["t"] = torch.tensor(t, dtype=y.dtype)
        env.update(zip(self.states, y.unbind(-1), strict=True))
        for e in events:
            column = self.events[e].column
            if column is not None:
                env[column] = self._record(e, t, experiments, y.dtype)
        new = list(y.unbind(-1))
        for e in events:
            for i, f in self.functions[e].items():
                new[i] = torch.as_tensor(f(env), dtype=y.dtype).expand(y.shape[:-1])
                if not bool(torch.isfinite(new[i]).all()) and bool(torch.isfinite(y).all()):
                    from ..engines.torchdiffeq import SolverError  # a trial point of a fit rolls back on it

                    raise SolverError(f"model.events[{e}].set.{self.states[i]}: the jump's value is not finite at "
                                      f"t = {t:g} ({self.events[e].assignments[self.states[i]].text!r} from finite "
                                      f"states: a log or sqrt of a negative value, a division by zero?)",
                                      hint="write the jump's formula so that it is finite for every state it can "
                                           "meet (max(x, 0), a dose added rather than removed)")
        return torch.stack(new, -1)


#: how finely a piece is looked at for a condition becoming true (points across it, beside the data's times): a
#: condition true and false again between two of them is not seen
LOOKS = 64
#: bisection stops when the bracket is this fraction of the piece long (or 1e-13 of the time itself); the shift
#: of the jump's time by a Newton step (``δ``, :class:`Triggers`) makes the error in the states second order in it
BISECTION = 1e-9
#: at most this many condition changes (jumps and re-armings) in one solve of one piece of a group
MOST_CHANGES = 10_000


class Triggers:
    """The events with ``when`` (a condition of the states): located in each piece of a solve, and jumped.

    A jump happens where its condition becomes true, and again only after it has been false (one true at the
    start has to become false first). Locating: the piece is solved without gradient at its data times and
    :data:`LOOKS` more; in the first interval where some trajectory's condition changes, bisection finds the
    time to :data:`BISECTION` of the piece, each step a solve from the bracket's left end; the trajectories
    whose condition changed there jump (if it became true) or are re-armed (if it became false). Then the piece
    is solved with the gradient up to that time, and on from the states the jump left.

    The gradient through the time of the jump (the implicit function theorem: ``dt*/dθ = -(dg/dθ) / (dg/dt)``
    along the flow, ``g`` the condition's root function ``a - b``) enters as a shift ``δ = -g / ġ`` of value
    (nearly) 0: the states before the jump are ``y⁻ + f(y⁻) δ``, the jump is applied to them, and the states the
    next solve starts from are the jump's ``x⁺ - f(x⁺) δ``, so their derivatives carry the saltation that moving
    the jump's time makes."""

    def __init__(self, events: Sequence[Event], states: Sequence[str], rhs: HybridRHS,
                 experiments: Sequence[Experiment], jumps: Jumps):
        self.index = [i for i, e in enumerate(events) if e.trigger is not None]
        self.states = list(states)
        self.rhs = rhs
        self.jumps = jumps
        self.roots = {i: cast(Any, events[i].trigger)[0].compile("torch") for i in self.index}
        self.rising = {i: bool(cast(Any, events[i].trigger)[1]) for i in self.index}
        self.applies = {i: torch.tensor([events[i].applies(e.name) for e in experiments]) for i in self.index}
        #: while a dict (:meth:`~ude_cli.fitting.model.UDEModel.jump_times`): (start, experiment) -> the times of
        #: the jumps its solves made
        self.record: dict[tuple[int, int], list[float]] | None = None

    def happen_in(self, experiments: torch.Tensor) -> bool:
        """Whether a triggered event applies to any of ``experiments``."""
        return any(bool(self.applies[i][experiments].any()) for i in self.index)

    def _root(self, i: int, t: Any, y: torch.Tensor, experiments: torch.Tensor) -> torch.Tensor:
        """Event ``i``'s root function at states ``y (..., S, B, n)`` and times ``t`` (broadcast)."""
        env = self.rhs.values(experiments)
        env["t"] = torch.as_tensor(t, dtype=y.dtype)
        env.update(zip(self.states, y.unbind(-1), strict=True))
        return torch.as_tensor(self.roots[i](env), dtype=y.dtype).expand(y.shape[:-1])

    def _true(self, t: Any, y: torch.Tensor, experiments: torch.Tensor) -> torch.Tensor:
        """``(E, ..., S, B)`` bool: each triggered event's condition (false where it does not apply)."""
        out = []
        for i in self.index:
            g = self._root(i, t, y, experiments)
            out.append(((g > 0) if self.rising[i] else (g < 0)) & self.applies[i][experiments])
        return torch.stack(out)

    def solve(self, y0: torch.Tensor, grid: np.ndarray, experiments: torch.Tensor,
              solve: Callable[[torch.Tensor, np.ndarray], torch.Tensor]) -> torch.Tensor:
        """The piece ``grid`` from ``y0 (S, B, n)``, ``(T, S, B, n)``, with the jumps its conditions make;
        ``solve(y, times)`` solves from ``y`` at ``times[0]`` by the group's engine (with the gradient, unless
        called under ``torch.no_grad``)."""
        t_c, y_c = float(grid[0]), y0
        out = [y0[None]]
        ahead = np.asarray(grid[1:], dtype=float)
        span = float(grid[-1] - grid[0])
        for _ in range(MOST_CHANGES):
            found = self._next(t_c, y_c, float(grid[-1]), ahead, span, experiments, solve) if len(ahead) else None
            if found is None:
                break
            t_star, became_true = found
            if self.record is not None:
                for start, b in torch.nonzero(became_true.any(0)).tolist():
                    self.record.setdefault((start, int(experiments[b])), []).append(t_star)
            inside = ahead[ahead < t_star]
            seg = solve(y_c, np.concatenate([[t_c], inside, [t_star]]))
            out.append(seg[1:-1])
            y_c = self._jump(t_star, seg[-1], became_true, experiments)
            t_c, ahead = t_star, ahead[ahead > t_star]
            if t_star in grid[1:]:  # a data time exactly there sees the states after the jump
                out.append(y_c[None])
        else:
            from ..engines.torchdiffeq import SolverError  # a trial point of a fit rolls back on it

            raise SolverError(f"more than {MOST_CHANGES} changes of a condition of model.events (when) in one solve "
                              f"from t = {grid[0]:g} to {grid[-1]:g}, the last at t = {t_c:g}: a jump that makes its "
                              f"condition true again at once?", hint="write the jump so that it moves the states "
                                                                     "away from its condition")
        if len(ahead):
            out.append(solve(y_c, np.concatenate([[t_c], ahead]))[1:])
        return torch.cat(out)

    def _next(self, t_c: float, y_c: torch.Tensor, end: float, ahead: np.ndarray, span: float,
              experiments: torch.Tensor, solve: Callable[[torch.Tensor, np.ndarray], torch.Tensor]
              ) -> tuple[float, torch.Tensor] | None:
        """The first time after ``t_c`` (up to ``end``) at which some trajectory's condition changes, and
        ``(E, S, B)``: the conditions that became true there; None if none changes."""
        with torch.no_grad():
            y_c = y_c.detach()
            looks = np.union1d(ahead, np.linspace(t_c, end, LOOKS + 1)[1:])
            ys = solve(y_c, np.concatenate([[t_c], looks]))
            before = self._true(t_c, y_c, experiments)
            later = self._true(torch.tensor(looks, dtype=ys.dtype)[:, None, None], ys[1:], experiments)
            changed = (later != before[:, None]).flatten(2).any(-1).any(0)  # (T,): some condition changed by then
            if not bool(changed.any()):
                return None
            j = int(torch.nonzero(changed)[0])
            lo, y_lo = (t_c, y_c) if j == 0 else (float(looks[j - 1]), ys[j])
            hi, now = float(looks[j]), later[:, j]
            tol = max(BISECTION * span, 1e-13 * abs(hi))
            while hi - lo > tol:
                mid = 0.5 * (lo + hi)
                y_mid = solve(y_lo, np.array([lo, mid]))[-1]
                at_mid = self._true(mid, y_mid, experiments)
                if bool((at_mid != before).any()):
                    hi, now = mid, at_mid
                else:
                    lo, y_lo = mid, y_mid
            return hi, now & ~before

    def _jump(self, t: float, y: torch.Tensor, fire: torch.Tensor, experiments: torch.Tensor) -> torch.Tensor:
        """The states after the jumps of the conditions in ``fire (E, S, B)`` at ``t``, from ``y`` just before
        (trajectories where none fires keep ``y``), with the gradient through the jump's time (the class's
        docstring)."""
        if not bool(fire.any()):
            return y  # conditions that became false: re-armed, no jump
        self.rhs.select(experiments)
        try:
            tt = torch.tensor(t, dtype=y.dtype)
            f_before = self.rhs(tt, y)
            delta = torch.zeros(y.shape[:-1], dtype=y.dtype)
            done = torch.zeros(y.shape[:-1], dtype=torch.bool)
            for e, i in enumerate(self.index):
                mask = fire[e] & ~done
                if not bool(mask.any()):
                    continue
                with torch.enable_grad():
                    t_var = torch.full(y.shape[:-1], t, dtype=y.dtype, requires_grad=True)
                    y_var = y.detach().requires_grad_(True)
                    g = self._root(i, t_var, y_var, experiments)
                    d_t, d_y = torch.autograd.grad(g.sum(), [t_var, y_var], allow_unused=True)
                rate = (0.0 if d_t is None else d_t) + (0.0 if d_y is None else (d_y * f_before.detach()).sum(-1))
                rate = torch.as_tensor(rate, dtype=y.dtype).expand(y.shape[:-1])
                steep = rate.abs() > 1e-300
                shift = -self._root(i, tt, y, experiments) / torch.where(steep, rate, torch.ones_like(rate))
                delta = torch.where(mask & steep, shift, delta)
                done = done | mask
            start = y + f_before * delta[..., None]
            new = start
            for e, i in enumerate(self.index):
                if bool(fire[e].any()):
                    new = torch.where(fire[e][..., None], self.jumps.apply(start, t, [i], experiments), new)
            return new - self.rhs(tt, new) * delta[..., None]
        finally:
            self.rhs.select(None)


def summary(problem) -> str:
    """One line on model.events (``ude check``, the report): which states jump, and how often in each experiment,
    counted from the schedules; those after an experiment's data separately (they happen in forecasts only)."""
    def counted(counts: list[int]) -> str:
        return f"{counts[0]} in each experiment" if len(set(counts)) == 1 else f"{min(counts)} to {max(counts)} per experiment"

    experiments = problem.dataset.experiments
    conditions = "; ".join(f"when {e.trigger[0].text}: {', '.join(e.assignments)} (model.events[{i}])"
                           for i, e in enumerate(problem.events) if e.trigger is not None)
    timed = [e for e in problem.events if e.trigger is None]
    if not timed:
        return f"jumps (model.events) {conditions}"
    schedules = [schedule(problem.events, e) for e in experiments]
    jumps = [[t for t, _ in sch] for sch in schedules]
    during = [sum(t <= float(e.t[-1]) for t in ts) for e, ts in zip(experiments, jumps, strict=True)]
    after = [len(ts) - n for ts, n in zip(jumps, during, strict=True)]
    states = sorted({s for e in timed for s in e.assignments})
    line = f"jumps (model.events) of {', '.join(states)}: {counted(during)} during the data"
    line += f"; {counted(after)} after it (in forecasts only)" if any(after) else ""
    seen = [i for i, e in enumerate(problem.events) if e.before]
    line += (f"; an observation at a jump time of model.events[{', '.join(map(str, seen))}] sees the states "
             f"before it" if seen else "")
    at_jumps = sum(len({float(t) for t in e.t[e.observed]} & (set(ts) - before_times(problem.events, sch)))
                   for e, ts, sch in zip(experiments, jumps, schedules, strict=True))
    if at_jumps:
        line += (f"; {at_jumps} observation{'s' if at_jumps != 1 else ''} at a jump's time see{'' if at_jumps != 1 else 's'} "
                 f"the states after it (observed: before, for samples taken just before a dose)")
    return line + (f"; {conditions}" if conditions else "")
