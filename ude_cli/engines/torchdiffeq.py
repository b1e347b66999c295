"""The one module that calls torchdiffeq: solver settings, and solver failures as :class:`SolverError`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ADAPTIVE_METHODS, STIFF_METHODS, SolverSpec
from ..errors import FitError


class SolverError(FitError):
    """The ODE solver failed: step-size underflow, too many steps, or a non-finite solution."""


@dataclass(frozen=True)
class SolverSettings:
    """Resolved solver settings (see :class:`~ude_cli.config.SolverSpec`)."""

    method: str = "dopri5"
    rtol: float = 1e-6
    atol: float = 1e-6
    step: float | None = None
    adjoint: bool = False
    max_steps: int = 2_000

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS or self.method in STIFF_METHODS or self.method == "auto"

    @classmethod
    def from_spec(cls, spec: SolverSpec, default_step: float) -> SolverSettings:
        adaptive = spec.method in ADAPTIVE_METHODS or spec.method in STIFF_METHODS or spec.method == "auto"
        return cls(method=spec.method, rtol=spec.rtol, atol=spec.atol,
                   step=None if adaptive else (spec.step or default_step),
                   adjoint=spec.adjoint, max_steps=spec.max_steps)


def grid_through_outputs(step: float):
    """A fixed-step grid of steps <= ``step`` that also passes through every output time, so the
    solution at the data's times is computed, not linearly interpolated between grid points."""

    def construct(func, y0, t):
        n = max(1, math.ceil(float(t[-1] - t[0]) / step - 1e-9))
        uniform = torch.linspace(float(t[0]), float(t[-1]), n + 1, dtype=t.dtype, device=t.device)
        return torch.unique(torch.cat([uniform, t]))  # sorted

    return construct


def check_fixed_steps(t: torch.Tensor, settings: SolverSettings) -> None:
    """Raise :class:`SolverError` when a fixed-step solve over ``t`` needs more than ``max_steps`` steps."""
    assert settings.step is not None  # a fixed-step method has its step (SolverSettings.from_spec)
    span = float(t[-1] - t[0])
    n_steps = span / settings.step
    if n_steps > settings.max_steps:
        raise SolverError(
            f"{settings.method} with step {settings.step:g} needs {n_steps:.3g} steps over [{float(t[0]):g}, "
            f"{float(t[-1]):g}], more than solver.max_steps = {settings.max_steps}",
            hint="try a larger solver.step or raise solver.max_steps")


def solve(func: torch.nn.Module, y0: torch.Tensor, t: torch.Tensor, settings: SolverSettings,
          stops: np.ndarray | None = None) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at ``t``: ``(len(t), *y0.shape)``. An adaptive
    method lands on ``stops`` (torchdiffeq's ``jump_t``: the switches of a ``where`` in time,
    :mod:`ude_cli.fitting.switches`).

    Raises:
        SolverError: step size underflow, more than ``max_steps`` steps, or a non-finite solution,
            with what to try.
    """
    from torchdiffeq import odeint, odeint_adjoint

    options: dict = {}
    if settings.adaptive:
        options["max_num_steps"] = settings.max_steps
        if stops is not None and len(stops):  # in the times' float type, without repeats (torchdiffeq refuses them)
            jump = torch.unique(torch.as_tensor(np.asarray(stops), dtype=t.dtype))
            options["jump_t"] = jump[~torch.isin(jump, t)]  # a stop on an output time is a stop already
    else:
        check_fixed_steps(t, settings)
        assert settings.step is not None  # checked just above
        options["grid_constructor"] = grid_through_outputs(settings.step)
    if settings.method in STIFF_METHODS:  # config.py sends these to the compiled engine (a bug otherwise)
        raise ValueError(f"torchdiffeq has no {settings.method} method")
    # 'auto' in torchdiffeq (engine: torchdiffeq, or a batch too large to compile) is dopri5: torchdiffeq has
    # no stiff method to switch to (UDEModel.solver_choice says so)
    method = "dopri5" if settings.method == "auto" else settings.method
    kwargs = dict(rtol=settings.rtol, atol=settings.atol, method=method, options=options)
    recorder = _LastEvaluation(func)
    try:
        if settings.adjoint:
            params = tuple(p for p in func.parameters() if p.requires_grad)
            return odeint_adjoint(recorder, y0, t, adjoint_params=params, **kwargs)
        return odeint(recorder, y0, t, **kwargs)
    except AssertionError as exc:
        text = str(exc)
        if "underflow" in text:
            raise underflow_error(recorder.where()) from None
        if "max_num_steps" in text:
            raise too_many_steps_error(settings, recorder.where()) from None
        raise


class _LastEvaluation(torch.nn.Module):
    """``func`` as torchdiffeq calls it, keeping the time and state of its last evaluation, so that a failure
    can say where the solver was (the state of the batch's trajectory largest in size, or not finite)."""

    def __init__(self, func: torch.nn.Module):
        super().__init__()
        self.func = func
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.last = (t, y)
        return self.func(t, y)

    def where(self) -> str:
        if self.last is None:
            return ""
        t, y = self.last
        states = getattr(self.func, "states", None)
        y = y.detach().reshape(-1, y.shape[-1]).to(torch.float64)
        size = torch.nan_to_num(y.abs(), nan=math.inf).amax(dim=1)
        row = y[int(torch.argmax(size))].tolist()
        names = states if states is not None and len(states) == len(row) else [f"u{i}" for i in range(len(row))]
        values = ", ".join(f"{n} = {v:.4g}" for n, v in zip(names, row, strict=True))
        return f", near t = {float(t.detach()) if torch.is_tensor(t) else float(t):.6g}, where {values}"


def underflow_error(where: str = "") -> SolverError:
    """``where``: ", at t = ..., where x = ..." when the solver knows (the compiled engine's)."""
    return SolverError(
        f"the solver's step size underflowed{where}: the solution blows up, the right-hand side is not finite "
        "somewhere (sqrt or log of a negative value, a division by zero), or the equations are stiff",
        hint="try bounding the parameters (bounds, positive: true) so the equations stay defined, or a smaller "
             "learning rate; for stiff equations (rates many orders of magnitude apart) solver.method: bdf "
             "(or auto)")


def too_many_steps_error(settings: SolverSettings, where: str = "") -> SolverError:
    """``where``: as for :func:`underflow_error`."""
    return SolverError(
        f"the solver needed more than solver.max_steps = {settings.max_steps} steps{where}: the equations "
        "are stiff or the solution grows very fast",
        hint="try solver.method: bdf (or auto) for stiff equations; otherwise raising solver.max_steps, "
             "loosening rtol/atol, or bounding the parameters")
