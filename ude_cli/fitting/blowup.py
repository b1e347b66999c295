"""When a solve fails: which state ran away, and by what time.

The solvers report a failure as an underflowing step or too many steps, which says nothing about the
model. :func:`diagnose` simulates the model again (torchdiffeq, no gradient), watching every state the
right-hand side is evaluated at, and names the first of two things it sees:

* a right-hand side that is not finite at finite states (a ``log`` or ``sqrt`` of a negative value, a
  division by zero): the equation and the time;
* otherwise, the state that grew furthest beyond the size of its data (or of its initial value, for a
  state without data) before the solve stopped, and the last time the solver reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlowUp:
    """What :func:`diagnose` found."""

    state: str
    time: float
    value: float
    experiment: str
    size: float  # the size it is compared with: the largest |value| in its data (or its initial value)
    rhs_not_finite: bool = False

    def sentence(self, n_experiments: int) -> str:
        exp = f" in experiment '{self.experiment}'" if n_experiments > 1 else ""
        if self.rhs_not_finite:
            return (f"d{self.state}/dt is not finite at t = {self.time:.4g}{exp} (where {self.state} = "
                    f"{self.value:.4g}): a log or sqrt of a negative value, or a division by zero")
        return (f"state '{self.state}' runs away: it reaches {self.value:.3g} by t = {self.time:.4g}{exp}, against "
                f"{self.size:.3g} in the data")


#: A state counts as running away when it exceeds its data's size by this factor.
RUNAWAY_FACTOR = 1e3


def explain(model, message: str) -> str:
    """``message`` (a solver's failure) led by what :func:`diagnose` finds; unchanged when it finds nothing."""
    if ", at t = " in message or ", near t = " in message:  # the solver already says when, and the states there
        return message
    try:
        found = diagnose(model)
    except Exception:  # noqa: BLE001  (a diagnosis must never hide the failure it explains)
        return message
    if found is None:
        return message
    # "the solver's step size underflowed", without its list of possible causes; the step count's
    # message keeps "stiff or grows very fast": an explicit solver on stiff equations also swings far out
    what = message.split(":", 1)[0] if message.startswith("the solver's step size underflowed") else message
    return f"{found.sentence(len(model.problem.dataset.experiments))}, and {what}"


def diagnose(model) -> BlowUp | None:
    """Simulate ``model`` (a :class:`~ude_cli.fitting.model.UDEModel`) group by group; the first blow-up seen, or None.

    Each group is solved by the model's own :meth:`~ude_cli.fitting.model.UDEModel.solve_group` on its data grid
    through torchdiffeq, with the right-hand side it passes to :func:`ude_cli.engines.torchdiffeq.solve` watched."""
    import dataclasses

    import torch

    from ..engines.torchdiffeq import SolverError
    from ..fitting import model as model_module

    problem = model.problem
    ds = problem.dataset
    sizes = _sizes(problem, model)
    original = model_module.solve
    for k, g in enumerate(model.groups):
        watch = _Watch(None, sizes)

        def watched(func, y0, t, settings, stops=None, watch=watch):
            watch.rhs = func
            return original(watch, y0, t, dataclasses.replace(settings, adjoint=False), stops=stops)

        model_module.solve = watched
        try:
            with torch.no_grad():
                model.solve_group(k, model.times[k])  # a grid given: torchdiffeq, whatever the engine
        except SolverError:
            pass
        finally:
            model_module.solve = original
        found = watch.found()
        if found is not None:
            t, j, b, value, not_finite = found
            e = ds.experiments[g.experiments[b]]
            return BlowUp(state=problem.states[j], time=t, value=value, experiment=e.name, size=float(sizes[j]),
                          rhs_not_finite=not_finite)
    return None


def _sizes(problem, model) -> np.ndarray:
    """Per state: the largest |observation|, or for an unobserved state its largest |initial value|, at least 1e-12."""
    out = np.zeros(len(problem.states))
    for j in range(len(problem.states)):
        col = np.concatenate([e.values[:, j] for e in problem.dataset.experiments])
        col = col[np.isfinite(col)]
        if col.size:
            out[j] = np.abs(col).max()
    import torch

    with torch.no_grad():
        y0 = np.abs(model.initial().cpu().numpy()).reshape(-1, len(problem.states))
    return np.maximum(np.maximum(out, np.nanmax(y0, axis=0) if y0.size else 0), 1e-12)


class _Watch:
    """The right-hand side, recording the states it is evaluated at."""

    def __init__(self, rhs, sizes: np.ndarray):
        self.rhs = rhs
        self.sizes = sizes
        self.worst: tuple | None = None  # (ratio, t, j, b, value)
        self.not_finite: tuple | None = None  # (t, j, b, value)
        self.last_t = None

    def __call__(self, t, y):
        f = self.rhs(t, y)
        yn = y.detach().cpu().numpy().reshape(-1, y.shape[-2], y.shape[-1])  # (S, B, n)
        fn = f.detach().cpu().numpy().reshape(yn.shape)
        tt = float(t)
        finite_y = np.isfinite(yn)
        if self.not_finite is None:
            bad = finite_y.all(axis=-1, keepdims=True) & ~np.isfinite(fn)
            if bad.any():
                s, b, j = np.argwhere(bad)[0]
                self.not_finite = (tt, int(j), int(b), float(yn[s, b, j]))
        with np.errstate(all="ignore"):
            ratio = np.where(finite_y, np.abs(yn) / self.sizes, 0.0)  # the last finite values tell the size
        s, b, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if self.worst is None or ratio[s, b, j] > self.worst[0]:
            self.worst = (float(ratio[s, b, j]), tt, int(j), int(b), float(yn[s, b, j]))
        return f

    def parameters(self):
        return self.rhs.parameters()

    def found(self) -> tuple | None:
        if self.not_finite is not None and (self.worst is None or self.worst[0] <= RUNAWAY_FACTOR):
            t, j, b, value = self.not_finite
            return t, j, b, value, True
        if self.worst is not None and self.worst[0] > RUNAWAY_FACTOR:
            _, t, j, b, value = self.worst
            return t, j, b, value, False
        return None
