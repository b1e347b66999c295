"""Pre-equilibration: every experiment starts at a steady state of the model under other constants.

``model.preequilibration`` (PEtab's ``preequilibrationConditionId``) settles the model, with some constants
changed, from its initial values ``y_pre`` until nothing moves; the experiment then starts from that steady
state ``x*``, with its own constants, except the ``reset`` states, which take their initial values again.

The steady state solves ``f(x*) = 0`` on the class of ``y_pre``: a model with linear conservation laws
(totals that the equations keep: rows ``c`` with ``c . f(x) = 0`` at every ``x``, the left null space of the
stoichiometry) has a line or a plane of steady states, and the one reached from ``y_pre`` keeps its totals,
``C x* = C y_pre``. So ``x*`` solves the square system

    H(x) = [U^T f(x); C (x - y_pre)] = 0,     U: an orthonormal basis of the space f lives in (C U = 0),

whose Jacobian ``[U^T J; C]`` is regular at a hyperbolic steady state. :func:`conservation_laws` finds ``C``
numerically, from ``f`` at points around the state (each row exact to rounding: ``c . f = 0`` there).

It is found by pseudo-transient continuation, backward Euler steps ``(I/dt - J) dx = f`` whose step ``dt``
grows as the residual falls (switched evolution relaxation; Kelley & Keyes 1998, SIAM J. Numer. Anal.
35:508): the first steps follow the trajectory from ``y_pre``, which decides which steady state is reached,
and the last are Newton's. Backward Euler keeps the linear conservation laws exactly. Newton on ``H``
then polishes ``x*`` to a relative step of 1e-12 (float64). Every solve starts from ``y_pre``: a warm start
from the previous evaluation's steady state made the objective depend on the evaluations before it where
there are several steady states; only a repeated evaluation at the same values is taken from the last solve.

The derivative of ``x*`` with respect to the parameters, weights and ``y_pre`` is the implicit function
theorem's, written as one Newton step that autograd differentiates: ``x* - [U^T J; C]^{-1} H(x*)`` with
the matrix held constant is ``x*`` in value (H = 0 there) and has derivative ``-[U^T J; C]^{-1} dH``; the
step is taken in every experiment, even where several are solved once. A law that moves with the parameters
(``V A + B`` with a learned volume V) adds the derivative of ``C``: since ``x* - y_pre`` is a sum of values of
``f`` (where the trajectory went) and ``C f = 0`` everywhere, ``dC (x* - y_pre) = -C sum_i w_i df(p_i)`` for
weights with ``sum_i w_i f(p_i) = x* - y_pre`` at the points ``p_i`` the laws were found at
(:meth:`_Laws.displacement`), a term of value 0 that autograd differentiates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from ..engines.torchdiffeq import SolverError
from .hybrid import HybridRHS

#: relative size of the last Newton step at which a steady state is converged
NEWTON_TOL = 1e-12
#: most pseudo-transient steps before the continuation gives up (no steady state: an oscillator, a blow-up)
MAX_STEPS = 2_000
#: singular values of H's Jacobian below this fraction of the largest are left out of its inverse
RCOND = 1e-12
#: singular values below this fraction of the largest mark conservation laws (exact ones are at rounding)
CONSERVATION_TOL = 1e-9


class SteadyState:
    """Each experiment's steady state under the pre-equilibration constants, differentiable.

    Arguments:
        rhs: the model's right-hand side (its parameters and networks are the ones fitted).
        constants: constant -> its value while settling: a number, or a tensor ``(B,)`` per experiment.
        t0: each experiment's start time ``(B,)``, at which a right-hand side that uses ``t`` is held.
        reset: indices of the states that take their initial values again after the steady state.
        names: the experiments' names, for messages.
        scale: the states' magnitude (the data's), below which a state counts as 0 in the relative rates.
    """

    def __init__(self, rhs: HybridRHS, constants: Mapping[str, float | torch.Tensor], t0: Sequence[float],
                 reset: Sequence[int], names: Sequence[str], scale: float = 1.0, settles: Sequence[int] | None = None):
        self.rhs = rhs
        #: the experiments that settle (by index; the others start at their initial values)
        self.settles = list(range(len(names))) if settles is None else list(settles)
        self.scale = float(scale) if scale > 0 and np.isfinite(scale) else 1.0
        self.constants = dict(constants)
        self.t0 = torch.tensor(list(t0), dtype=torch.float64)
        self.reset = list(reset)
        self.names = list(names)
        #: the last solve, by its inputs: x*, the laws, the pseudo-inverse of H's Jacobian
        self._cache: tuple[bytes, tuple[np.ndarray, _Laws, np.ndarray]] | None = None
        #: evaluations of the right-hand side spent settling (numerical solves, not the autograd step)
        self.evaluations = 0
        self.solves = 0
        self._batched = True  # one vmapped backward pass for the Jacobian (False once an operation refuses)

    def summary(self) -> dict:
        """metrics.json's ``preequilibration``: the settling values, and the last solve's numbers."""
        out: dict = {
            # a value per settling experiment, by name, where the constant is read from a column
            "constants": {n: (float(v) if not (torch.is_tensor(v) and v.ndim) else
                              {self.names[b]: float(v[b]) for b in self.settles}) for n, v in self.constants.items()},
            "reset": [self.rhs.states[j] for j in self.reset],
            "experiments": [self.names[b] for b in self.settles],
            "method": "each of these experiments starts at the steady state the model reaches from its initial "
                      "values with these constants (pseudo-transient continuation, then Newton to a relative step of 1e-12, on "
                      "the class of the linear conservation laws found numerically); docs/training.md#pre-equilibration",
            "solves": self.solves, "rhs_evaluations": self.evaluations,
        }
        if self._cache is not None:
            x, laws, _ = self._cache[1]
            out["distinct_steady_states"] = int(x.shape[1])
            out["conservation_laws"] = sorted({int(c.shape[0]) for row in laws.C for c in row})
        return out

    def _settling(self, experiments: torch.Tensor, bound: bool):
        """The right-hand side under the settling constants, for ``experiments``."""
        return self.rhs.overridden(self.constants, experiments, bound=bound)

    def _time(self, experiments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The experiments' t0: one number when they share it (as in the solvers, whose t is a number:
        a where() of t then stays of the model's dtype), else ``(1, B)``."""
        t0 = self.t0.index_select(0, experiments).to(dtype)
        return t0[0] if bool((t0 == t0[0]).all()) else t0[None, :]

    # -- the steady states -----------------------------------------------------------------------------
    def __call__(self, y_pre: torch.Tensor, y_main: torch.Tensor) -> torch.Tensor:
        """The experiments' initial states ``(S, B, n)``: the steady states from ``y_pre``, with the reset
        states from ``y_main``."""
        n = y_pre.shape[-1]
        dtype = y_pre.dtype
        if not self.settles:
            return y_main
        rep, inverse = self._distinct(y_pre)
        experiments = torch.tensor(rep, dtype=torch.long)
        t = self._time(experiments, dtype)
        y_rep = y_pre.index_select(1, experiments).detach().to(torch.float64).numpy()
        with self._settling(experiments, bound=True):  # numerically, once per distinct settling
            x_star, laws, inverse_of_A = self._solve(y_rep, t, rep)
        # the implicit function theorem's step, for autograd, in every experiment: each has its own parameters
        # and initial values (equal now, at a fit's start, but not their derivatives)
        every = torch.tensor(self.settles, dtype=torch.long)
        spread = np.asarray(inverse)
        y_settling = y_pre.index_select(1, every)
        with self._settling(every, bound=False):
            t_all = self._time(every, dtype)
            xs = torch.tensor(x_star[:, spread], dtype=dtype)
            Ut, Cm = (torch.tensor(m[:, spread], dtype=dtype) for m in (laws.Ut, laws.Cm))
            f = self.rhs(t_all, xs).to(dtype)
            h = torch.einsum("sbij,sbj->sbi", Ut, f) + torch.einsum("sbij,sbj->sbi", Cm, xs - y_settling)
            if laws.any:  # laws that move with the parameters (a compartment's volume): C's derivative
                weights, points = laws.displacement(x_star, y_rep)
                for i in range(points.shape[2]):
                    w = torch.tensor(weights[:, spread, i, None], dtype=dtype)
                    fi = self.rhs(t_all, torch.tensor(points[:, spread, i], dtype=dtype)).to(dtype)
                    h = h - torch.einsum("sbij,sbj->sbi", Cm, w * fi)
            x_ss = xs - torch.einsum("sbij,sbj->sbi", torch.tensor(inverse_of_A[:, spread], dtype=dtype), h)
        if self.reset:
            mask = torch.zeros(n, dtype=torch.bool)
            mask[self.reset] = True
            x_ss = torch.where(mask, y_main.index_select(1, every), x_ss)
        if len(self.settles) == y_main.shape[1]:
            return x_ss
        return y_main.index_copy(1, every, x_ss)  # the others start at their initial values

    def _distinct(self, y_pre: torch.Tensor) -> tuple[list[int], list[int]]:
        """Settling experiments whose settling is the same problem (the same start, parameters, constants and
        t0), solved once: their representatives, and each settling experiment's representative's position."""
        B = y_pre.shape[1]  # (every experiment; those in self.settles are looked at)
        with torch.no_grad():
            params = [v.detach().to(torch.float64).numpy() for v in self.rhs.parameters_.values(None).values()]
            per_experiment = [c.detach().to(torch.float64).numpy() for c in {**self.rhs.constants,
                              **self.constants}.values() if torch.is_tensor(c) and c.ndim == 1]
            y = y_pre.detach().to(torch.float64).numpy()
            t0 = self.t0.numpy()
            keys: dict[bytes, int] = {}
            rep: list[int] = []
            inverse: list[int] = []
            for b in self.settles:
                parts = [y[:, b].tobytes(), t0[b].tobytes()]
                parts += [(v[:, b] if v.shape[-1] == B else v).tobytes() for v in params]
                parts += [c[b].tobytes() for c in per_experiment]
                key = b"|".join(parts)
                if key not in keys:
                    keys[key] = len(rep)
                    rep.append(b)
                inverse.append(keys[key])
        return rep, inverse

    def _f(self, t: torch.Tensor, x: np.ndarray) -> np.ndarray:
        """The right-hand side (settling) at ``x`` ``(S, B', n)``: no gradient."""
        with torch.no_grad():
            self.evaluations += 1
            return self.rhs(t, torch.tensor(x, dtype=t.dtype)).to(torch.float64).numpy()

    def _jacobian(self, t: torch.Tensor, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``f`` and its Jacobian ``(S, B', n, n)`` at ``x``: one backward pass per state (the trajectories are
        independent, so each pass gives one row of all of them)."""
        n = x.shape[-1]
        with torch.enable_grad():
            xt = torch.tensor(x, dtype=t.dtype, requires_grad=True)
            f = self.rhs(t, xt)
            self.evaluations += 1
            if not f.requires_grad:  # nothing depends on the states
                J = torch.zeros(*x.shape, n, dtype=torch.float64)
            elif self._batched:
                # the n backward passes as one (vmap over one-hot output cotangents): row i is d f_i / d x
                eye = torch.eye(n, dtype=f.dtype).reshape(n, *([1] * (f.dim() - 1)), n).expand(n, *f.shape)
                try:
                    (g,) = torch.autograd.grad(f, xt, grad_outputs=eye, is_grads_batched=True, retain_graph=True,
                                               allow_unused=True)
                    J = (torch.zeros(n, *x.shape, dtype=f.dtype) if g is None else g).movedim(0, -2)
                except RuntimeError:  # an operation vmap does not batch: one pass per state from now on
                    self._batched = False
            if f.requires_grad and not self._batched:
                rows = []
                for i in range(n):
                    (g,) = torch.autograd.grad(f[..., i].sum(), xt, retain_graph=i < n - 1, allow_unused=True)
                    rows.append(torch.zeros_like(xt) if g is None else g)
                J = torch.stack(rows, -2)
        return f.detach().to(torch.float64).numpy(), J.detach().to(torch.float64).numpy()

    def _solve(self, y: np.ndarray, t: torch.Tensor, rep: list[int]) -> tuple[np.ndarray, _Laws, np.ndarray]:
        """Steady states ``x*`` ``(S, B', n)`` from ``y``, their conservation laws and the pseudo-inverses of
        ``H``'s Jacobians there (numpy, float64). Always from ``y`` (no warm start from an earlier solve: with several steady
        states that would make the objective depend on the evaluations before it); the last solve is kept."""
        key = y.tobytes() + b"|" + repr(rep).encode() + b"|" + _parameter_key(self.rhs)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        self.solves += 1
        laws = self._conservation(t, y)
        x = self._newton(t, self._continuation(t, y, rep, laws), y, laws, rep)
        _, J = self._jacobian(t, x)
        self._cache = (key, (x, laws, _pseudo_inverse(laws.jacobian(J))))
        return self._cache[1]

    # -- conservation laws ---------------------------------------------------------------------------
    def _conservation(self, t: torch.Tensor, y: np.ndarray) -> _Laws:
        """The linear conservation laws of ``f`` per trajectory, from ``f`` at ``y`` and at 2n + 2 points
        around it (each state scaled by a log-normal factor, keeping its sign); a point where ``f`` is not finite
        (outside its domain) is left out."""
        S, Bp, n = y.shape
        rng = np.random.default_rng(0)
        magnitude = np.maximum(np.abs(y), 1e-3 * np.maximum(np.abs(y).max(-1, keepdims=True), self.scale))
        magnitude = np.where(y < 0, -magnitude, magnitude)
        points = [y] + [magnitude * np.exp(rng.normal(0.0, 0.5, y.shape)) for _ in range(2 * n + 2)]
        with np.errstate(all="ignore"):
            F = np.stack([self._f(t, x) for x in points], -1)  # (S, B', n, m)
        finite = np.isfinite(F).all(-2)  # (S, B', m)
        F = np.where(finite[:, :, None, :], F, 0.0)
        tol = max(CONSERVATION_TOL, _eps(t.dtype))
        laws = [[conservation_laws(F[s, b], tol) for b in range(Bp)] for s in range(S)]
        return _Laws(laws, n, np.stack(points, 2), F, finite)

    # -- Newton on H, and the continuation -----------------------------------------------------------------
    def _newton(self, t: torch.Tensor, x: np.ndarray, y: np.ndarray, laws: _Laws, rep: list[int],
                iterations: int = 25) -> np.ndarray:
        """Newton on ``H`` from ``x`` until the relative step is below :data:`NEWTON_TOL` (or stalls at
        rounding) in every trajectory; :class:`SolverError` unless that is a steady state (the residual, in
        units of the fastest time scale, at rounding) that attracts."""
        x = x.copy()
        eps = _eps(t.dtype)
        tol, stall = max(NEWTON_TOL, 64 * eps), max(1e-7, float(np.sqrt(eps)))
        previous = np.inf
        for _ in range(iterations):
            f, J = self._jacobian(t, x)
            h = np.einsum("sbij,sbj->sbi", laws.Ut, f) + np.einsum("sbij,sbj->sbi", laws.Cm, x - y)
            with np.errstate(all="ignore"):
                dx = np.einsum("sbij,sbj->sbi", _pseudo_inverse(laws.jacobian(J)), h)
            if not np.all(np.isfinite(dx)):
                break
            x = x - dx
            floor = 1e-6 * np.maximum(np.abs(x).max(-1, keepdims=True), 1e-6 * self.scale)
            step = float((np.abs(dx) / (np.abs(x) + floor)).max())
            if step <= tol or (step <= stall and step >= 0.5 * previous):
                f, J = self._jacobian(t, x)
                fastest = np.maximum(np.abs(np.linalg.eigvals(J)).max(-1), 1e-300)  # (S, B')
                residual = (np.abs(f) / (np.abs(x) + floor)).max(-1) / fastest
                if np.any(residual > max(1e-9, 1e4 * eps)):
                    b = int(np.argwhere(residual > max(1e-9, 1e4 * eps))[0][1])
                    raise SolverError(f"pre-equilibration: experiment {self.names[rep[b]]} does not settle: a "
                                      f"state keeps moving where the others are at rest (the model may grow without "
                                      f"bound under the pre-equilibration constants)")
                where = self._unstable(J, laws)
                if where is None:
                    return x
                name = self.names[rep[where[1]]]
                raise SolverError(f"pre-equilibration: the steady state that experiment {name} reaches is not "
                                  f"attracting (its Jacobian has an eigenvalue with a positive real part, or an "
                                  f"imaginary one): the model does not settle under the pre-equilibration constants")
            previous = step
        raise SolverError("pre-equilibration: Newton's method does not converge at the steady state reached")

    @staticmethod
    def _unstable(J: np.ndarray, laws: _Laws) -> tuple[int, int] | None:
        """The first trajectory whose steady state does not attract on its class (an eigenvalue of ``U^T J U``
        with a positive real part, or imaginary), or None."""
        for s, b, ev in _reduced_eigenvalues(J, laws):
            tiny = 1e-9 * max(float(np.abs(ev).max()), 1e-300)
            # growing (a positive real part), or circling for ever (a centre: imaginary, real part 0)
            if ev.real.max() > tiny or np.any((np.abs(ev.real) <= tiny) & (np.abs(ev.imag) > tiny)):
                return s, b
        return None

    def _continuation(self, t: torch.Tensor, y: np.ndarray, rep: list[int], laws: _Laws) -> np.ndarray:
        """Pseudo-transient continuation from ``y`` until Newton's regime in every trajectory: a step below
        1e-4 (relative) with ``dt`` 1000 times the slowest time scale on the class (the smallest nonzero
        eigenvalue of ``U^T J U``), where a backward-Euler step is a Newton step."""
        x = y.copy()
        f = self._f(t, x)
        n = x.shape[-1]
        eye = np.eye(n)
        floor = 1e-6 * np.maximum(np.abs(x).max(-1, keepdims=True), self.scale)

        def residual(f: np.ndarray, x: np.ndarray) -> np.ndarray:  # a rate: 1/time, per trajectory
            return np.abs(f / (np.abs(x) + floor)).max(-1)

        r = residual(f, x)
        dt = np.where(r > 0, 1e-2 / np.maximum(r, 1e-300), 1.0)
        done = r == 0
        for _ in range(MAX_STEPS):
            if np.all(done):
                return x
            _, J = self._jacobian(t, x)
            try:
                dx = np.linalg.solve(eye / dt[..., None, None] - J, f[..., None])[..., 0]
            except np.linalg.LinAlgError:
                dx = np.full_like(x, np.nan)
            with np.errstate(all="ignore"):
                x_new = x + dx
                f_new = self._f(t, x_new)
                r_new = residual(f_new, x_new)
                ok = np.all(np.isfinite(x_new), -1) & np.all(np.isfinite(f_new), -1) & ~done
                growth = np.clip(2.0 * r / np.maximum(r_new, 1e-300), 0.5, 10.0)
                step = np.where(np.isfinite(dx), np.abs(dx) / (np.abs(x_new) + floor), np.inf).max(-1)
            x = np.where(ok[..., None], x_new, x)
            f = np.where(ok[..., None], f_new, f)
            r = np.where(ok, r_new, r)
            dt = np.minimum(np.where(ok, dt * growth, np.where(done, dt, dt * 0.1)), 1e150)
            slowest, growing = _rates(J, laws)
            # near an unstable state (an eigenvalue of U^T J U with a positive real part) the step resolves its
            # growth, so that the steps follow the trajectory away from it instead of jumping across
            dt = np.where(growing > 0, np.minimum(dt, 0.5 / np.maximum(growing, 1e-300)), dt)
            done = done | (ok & (step < 1e-4) & (dt * slowest > 1e3) & (growing <= 0)) | (r == 0)
        b = int(np.argwhere(~done)[0][1])
        raise SolverError(f"pre-equilibration: no steady state reached for experiment {self.names[rep[b]]} in "
                          f"{MAX_STEPS} pseudo-time steps (the model may oscillate or grow without bound under "
                          f"the pre-equilibration constants)")


class _Laws:
    """The conservation laws ``C`` of each trajectory, and ``H``'s rows as blocks ``(S, B', n, n)``: ``Ut``
    (``U^T`` in the first ``n - r`` rows) and ``Cm`` (``C`` in the last ``r``); with the points ``(S, B', m, n)``
    they were found at, ``f`` there ``(S, B', n, m)`` and which of them were finite ``(S, B', m)``."""

    def __init__(self, C: list[list[np.ndarray]], n: int, points: np.ndarray, F: np.ndarray, finite: np.ndarray):
        S, Bp = len(C), len(C[0])
        self.C = C
        self.U = [[_complement(c, n) for c in row] for row in C]
        self.Ut = np.zeros((S, Bp, n, n))
        self.Cm = np.zeros((S, Bp, n, n))
        for s in range(S):
            for b in range(Bp):
                r = C[s][b].shape[0]
                self.Ut[s, b, : n - r] = self.U[s][b].T
                self.Cm[s, b, n - r:] = C[s][b]
        self.any = any(c.shape[0] for row in C for c in row)
        self.points, self.F, self.finite = points, F, finite

    def jacobian(self, J: np.ndarray) -> np.ndarray:
        """``[U^T J; C]``, the Jacobian of ``H``."""
        return np.einsum("sbij,sbjk->sbik", self.Ut, J) + self.Cm

    def displacement(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``w`` ``(S, B', m)`` with ``sum_i w_i f(p_i) = x - y`` and the points ``p_i`` (non-finite ones
        replaced by ``x``, where f is finite, with weight 0).

        ``x - y`` is where the trajectory went, a sum of values of ``f``: so ``C(theta) (x - y)`` and
        ``C(theta) sum_i w_i f(p_i, theta)`` have the same derivative, which ``C f = 0`` at every point turns
        into ``-C sum_i w_i df(p_i)/dtheta``: the term a law that moves with the parameters adds, by autograd."""
        S, Bp, m, n = self.points.shape
        w = np.zeros((S, Bp, m))
        points = self.points.copy()
        for s in range(S):
            for b in range(Bp):
                if not self.C[s][b].shape[0]:
                    continue
                U = self.U[s][b]
                keep = self.finite[s, b]
                G = U.T @ self.F[s, b][:, keep]  # (n - r, m'): f at the points, in U's coordinates
                w[s, b, keep] = np.linalg.lstsq(G, U.T @ (x[s, b] - y[s, b]), rcond=None)[0]
                points[s, b, ~keep] = x[s, b]
        return w, points


def conservation_laws(F: np.ndarray, tol: float = CONSERVATION_TOL) -> np.ndarray:
    """The linear conservation laws of a right-hand side from its values ``F`` ``(n, m)`` at ``m`` points: the
    rows ``c`` (orthonormal, ``(r, n)``) with ``c . F = 0``, found with the states' rates scaled to 1."""
    n = F.shape[0]
    scale = np.abs(F).max(-1)
    zero = scale == 0
    scale = np.where(zero, 1.0, scale)
    G = F / scale[:, None]
    _, sv, vt = np.linalg.svd(G.T, full_matrices=True)
    sv = np.concatenate([sv, np.zeros(n - sv.size)]) if sv.size < n else sv
    null = vt[sv <= tol * max(sv.max(initial=0.0), 1e-300)]  # rows w with w . G = 0: c = w / scale
    if null.size == 0:
        return np.zeros((0, n))
    c = null / scale[None, :]
    q, _ = np.linalg.qr(c.T)
    return q.T


def _rates(J: np.ndarray, laws: _Laws) -> tuple[np.ndarray, np.ndarray]:
    """Per trajectory ``(S, B')``, of the eigenvalues of ``U^T J U``: the smallest magnitude above 1e-12 of the
    largest (zero ones: states that neither move nor move anything; 0 without any), and the largest positive
    real part (0 when none is positive: no growing direction)."""
    slowest, growing = np.zeros(J.shape[:2]), np.zeros(J.shape[:2])
    for s, b, ev in _reduced_eigenvalues(J, laws):
        mags = np.abs(ev)
        tiny = 1e-12 * mags.max(initial=0.0)
        mags = mags[mags > tiny]
        slowest[s, b] = mags.min() if mags.size else 0.0
        growing[s, b] = max(float(ev.real.max()), 0.0) if ev.real.max() > tiny else 0.0
    return slowest, growing


def _reduced_eigenvalues(J: np.ndarray, laws: _Laws) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(s, b, eigenvalues of U^T J U)`` for every trajectory that has a direction left by its laws."""
    for s in range(J.shape[0]):
        for b in range(J.shape[1]):
            U = laws.U[s][b]
            if U.shape[1]:
                yield s, b, np.linalg.eigvals(U.T @ J[s, b] @ U)


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _pseudo_inverse(A: np.ndarray) -> np.ndarray:
    """``A``'s pseudo-inverse, singular values below :data:`RCOND` times the largest left out: a state that
    neither moves nor moves anything at the steady state (a complex of a ligand that is absent, Raimundez_PCB2020)
    makes ``H``'s Jacobian singular without a conservation law; it keeps the value the continuation reached, and
    its derivative there is 0."""
    return np.linalg.pinv(A, rcond=RCOND)


def _complement(c: np.ndarray, n: int) -> np.ndarray:
    """An orthonormal basis ``(n, n - r)`` of the vectors orthogonal to the rows of ``c``."""
    if c.shape[0] == 0:
        return np.eye(n)
    _, _, vt = np.linalg.svd(c, full_matrices=True)
    return vt[c.shape[0]:].T


def _parameter_key(rhs: HybridRHS) -> bytes:
    """The parameters' and networks' current values, as bytes (the cache's key)."""
    parts = []
    with torch.no_grad():
        for v in rhs.parameters_.values(None).values():
            parts.append(v.detach().to(torch.float64).numpy().tobytes())
        for p in rhs.networks.parameters():
            parts.append(p.detach().to(torch.float64).numpy().tobytes())
        parts.append(b"on" if rhs.networks_enabled else b"off")
    return b"|".join(parts)
