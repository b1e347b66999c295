"""Parameters that set where a ``where(...)`` of the right-hand side switches: their gradient by finite differences.

The solvers differentiate the steps they take. A ``where(condition, a, b)`` in a right-hand side is a branch,
and the derivative of a branch with respect to a value in its condition is 0, yet the solution moves when the
switch does: ``where(t < t_1, beta_0, beta_1)`` (a change of the transmission rate at t_1, as in
Oliveira_NatCommun2021) gives ``d x(T) / d t_1 = Phi(T, t_1) (f_before - f_after)``, which the solvers' gradient
misses entirely (an LBFGS fit would never move ``t_1``; `ude evaluate` would print a gradient of 0).

So for each learned parameter in such a condition the gradient is a central finite difference of the objective,
``(L(u + h) - L(u - h)) / 2h`` in the parameter's unconstrained coordinate ``u`` with ``h = STEP * max(1, |u|)``
(``STEP * |u|`` for an unconstrained parameter, whose coordinate is its value), each start (and, for a
per-experiment parameter, each experiment's value) on its own: two more solves without gradients per parameter
(and experiment) and evaluation. Conditions in observables, noise formulas or initial
values need nothing: there a switch is a jump of the value, whose derivative is 0 where it exists.

A switch in time (``t < E``, or any comparison of t, parameters and constants linear in t: Beer_MolBioSystems2014's
``tau - t > 0``) is also a stop of dopri5, compiled or torchdiffeq (:class:`Breakpoints`): it lands just before and
just after it, so that no step straddles the jump. Without the stops the solution (and so the finite difference
above, and the curvature the intervals come from) changes in jumps as the switch moves across a step: at rtol
1e-6 the Wald intervals of tests/test_switches.py came out 2 to 4 times too narrow. bdf takes no stops (CVODES,
through CasADi, interpolates to its output times rather than stopping there: output times at the switch left
Beer's llh as it was), nor do the fixed-step methods.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

#: the finite-difference step, in the unconstrained coordinate, relative to max(1, |u|)
STEP = 1e-3


def switch_parameters(problem) -> dict[str, list[str]]:
    """Learned mechanistic parameters used in the condition of a ``where`` in a right-hand side: name -> the states
    whose equations use it so."""
    learned = {n for n, p in problem.parameters.items() if not p.fixed}
    out: dict[str, list[str]] = {}
    for state, expr in problem.equations.items():
        for name in sorted(expr.condition_names() & learned):
            out.setdefault(name, []).append(state)
    return out


def relative_step(parameter) -> bool:
    """Whether a switch parameter's difference step is relative (:func:`finite_differences`): an unconstrained
    parameter, whose coordinate is its value."""
    from .parameters import _kind

    return _kind(parameter) == "free"


def describe(switches: dict[str, list[str]]) -> str:
    """One line for the log of a fit."""
    parts = [f"{n} (in the equation{'s' if len(s) > 1 else ''} of {', '.join(s)})" for n, s in switches.items()]
    return (f"{', '.join(parts)} set{'s' if len(parts) == 1 else ''} where a where(...) of the right-hand side "
            "switches: the solvers' gradient does not see a switch move, so "
            f"{'its gradient is' if len(parts) == 1 else 'their gradients are'} central finite differences "
            f"(step {STEP:g} in the unconstrained coordinate; 2 more solves each per evaluation)")


def finite_differences(raw: torch.Tensor, objective: Callable[[], torch.Tensor], relative: bool = False,
                       step: float = STEP) -> torch.Tensor:
    """``d objective[k] / d raw[k, ...]`` per start ``k`` by central differences (``raw``: ``(S,)`` or ``(S, B)``;
    ``objective()``: ``(S,)``, each start's value depending on its own entries only), with the step
    ``step max(1, |u|)``, or ``step |u|`` (``step`` at 0) when ``relative`` (an unconstrained parameter, whose
    coordinate is its value: a threshold of 1e-5 needs a step below 1e-3). Where one side cannot be solved (a
    batch fails as a whole: every start's, for that column) or is not finite, the difference is one-sided, from
    the unshifted objective; where neither side can, 0. ``raw`` is restored."""
    with torch.no_grad():
        base = raw.detach().clone()
        size = base.abs()
        h = step * (torch.where(size > 0, size, torch.ones_like(size)) if relative else size.clamp(min=1.0))
        grad = torch.zeros_like(base)
        columns: list[int | None] = [None] if base.ndim == 1 else list(range(base.shape[1]))
        try:
            for b in columns:
                mask = (torch.ones_like(base) if b is None
                        else torch.zeros_like(base).index_fill_(1, torch.tensor([b]), 1.0))
                values = []
                for sign in (1.0, -1.0):
                    raw.copy_(base + sign * h * mask)
                    values.append(_value(objective))
                hb = h if b is None else h[:, b]
                nan = torch.full_like(hb, float("nan"))
                up, down = (nan if v is None else v for v in values)  # a side that cannot be solved: NaN
                up_ok, down_ok = torch.isfinite(up), torch.isfinite(down)
                g = (up - down) / (2 * hb)
                if not bool((up_ok & down_ok).all()):  # one side failed: one-sided, from the unshifted point
                    raw.copy_(base)
                    here = _value(objective)
                    if here is None:
                        continue
                    one_sided = torch.where(up_ok, (up - here) / hb, (here - down) / hb)
                    g = torch.where(up_ok & down_ok, g, torch.where(up_ok | down_ok, one_sided, nan))
                g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
                if b is None:
                    grad = g
                else:
                    grad[:, b] = g
        finally:
            raw.copy_(base)
    return grad


def _value(objective: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    from ..engines.torchdiffeq import SolverError

    try:
        return objective().detach()
    except SolverError:
        return None


# -- the times a switch happens at: where the adaptive solvers stop -------------------------------------------------
#: a time switch at ``tau`` becomes two stops, ``tau -+ EPSILON max(1, |tau|)``: each step before it sees the
#: branch before the switch only, each step after it the branch after (a step across a jump of the right-hand
#: side is only as accurate as its error estimate happens to notice, and it moves with the switch)
EPSILON = 1e-9


def time_switches(problem) -> list:
    """The switches in time of the right-hand sides: for each comparison ``L < R`` (or ``>``, ``<=``, ``>=``) in a
    ``where`` condition of an equation whose sides use ``t``, parameters and constants only, ``L - R`` as an
    :class:`~ude_cli.expressions.Expression` (its root in ``t``, where it is linear in ``t``, is the switch:
    ``t < t_1``, ``t_on + 2 >= t``, Beer_MolBioSystems2014's ``tau - t > 0``; :class:`Breakpoints`). A
    comparison of a state, or a network, is not a time and is left out."""
    import ast

    from ..expressions import parse_expression

    allowed = set(problem.parameters) | set(problem.constants) | {"pi", "t"}
    found: dict[str, object] = {}
    for expr in problem.equations.values():
        for condition in expr.conditions():
            for cmp in ast.walk(condition):
                if not isinstance(cmp, ast.Compare) or len(cmp.comparators) != 1:
                    continue
                left, right = cmp.left, cmp.comparators[0]
                nodes = [*ast.walk(left), *ast.walk(right)]
                names = {n.id for n in nodes if isinstance(n, ast.Name)}
                if "t" not in names or not names <= allowed or any(isinstance(n, ast.Subscript) for n in nodes):
                    continue
                text = f"({ast.unparse(left)}) - ({ast.unparse(right)})"
                found.setdefault(text, parse_expression(text, where=""))
    return list(found.values())


class Breakpoints:
    """The stops of a model's time switches for a group of experiments (:data:`EPSILON` either side of each).

    Arguments:
        switches: :func:`time_switches`' expressions.
        parameters: the model's :class:`~ude_cli.fitting.parameters.ParameterSet`.
        constants: name -> tensor, scalar or one value per experiment (as the right-hand side gets them).
    """

    def __init__(self, switches: list, parameters, constants: dict, dtype: torch.dtype = torch.float64):
        self.functions = [e.compile("torch") for e in switches]  # L - R of each comparison, a function of t too
        self.parameters, self.constants = parameters, constants
        #: the stops' distance from a switch, relative to max(1, |tau|): EPSILON, or more where the model's float
        #: type could not tell the two stops apart (float32: 16 of its epsilons)
        self.epsilon = max(EPSILON, 16 * torch.finfo(dtype).eps)

    def times(self, experiments, t_start: float, t_end: float) -> np.ndarray:
        """The stops strictly inside ``(t_start, t_end)`` for every start and the given experiments, sorted (more
        than half a stop's distance from either end, so that a switch at ``t_start`` keeps its stop after it: a
        piece that starts at a jump at the switch's time, :mod:`.events`)."""
        with torch.no_grad():
            env = {**self.constants, **self.parameters.values()}  # (S, 1) or (S, B_all); constants () or (B_all,)
            values = []
            for f in self.functions:
                g0, g1, g2 = (torch.as_tensor(f({**env, "t": torch.tensor(float(t), dtype=torch.float64)}),
                                              dtype=torch.float64) for t in (0, 1, 2))
                slope = g1 - g0
                linear = (slope != 0) & ((g2 - g0 - 2 * slope).abs() <= 1e-9 * (g0.abs() + slope.abs() + 1))
                v = torch.where(linear, -g0 / torch.where(slope != 0, slope, torch.ones_like(slope)),
                                torch.full_like(g0, float("nan")))  # the root of L - R in t; not linear: none
                if v.ndim == 2 and v.shape[1] > 1:
                    v = v[:, list(experiments)]
                elif v.ndim == 1 and v.numel() > 1:  # a constant per experiment
                    v = v[list(experiments)]
                values.append(v.reshape(-1).cpu().numpy())
        taus = np.unique(np.concatenate(values)) if values else np.zeros(0)
        taus = taus[np.isfinite(taus)]
        e = self.epsilon
        eps = e * np.maximum(1.0, np.abs(taus))
        stops = np.concatenate([taus - eps, taus + eps])
        inside = (stops > t_start + 0.5 * e * max(1.0, abs(t_start))) & (stops < t_end - 0.5 * e * max(1.0, abs(t_end)))
        return np.unique(stops[inside])
