"""Stiff solves for the compiled engine: SUNDIALS CVODES (variable-order BDF, Newton iterations on the
right-hand side's Jacobian from CasADi's automatic differentiation, networks included) through
CasADi's integrator, with forward sensitivities as the gradient.

Why CVODES rather than a Rosenbrock method written as CasADi graphs like dopri5: measured on Robertson's
equations over [0, 1e5] (40 log-spaced outputs, rtol 1e-6, atol 1e-10, 2 shared cores), CVODES solves
in 0.75 ms (434 steps, 583 right-hand sides), where a Rodas4 of the same accuracy stepped from Python
around CasADi's virtual machine took 9.3 ms for the forward solve alone (200 steps). CVODES steps in C,
changes its order (1 to 5), and reuses the factorised iteration matrix over many steps; the Rosenbrock
method needs a factorisation per step.

The gradient: CVODES's forward sensitivities (CasADi's forward mode of the integrator: the sensitivity
equations solved with the states, under the same error control), computed in the solve for the inputs
that need a gradient, so the backward pass is a product. They are the derivatives of the continuous
solution to the solver's tolerance, not those of the discrete steps; tests compare them with central
finite differences at tight tolerances. Not CasADi's reverse mode (CVODES's adjoint): on Robertson's
equations with a log-scale loss its backward solve failed (CV_TOO_MUCH_WORK) at parameters where the
forward solve succeeds, unless the forward solve is checkpointed at every step (80 ms a gradient, against
14 ms for three forward sensitivities). The cost of forward sensitivities grows with the number of
inputs differentiated: a network of many weights is slower here than with dopri5.

Also here: the stiffness probe of ``solver.method: auto`` (:func:`stiffness`), which reads dopri5's
accepted steps against the eigenvalues of the right-hand side's Jacobian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .compiled import numpy_inputs, torch_gradients
from .torchdiffeq import SolverError, SolverSettings

#: CVODES's failure codes as CasADi reports them, and what each means for a user
CVODES_FAILURES = {
    "CV_TOO_MUCH_WORK": "more than solver.max_steps steps between two output times",
    "CV_TOO_CLOSE": "the output times are too close together",
    "CV_TOO_MUCH_ACC": "the tolerances asked for are beyond double precision",
    "CV_ERR_FAILURE": "the error test failed repeatedly with the smallest step",
    "CV_CONV_FAILURE": "the Newton iteration failed to converge repeatedly with the smallest step",
    "CV_RHSFUNC_FAIL": "the right-hand side was not finite",
    "CV_FIRST_RHSFUNC_ERR": "the right-hand side was not finite at the start",
    "CV_REPTD_RHSFUNC_ERR": "the right-hand side was not finite repeatedly",
    "CV_UNREC_RHSFUNC_ERR": "the right-hand side was not finite",
    "CV_LSETUP_FAIL": "the Jacobian could not be factorised",
    "CV_LSOLVE_FAIL": "the linear solve with the Jacobian failed",
}
#: bisection steps that locate a failure in time (the interval between two output times shrinks by 2**-12: the
#: message's time to about 4 digits of that interval; each step that fails costs a solve of up to max_steps steps)
LOCATE_STEPS = 12
#: time grids whose integrators are kept (each group's data grid, and the latest dense grids)
KEPT_GRIDS = 256


class StiffSolver:
    """Solves of ``n_traj`` trajectories of ``f(t, u, p, c, w)`` by CVODES, and their gradients."""

    def __init__(self, f: Any, settings: SolverSettings, states: Sequence[str] = (),
                 trajectory_name: Any = None):
        import casadi as ca

        self.settings = settings
        self.state_names = list(states) or [f"u{i}" for i in range(f.size1_in(1))]
        #: ``trajectory_name(j)``: how a failure names trajectory ``j`` ("experiment 2", ...)
        self.trajectory_name = trajectory_name or (lambda j: f"trajectory {j}")
        n, n_p, n_c, n_w = (f.size1_in(i) for i in (1, 2, 3, 4))
        self._sizes = (n, n_p, n_c, n_w)
        t, x, q = ca.SX.sym("t"), ca.SX.sym("x", n), ca.SX.sym("q", n_p + n_c + n_w)
        ode = f(t, x, q[:n_p], q[n_p:n_p + n_c], q[n_p + n_c:])
        self._dae = {"t": t, "x": x, "p": q, "ode": ode}
        self._jacobian = ca.Function("rhs_jacobian", [t, x, q], [ca.jacobian(ode, x)])
        self._programs: dict[bytes, dict[Any, Any]] = {}
        self._evaluations = 0

    def options(self, max_steps: int | None = None) -> dict[str, Any]:
        s = self.settings
        return {"abstol": s.atol, "reltol": s.rtol, "max_num_steps": max_steps or s.max_steps,
                "show_eval_warnings": False, "disable_internal_warnings": True}

    def integrator(self, t0: float, grid: Sequence[float] | np.ndarray, max_steps: int | None = None) -> Any:
        import casadi as ca

        return ca.integrator("bdf", "cvodes", self._dae, float(t0), [float(g) for g in grid],
                             self.options(max_steps))

    def _program(self, times: np.ndarray) -> dict[Any, Any]:
        """The integrator over ``times`` (one trajectory), the solve as a function of ``(y0, p, c, w)``, and its
        forward-sensitivity functions by number of directions, built once and kept."""
        key = np.asarray(times, dtype=np.float64).tobytes()
        if key not in self._programs:
            import casadi as ca

            n, n_p, n_c, n_w = self._sizes
            integrator = self.integrator(times[0], times[1:])
            y0, p, c, w = ca.MX.sym("y0", n), ca.MX.sym("p", n_p), ca.MX.sym("c", n_c), ca.MX.sym("w", n_w)
            xf = integrator(x0=y0, p=ca.vertcat(p, c, w))["xf"]
            self._programs[key] = {"integrator": integrator, "solve": ca.Function("solve", [y0, p, c, w], [xf])}
            while len(self._programs) > KEPT_GRIDS:  # dense grids of predictions: the oldest goes
                self._programs.pop(next(iter(self._programs)))
        return self._programs[key]

    def _forward(self, args: Sequence[np.ndarray], times: np.ndarray, needed: Sequence[bool]
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """States ``(n_traj, T, n)`` at ``times``, one CVODES solve per trajectory (its statistics counted), and
        where ``needed`` (per input ``y0, p, c, w``) the sensitivities of the states to those inputs:
        ``(n_traj, directions, T - 1, n)``, with CVODES's error control on them too."""
        y0, p, c, w = args
        program = self._program(times)
        integrator = program["integrator"]
        n_traj, n = y0.shape
        out = np.empty((n_traj, len(times), n))
        widths = [a.shape[1] if need else 0 for a, need in zip(args, needed, strict=True)]
        n_dir = sum(widths)
        sens = np.empty((n_traj, n_dir, len(times) - 1, n)) if n_dir else None
        if n_dir and n_dir not in program:
            program[n_dir] = program["solve"].forward(n_dir)
        self._evaluations = 0
        for j in range(n_traj):
            q = np.concatenate([p[j], c[j], w[j]])
            try:
                xf = integrator(x0=y0[j], p=q)["xf"]
            except RuntimeError as exc:
                raise self.failure(exc, j, y0[j], q, times) from None
            self._evaluations += int(integrator.stats().get("nfevals", 0))
            out[j, 0] = y0[j]
            out[j, 1:] = np.asarray(xf).T
            if n_dir:
                seeds, offset = [], 0
                for a, width in zip(args, widths, strict=True):
                    seed = np.zeros((a.shape[1], n_dir))
                    seed[:, offset:offset + width] = np.eye(width) if width else 0.0
                    offset += width
                    seeds.append(seed)
                try:
                    (d,) = program[n_dir].call([y0[j], p[j], c[j], w[j], xf, *seeds])
                except RuntimeError as exc:
                    raise self.failure(exc, j, y0[j], q, times) from None
                assert sens is not None  # allocated when n_dir
                sens[j] = np.asarray(d).reshape(n, n_dir, len(times) - 1).transpose(1, 2, 0)
        return out, sens

    def solve(self, inputs: Sequence[torch.Tensor], shape: tuple[int, int], times: np.ndarray) -> tuple[torch.Tensor, int]:
        """States at ``times`` ``(T, n_traj, n)``, differentiable with respect to ``inputs`` (``y0, p, c,
        *weights``; ``shape``: starts, experiments), and the right-hand-side evaluations of the solve."""
        out = _StiffSolve.apply(self, np.asarray(times, dtype=np.float64), shape, torch.is_grad_enabled(), *inputs)
        return out, self._evaluations

    # -- a failure that says where ---------------------------------------------------------------
    def failure(self, exc: RuntimeError, trajectory: int, y0: np.ndarray, q: np.ndarray,
                times: np.ndarray) -> SolverError:
        """The failure of trajectory ``trajectory``'s solve: which CVODES failure, the time it was reached
        (located by bisection between the last output time solved and the next), the state there."""
        code = next((k for k in CVODES_FAILURES if f'"{k}"' in str(exc)), None)
        what = CVODES_FAILURES.get(code or "", str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed")
        if code == "CV_FIRST_RHSFUNC_ERR":
            t_ok, y_ok = float(times[0]), np.asarray(y0, dtype=np.float64)
        else:
            t_ok, y_ok = self._locate(y0, q, times)
        hint = ("try raising solver.max_steps or loosening solver.rtol/atol; if the solution grows without "
                "bound, bounding the parameters (bounds, positive: true)" if code == "CV_TOO_MUCH_WORK" else
                "try bounding the parameters (bounds, positive: true) so that the right-hand side stays finite, "
                "checking the initial values, or loosening solver.rtol/atol")
        name = self.trajectory_name(trajectory)
        return SolverError(f"the stiff solver (CVODES BDF) failed{f' on {name}' if name else ''}: {what} "
                           f"({code or 'error'}); it reached t = {t_ok:.6g}, where "
                           f"{describe_state(self.state_names, y_ok)}", hint=hint)

    def _locate(self, y0: np.ndarray, q: np.ndarray, times: np.ndarray) -> tuple[float, np.ndarray]:
        """The latest time up to which the solve from ``times[0]`` succeeds, and the state there: marching from
        output time to output time (each piece from the last state reached, as the solve itself steps between
        output times), then bisecting the interval that fails, each trial from the latest time reached."""
        def reach(t0: float, y: np.ndarray, t: float) -> np.ndarray | None:
            try:
                return np.asarray(self.integrator(t0, [t])(x0=y, p=q)["xf"]).ravel()
            except RuntimeError:
                return None

        lo, y_lo = float(times[0]), np.asarray(y0, dtype=np.float64)
        for t in times[1:]:  # the last output time that is reached, then bisection up to the next
            y = reach(lo, y_lo, float(t))
            if y is None:
                hi = float(t)
                break
            lo, y_lo = float(t), y
        else:
            return lo, y_lo
        for _ in range(LOCATE_STEPS):
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
            y = reach(lo, y_lo, mid)
            if y is None:
                hi = mid
            else:
                lo, y_lo = mid, y
        return lo, y_lo

    # -- stiffness ---------------------------------------------------------------------------------
    def spectral_radii(self, t: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The largest eigenvalue modulus of the right-hand side's Jacobian at each ``(t[k], y[k])``
        (``q``: the parameters ``p, c, w`` of that trajectory)."""
        jac = self._jacobian.map(len(t))
        n = y.shape[1]
        j = np.asarray(jac(np.asarray(t)[None, :], y.T, np.repeat(q[:, None], len(t), axis=1)))  # (n, K n)
        mats = j.reshape(n, len(t), n).transpose(1, 0, 2)
        with np.errstate(all="ignore"):
            eig = np.linalg.eigvals(np.where(np.isfinite(mats), mats, 0.0))
        return np.abs(eig).max(axis=1)


#: dopri5's stability region reaches about 3.3 along the negative real axis; a step held near it by the
#: controller (h * |lambda| at least this) is limited by stability, not by accuracy
STABILITY_LIMITED = 2.5
#: accepted steps limited by stability that make a solve stiff (Hairer's DOPRI5 counts 15 as well)
STIFF_STEPS = 15


def stiffness(solver: StiffSolver, states: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
              args: Sequence[np.ndarray]) -> str | None:
    """Why a dopri5 solve was stiff, or None: ``states (n_traj, K + 1, n)``, the accepted steps' ``starts``
    and ``sizes``, and the solve's inputs ``y0, p, c, w``. A step counts as limited by stability when
    ``h * rho(J) >= STABILITY_LIMITED`` for one trajectory at least, with ``rho(J)`` the spectral radius of
    the right-hand side's Jacobian at the step's start."""
    _, p, c, w = args
    k = len(starts)
    if k < STIFF_STEPS:
        return None
    limited = np.zeros(k, dtype=bool)
    worst = np.zeros(k)
    for j in range(states.shape[0]):
        q = np.concatenate([p[j], c[j], w[j]])
        rho = solver.spectral_radii(starts, states[j, :k, :], q)
        ratio = np.asarray(sizes) * rho
        limited |= ratio >= STABILITY_LIMITED
        worst = np.maximum(worst, np.where(np.isfinite(rho), rho, 0.0))
    count = int(limited.sum())
    if count < STIFF_STEPS:
        return None
    return (f"of {k} accepted dopri5 steps, {count} were held by its stability limit (step x the largest "
            f"eigenvalue modulus of the Jacobian >= {STABILITY_LIMITED:g}; that modulus reached {worst.max():.3g})")


def describe_state(names: Sequence[str], y: np.ndarray) -> str:
    """``x = 1.2, y = 3e-05`` (non-finite values as they are)."""
    return ", ".join(f"{s} = {v:.4g}" if math.isfinite(v) else f"{s} = {v}" for s, v in zip(names, y, strict=True))


class _StiffSolve(torch.autograd.Function):
    """The gradient from forward sensitivities, computed with the solve (only for the inputs that need one):
    the backward pass is then a product, with no second solve."""

    @staticmethod
    def forward(ctx, solver: StiffSolver, times: np.ndarray, shape: tuple[int, int],
                differentiate: bool, *tensors: torch.Tensor) -> torch.Tensor:
        args = numpy_inputs(tensors, *shape)
        grads = [g and differentiate for g in ctx.needs_input_grad[4:]]
        needed = [*grads[:3], any(grads[3:])]  # y0, p, c, the weights (one block)
        states, sens = solver._forward(args, times, needed)
        ctx.widths = [a.shape[1] if need else 0 for a, need in zip(args, needed, strict=True)]
        ctx.shape, ctx.sens = shape, sens
        ctx.save_for_backward(*tensors)
        return torch.from_numpy(states).transpose(0, 1).to(tensors[0].dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.detach().to(torch.float64).transpose(0, 1).numpy()[:, 1:, :]  # (n_traj, T - 1, n): y0 is y0
        adjoint = np.einsum("jdti,jti->jd", ctx.sens, g) if ctx.sens is not None else None
        adjoints: list[np.ndarray | None] = []
        offset = 0
        for k, width in enumerate(ctx.widths):
            part = adjoint[:, offset:offset + width] if width and adjoint is not None else None  # width: adjoint
            if k == 0 and part is not None:
                part = part + grad.detach().to(torch.float64)[0].numpy()
            adjoints.append(part)
            offset += width
        needed = ctx.needs_input_grad[4:]
        return (None, None, None, None, *torch_gradients(adjoints, ctx.saved_tensors, needed, *ctx.shape))
