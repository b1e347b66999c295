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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
        return torch.stack(new, -1)


def summary(problem) -> str:
    """One line on model.events (``ude check``, the report): which states jump, and how often in each experiment,
    counted from the schedules; those after an experiment's data separately (they happen in forecasts only)."""
    def counted(counts: list[int]) -> str:
        return f"{counts[0]} in each experiment" if len(set(counts)) == 1 else f"{min(counts)} to {max(counts)} per experiment"

    experiments = problem.dataset.experiments
    jumps = [[t for t, _ in schedule(problem.events, e)] for e in experiments]
    during = [sum(t <= float(e.t[-1]) for t in ts) for e, ts in zip(experiments, jumps, strict=True)]
    after = [len(ts) - n for ts, n in zip(jumps, during, strict=True)]
    states = sorted({s for e in problem.events for s in e.assignments})
    line = f"jumps (model.events) of {', '.join(states)}: {counted(during)} during the data"
    line += f"; {counted(after)} after it (in forecasts only)" if any(after) else ""
    seen = [i for i, e in enumerate(problem.events) if e.before]
    return line + (f"; an observation at a jump time of model.events[{', '.join(map(str, seen))}] sees the states "
                   f"before it" if seen else "")
