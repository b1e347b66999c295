"""The one module that calls torchdiffeq: solver settings, and solver failures as :class:`SolverError`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ADAPTIVE_METHODS, SolverSpec
from .errors import FitError


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
        return self.method in ADAPTIVE_METHODS

    @classmethod
    def from_spec(cls, spec: SolverSpec, default_step: float) -> SolverSettings:
        return cls(method=spec.method, rtol=spec.rtol, atol=spec.atol,
                   step=None if spec.method in ADAPTIVE_METHODS else (spec.step or default_step),
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


def solve(func: torch.nn.Module, y0: torch.Tensor, t: torch.Tensor, settings: SolverSettings) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at ``t``: ``(len(t), *y0.shape)``.

    Raises:
        SolverError: step size underflow, more than ``max_steps`` steps, or a non-finite solution,
            with what to try.
    """
    from torchdiffeq import odeint, odeint_adjoint

    options: dict = {}
    if settings.adaptive:
        options["max_num_steps"] = settings.max_steps
    else:
        check_fixed_steps(t, settings)
        assert settings.step is not None  # checked just above
        options["grid_constructor"] = grid_through_outputs(settings.step)
    kwargs = dict(rtol=settings.rtol, atol=settings.atol, method=settings.method, options=options)
    try:
        if settings.adjoint:
            params = tuple(p for p in func.parameters() if p.requires_grad)
            return odeint_adjoint(func, y0, t, adjoint_params=params, **kwargs)
        return odeint(func, y0, t, **kwargs)
    except AssertionError as exc:
        text = str(exc)
        if "underflow" in text:
            raise underflow_error() from None
        if "max_num_steps" in text:
            raise too_many_steps_error(settings) from None
        raise


def underflow_error() -> SolverError:
    return SolverError(
        "the solver's step size underflowed: the solution blows up, the right-hand side is not finite "
        "somewhere (sqrt or log of a negative value, a division by zero), or the equations are stiff",
        hint="bound the parameters (bounds, positive: true) so the equations stay defined, or try a smaller "
             "learning rate; for stiff equations (rates many orders of magnitude apart) rescale time or the "
             "states, or use a fixed-step method (rk4) with a small solver.step")


def too_many_steps_error(settings: SolverSettings) -> SolverError:
    return SolverError(
        f"the solver needed more than solver.max_steps = {settings.max_steps} steps: the equations "
        "are stiff or the solution grows very fast",
        hint="try raising solver.max_steps, loosening rtol/atol, or bounding the parameters")
