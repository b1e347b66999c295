"""dopri5 for the compiled engine: steps chosen numerically, then differentiated as fixed steps.

The step sizes are chosen as torchdiffeq's dopri5 chooses them (Dormand-Prince tableau, one step size
for all trajectories, RMS error norm against ``atol + rtol * max(|y0|, |y1|)``, Hairer's initial
step, safety 0.9, growth at most 10, shrink at most 0.2), except that a step ending past an output time
is shortened to end on it, where torchdiffeq interpolates. Each attempt is one CasADi call for every
trajectory at once.

The accepted steps are then one :class:`~ude_cli.engines.compiled.Program`-like graph with the step sizes as
inputs (one graph per number of steps, built once and kept), whose reverse mode gives the gradient:
that of the accepted steps with their sizes held fixed (discretise-then-optimise). torchdiffeq's direct
backpropagation also differentiates the step sizes' dependence on the parameters; the difference is of
the order of the tolerance, and both are as close to the converged gradient (tests/test_compiled.py).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .compiled import Call, as_columns, map_over, numpy_inputs, torch_gradients
from .torchdiffeq import SolverError, SolverSettings, too_many_steps_error, underflow_error

#: Dormand-Prince 5(4): stage times, stage weights, solution weights, error weights (torchdiffeq's dopri5)
ALPHA = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
BETA = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
C_ERROR = (35 / 384 - 1951 / 21600, 0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
           -2187 / 6784 - -12231 / 42400, 11 / 84 - 649 / 6300, -1.0 / 60.0)
SAFETY, IFACTOR, DFACTOR, ORDER = 0.9, 10.0, 0.2, 5
#: steps of the reverse-mode graphs kept between solves, over all step counts
KEPT_STEPS = 20_000
#: the probe of ``solver.method: auto`` looks at the accepted steps first after this many (then after twice
#: as many, and so on): a power of two
WATCH_FIRST = 64
#: ``ude_dopri5``'s return codes (``dopri5_driver.c``)
DRIVER_OK, DRIVER_TOO_MANY_STEPS, DRIVER_UNDERFLOW, DRIVER_CAPACITY, DRIVER_NO_MEMORY = 0, 1, 2, 3, 4


def _stages(f: Any, t0: Any, h: Any, u: Any, f0: Any, p: Any, c: Any, w: Any) -> tuple[Any, list[Any]]:
    """The new state and the seven stage derivatives of one Dormand-Prince step (the last is f(t1, u1))."""
    k = [f0]
    for alpha, beta in zip(ALPHA, BETA, strict=True):
        y = u + h * sum((b * ki for b, ki in zip(beta, k, strict=False) if b != 0), 0 * u)
        k.append(f(t0 + alpha * h, y, p, c, w))
    u1 = u + h * sum((b * ki for b, ki in zip(BETA[-1], k, strict=False) if b != 0), 0 * u)
    return u1, k


class AdaptiveSolver:
    """dopri5 solves of ``n_traj`` trajectories with a compiled attempt and compiled reverse mode."""

    _evaluations: int  # of the last solve, set by _AdaptiveSolve.forward

    def __init__(self, f: Any, settings: SolverSettings):
        import casadi as ca

        self.settings = settings
        n, n_p, n_c, n_w = (f.size1_in(i) for i in (1, 2, 3, 4))
        u, f0, t0, h = ca.SX.sym("u", n), ca.SX.sym("f0", n), ca.SX.sym("t0"), ca.SX.sym("h")
        p, c, w = ca.SX.sym("p", n_p), ca.SX.sym("c", n_c), ca.SX.sym("w", n_w)
        u1, k = _stages(f, t0, h, u, f0, p, c, w)
        error = h * sum((e * ki for e, ki in zip(C_ERROR, k, strict=True) if e != 0), 0 * u)
        scaled = error / (settings.atol + settings.rtol * ca.fmax(ca.fabs(u), ca.fabs(u1)))
        self._attempt_one = ca.Function("attempt", [u, f0, t0, h, p, c, w], [u1, k[-1], scaled])
        self._rhs_one = f
        step_u1, _ = _stages(f, t0, h, u, f(t0, u, p, c, w), p, c, w)
        # one step of the reverse sweep: the adjoint a of the state after the step, pulled back through it
        a, g = ca.SX.sym("a", n), ca.SX.sym("g", n)
        pb, cb, wb = ca.SX.sym("pb", n_p), ca.SX.sym("cb", n_c), ca.SX.sym("wb", n_w)
        back = ca.jtimes(step_u1, ca.vertcat(u, p, c, w), a, True)
        parts = ca.vertsplit(back, [0, n, n + n_p, n + n_p + n_c, n + n_p + n_c + n_w])
        self._vjp = ca.Function("vjp", [a, pb, cb, wb, u, t0, h, g, p, c, w],
                                [g + parts[0], pb + parts[1], cb + parts[2], wb + parts[3]])
        self._sizes = (n, n_p, n_c, n_w)
        self._mapped: dict[int, tuple[_Attempt, Call]] = {}
        self._programs: OrderedDict[tuple[int, int], Call] = OrderedDict()
        self._driver: _Driver | None = None
        self._check_driver = False  # compare the driver's first solve with the loop here
        self.driver_note = ""  # why the driver was dropped, if it was
        self.state_names: list[str] = [f"u{i}" for i in range(n)]
        #: ``trajectory_name(j)``: how a failure names trajectory ``j`` (set by the engine)
        self.trajectory_name = lambda j: f"trajectory {j}"
        #: the last solve's accepted steps ``(states, starts, sizes)``, for the stiffness probe of ``auto``
        self.last_steps: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._watch = None

    def functions(self) -> list[Any]:
        """The single-trajectory functions everything else is built from (what native code replaces)."""
        return [self._attempt_one, self._rhs_one, self._vjp]

    def use(self, functions: dict[str, Any], library: Path | None = None) -> None:
        """Build from now on from these same functions compiled (by name; see :mod:`ude_cli.engines.native`), and
        take the steps with ``dopri5_driver.c`` from ``library`` when it is given."""
        self._attempt_one, self._rhs_one, self._vjp = (functions[fn.name()] for fn in self.functions())
        self._mapped.clear()
        self._programs.clear()
        if library is not None:
            self._driver, self._check_driver = _Driver(library), True

    def _functions(self, n_traj: int) -> tuple[_Attempt, Call]:
        if n_traj not in self._mapped:
            attempt = map_over(self._attempt_one, n_traj, shared=(2, 3))  # (u, f0, t0, h, p, c, w)
            rhs = map_over(self._rhs_one, n_traj, shared=(0,))  # (t, u, p, c, w)
            self._mapped[n_traj] = (_Attempt(attempt), Call(rhs))
        return self._mapped[n_traj]

    def _program(self, n_steps: int, n_traj: int) -> Call:
        """The reverse sweep over ``n_steps`` accepted steps: ``(seed at the last state, the states before
        each step, the steps' starts and sizes, the seeds at those states (all last step first), p, c, w)
        -> the gradients for y0, p, c, w``. One graph per number of steps, kept for the next solves that take
        as many (the most recently used, up to :data:`KEPT_STEPS` steps in all).

        Written as a ``mapaccum`` of the step's vector-Jacobian product rather than CasADi's reverse mode of
        the forward steps: the same numbers (tests), 30 % faster here."""
        key = (n_steps, n_traj)
        if key in self._programs:
            self._programs.move_to_end(key)
            return self._programs[key]
        import casadi as ca

        n, n_p, n_c, n_w = self._sizes
        sweep = self._vjp.mapaccum("sweep", n_steps, 4)
        a, s, t0s, hs, g = (ca.MX.sym("a", n), ca.MX.sym("s", n, n_steps), ca.MX.sym("t0s", 1, n_steps),
                            ca.MX.sym("hs", 1, n_steps), ca.MX.sym("g", n, n_steps))
        p, c, w = ca.MX.sym("p", n_p), ca.MX.sym("c", n_c), ca.MX.sym("w", n_w)
        out = sweep(a, ca.DM.zeros(n_p), ca.DM.zeros(n_c), ca.DM.zeros(n_w), s, t0s, hs, g, p, c, w)
        one = ca.Function("sweep", [a, s, t0s, hs, g, p, c, w], [o[:, -1] for o in out])
        self._programs[key] = program = Call(map_over(one, n_traj, shared=(2, 3)))
        while len(self._programs) > 1 and sum(k for k, _ in self._programs) > KEPT_STEPS:
            self._programs.popitem(last=False)
        return program

    # -- the numerical solve --------------------------------------------------------------------
    def _steps(self, args: Sequence[np.ndarray], times: np.ndarray, watch: Any = None) -> tuple[np.ndarray, tuple, int]:
        """Accepted states ``(n_traj, K + 1, n)``; the steps' start times and sizes and the step count at
        each output time; the right-hand-side evaluations.

        In C (``dopri5_driver.c``) once native code is loaded, else here around CasADi's virtual machine:
        the same operations in the same order (sums of squares one value after another), the same steps."""
        if self._driver is None or watch is not None:
            return self._python_steps(args, times, watch)
        try:
            out = self._driver(args, times, self.settings)
        except SolverError:  # the loop here takes the same steps and knows where it failed: say so
            self._python_steps(args, times)
            raise
        if self._check_driver:  # once: the compiled loop must give the steps of the loop here, bit for bit
            self._check_driver = False
            here = self._python_steps(args, times)
            if not _same_steps(out, here):
                self._driver, self.driver_note = None, ("dopri5's compiled step loop gave other numbers than "
                                                        "the loop in Python (the compiler's settings?): not used")
                return here
        return out

    def _python_steps(self, args: Sequence[np.ndarray], times: np.ndarray,
                      watch: Any = None) -> tuple[np.ndarray, tuple, int]:
        """``watch(states, starts, sizes)``, if given, is called after 50, 100, 200, 400, ... accepted steps; a
        reason it returns stops the solve with :class:`Stiff` (the probe of ``solver.method: auto``)."""
        y0, p, c, w = args
        n_traj = y0.shape[0]
        attempt, rhs = self._functions(n_traj)
        t = float(times[0])
        (f0,) = rhs(t, y0, p, c, w)
        h = self._initial_step(rhs, t, y0, f0, p, c, w)
        attempt.start(y0, f0, p, c, w)
        scaled = None
        evaluations = 2
        states, starts, sizes, at_output = [y0], [], [], [0]
        for t_next in times[1:]:
            t_next = float(t_next)
            tries = 0
            while t < t_next:
                if tries >= self.settings.max_steps:
                    raise too_many_steps_error(self.settings, self._where(t, attempt.current(), scaled))
                tries += 1
                step = min(h, t_next - t)
                if not t + step > t:
                    raise underflow_error(self._where(t, attempt.current(), scaled))
                scaled = attempt(t, step)
                evaluations += 6
                ratio = math.sqrt(sum_of_squares(scaled) / scaled.size)
                if not math.isfinite(ratio):
                    raise underflow_error(self._where(t, attempt.current(), scaled))
                proposed = self._next_step(step, ratio)
                if ratio <= 1:
                    starts.append(t)
                    sizes.append(step)
                    t = t_next if step == t_next - t else t + step
                    states.append(attempt.accept())
                    if watch is not None and len(starts) >= WATCH_FIRST and len(starts) & (len(starts) - 1) == 0:
                        why = watch(np.stack(states, 1), np.array(starts), np.array(sizes))
                        if why:
                            raise Stiff(why)
                    if step < h:  # shortened to land on an output time: keep the step it would have taken
                        proposed = max(proposed, h)
                h = proposed
            at_output.append(len(starts))
        return np.stack(states, 1), (np.array(starts), np.array(sizes), at_output), evaluations

    def _where(self, t: float, y: np.ndarray, scaled: np.ndarray | None) -> str:
        """``, at t = ... on experiment ..., where x = ..., y = ...``: the trajectory whose error estimate is the
        largest (or not finite) in the last attempt."""
        from .bdf import describe_state

        j = 0
        if scaled is not None and y.shape[0] > 1:
            with np.errstate(all="ignore"):
                size = np.nan_to_num(np.abs(scaled.reshape(y.shape)), nan=np.inf).max(axis=1)
            j = int(np.argmax(size))
        name = self.trajectory_name(j)
        return f", at t = {t:.6g}{f' on {name}' if name else ''}, where {describe_state(self.state_names, y[j])}"

    @staticmethod
    def _next_step(step: float, ratio: float) -> float:
        if ratio == 0:
            return step * IFACTOR
        dfactor = 1.0 if ratio < 1 else DFACTOR
        return step * min(IFACTOR, max(SAFETY / _power(ratio, 1 / ORDER), dfactor))

    def _initial_step(self, rhs: Any, t: float, y: np.ndarray, f0: np.ndarray, p: Any, c: Any, w: Any) -> float:
        """Hairer, Norsett and Wanner's initial step (II.4), as torchdiffeq computes it; a right-hand side
        that is not finite at the start is the same failure as in torchdiffeq, an underflowing step."""
        rtol, atol = self.settings.rtol, self.settings.atol

        def rms(x: np.ndarray) -> float:
            return math.sqrt(sum_of_squares(x) / x.size)

        with np.errstate(all="ignore"):
            scale = atol + np.abs(y) * rtol
            d0, d1 = rms(y / scale), rms(f0 / scale)
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            (f1,) = rhs(t + h0, y + h0 * f0, p, c, w)
            d2 = rms((f1 - f0) / scale) / h0 if h0 != 0 else math.inf
            if d1 <= 1e-15 and d2 <= 1e-15:
                h1 = max(1e-6, h0 * 1e-3)
            else:
                h1 = _power(0.01 / max(d1, d2), 1.0 / ORDER)
            h = min(100 * h0, h1)
        if not (math.isfinite(h) and h > 0):
            raise underflow_error(self._where(t, y, None))
        return h

    def solve(self, inputs: Sequence[torch.Tensor], shape: tuple[int, int], times: np.ndarray,
              watch: Any = None) -> tuple[torch.Tensor, int]:
        """States at ``times`` ``(T, n_traj, n)``, differentiable with respect to ``inputs`` (``y0, p, c,
        *weights``; ``shape``: starts, experiments), and the right-hand-side evaluations of the solve.
        ``watch``: see :meth:`_python_steps` (the solve then steps here, not in the C driver)."""
        self._watch = watch
        out = _AdaptiveSolve.apply(self, times, shape, *inputs)
        return out, self._evaluations


class Stiff(Exception):
    """A solve stopped by its ``watch``: the steps show stiffness (the reason is the message)."""


def _same_steps(a: tuple, b: tuple) -> bool:
    """Two results of :meth:`AdaptiveSolver._steps`, bit for bit."""
    (sa, (ta, ha, oa), ea), (sb, (tb, hb, ob), eb) = a, b
    return (ea == eb and list(oa) == list(ob) and np.array_equal(np.asarray(ta), np.asarray(tb))
            and np.array_equal(np.asarray(ha), np.asarray(hb)) and np.array_equal(sa, sb))


def sum_of_squares(x: np.ndarray) -> float:
    """The sum of ``x``'s squares taken one value after another, as ``dopri5_driver.c`` takes it (numpy's
    sums group the terms otherwise, which changes the last bit)."""
    total = 0.0
    for v in x.ravel().tolist():
        total += v * v
    return total


def _power(x: float, y: float) -> float:
    """``x ** y`` with C's ``pow``, as ``dopri5_driver.c``; a negative or non-finite base gives NaN or inf
    (an error ratio or step that is not finite stops the solve as an underflow)."""
    try:
        return math.pow(x, y)
    except (ValueError, OverflowError):
        return math.nan


class _Driver:
    """``dopri5_driver.c``'s ``ude_dopri5`` in a compiled library, called through ctypes."""

    def __init__(self, library: Path):
        import ctypes

        lib = ctypes.CDLL(str(library))
        i, d, ptr = ctypes.c_longlong, ctypes.c_double, ctypes.c_void_p
        self._fn = lib.ude_dopri5
        self._fn.argtypes = [i, i, ptr, ptr, i, ptr, i, ptr, i, ptr, i, d, d, i, i, ptr, ptr, ptr, ptr, ptr]
        self._fn.restype = ctypes.c_int
        self._reverse = lib.ude_dopri5_reverse
        self._reverse.argtypes = [i, i, i, i, ptr, ptr, ptr, ptr, ptr, i, ptr, i, ptr, i, ptr, ptr, ptr, ptr]
        self._reverse.restype = ctypes.c_int
        self._capacity = 64  # accepted steps room is made for; doubled when a solve needs more

    def __call__(self, args: Sequence[np.ndarray], times: np.ndarray,
                 settings: SolverSettings) -> tuple[np.ndarray, tuple, int]:
        y0, p, c, w = (np.ascontiguousarray(a, dtype=np.float64) for a in args)
        times = np.ascontiguousarray(times, dtype=np.float64)
        n_traj, n = y0.shape
        at_output = np.empty(len(times), dtype=np.int64)
        counts = np.zeros(2, dtype=np.int64)
        while True:
            cap = self._capacity
            states, starts, sizes = np.empty((n_traj, cap + 1, n)), np.empty(cap), np.empty(cap)
            status = self._fn(n_traj, n, y0.ctypes.data, p.ctypes.data, p.shape[1], c.ctypes.data, c.shape[1],
                              w.ctypes.data, w.shape[1], times.ctypes.data, len(times), settings.rtol, settings.atol,
                              settings.max_steps, cap, states.ctypes.data, starts.ctypes.data, sizes.ctypes.data,
                              at_output.ctypes.data, counts.ctypes.data)
            if status != DRIVER_CAPACITY:
                break
            self._capacity *= 2
        if status == DRIVER_TOO_MANY_STEPS:
            raise too_many_steps_error(settings)
        if status == DRIVER_UNDERFLOW:
            raise underflow_error()
        _check(status)
        k = int(counts[0])
        return states[:, :k + 1, :], (starts[:k], sizes[:k], at_output.tolist()), int(counts[1])

    def reverse(self, states: np.ndarray, starts: np.ndarray, sizes: np.ndarray, seed: np.ndarray,
                p: np.ndarray, c: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
        """The reverse sweep (``ude_dopri5_reverse``): ``states`` as :meth:`__call__` returned them, ``seed``
        ``(n_traj, K + 1, n)``; the adjoints of ``y0, p, c, w``."""
        n_traj, k1, n = states.shape
        if states.strides[1:] != (n * 8, 8):
            states = np.ascontiguousarray(states)
        p, c, w, seed = (np.ascontiguousarray(a, dtype=np.float64) for a in (p, c, w, seed))
        out = [np.empty((n_traj, n)), np.empty((n_traj, p.shape[1])), np.empty((n_traj, c.shape[1])),
               np.empty((n_traj, w.shape[1]))]
        status = self._reverse(n_traj, n, k1 - 1, states.strides[0] // (8 * n), states.ctypes.data,
                               starts.ctypes.data, sizes.ctypes.data, seed.ctypes.data, p.ctypes.data, p.shape[1],
                               c.ctypes.data, c.shape[1], w.ctypes.data, w.shape[1], *(a.ctypes.data for a in out))
        _check(status)
        return out


def _check(status: int) -> None:
    """Raise for a status of ``dopri5_driver.c`` that is not a solver's failure (those are raised above)."""
    if status == DRIVER_NO_MEMORY:
        raise MemoryError("dopri5_driver.c: out of memory")
    if status != DRIVER_OK:
        raise RuntimeError(f"dopri5_driver.c: a compiled function failed (status {status})")


class _AdaptiveSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, solver: AdaptiveSolver, times: np.ndarray, shape: tuple[int, int],
                *tensors: torch.Tensor) -> torch.Tensor:
        args = numpy_inputs(tensors, *shape)
        states, (starts, sizes, at_output), solver._evaluations = solver._steps(args, times, solver._watch)
        solver.last_steps = (states, starts, sizes)
        ctx.solver, ctx.args, ctx.shape, ctx.driver = solver, args, shape, solver._driver
        ctx.steps, ctx.at_output, ctx.states = (starts, sizes), at_output, states
        ctx.save_for_backward(*tensors)
        return torch.from_numpy(states[:, at_output, :]).transpose(0, 1).to(tensors[0].dtype)  # (T, n_traj, n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        starts, sizes = ctx.steps
        n_traj, k1, n = ctx.states.shape
        seed = np.zeros((n_traj, k1, n))
        seed[:, ctx.at_output, :] = as_columns(grad.transpose(0, 1))
        _, p, c, w = ctx.args
        if ctx.driver is not None:  # the solve's own driver (native code may have arrived since)
            adjoints = ctx.driver.reverse(ctx.states, starts, sizes, seed, p, c, w)
        else:
            sweep = ctx.solver._program(k1 - 1, n_traj)  # k1 >= 2: every experiment has 2 or more times
            adjoints = sweep(seed[:, -1, :], ctx.states[:, -2::-1, :], starts[::-1], sizes[::-1],
                             seed[:, -2::-1, :], p, c, w)
        return (None, None, None, *torch_gradients(adjoints, ctx.saved_tensors, ctx.needs_input_grad[3:], *ctx.shape))


class _Attempt:
    """The attempt function called in place, with no allocation or argument passing per attempt.

    Two buffers of the function read and write two slots of ``(y, f)`` crosswise: an attempt reads
    the current slot and writes the other; accepting it makes the other slot current. Time, step and
    the parameters are bound once.
    """

    def __init__(self, fn: Any):
        shape = (fn.size2_out(0), fn.size1_out(0))
        self._sizes = [fn.nnz_in(i) for i in range(fn.n_in())]
        self._slots = [(np.empty(shape), np.empty(shape)) for _ in range(2)]
        self._scaled = np.empty(shape[0] * shape[1])
        self._t, self._h = np.zeros(1), np.zeros(1)
        self._buffers = []
        for current in range(2):
            buffer, evaluate = fn.buffer()
            (y, f), (y1, f1) = self._slots[current], self._slots[1 - current]
            for i, a in enumerate((y, f, self._t, self._h)):
                buffer.set_arg(i, a.reshape(-1).data)
            for i, a in enumerate((y1, f1, self._scaled)):
                buffer.set_res(i, a.reshape(-1).data)
            self._buffers.append((buffer, evaluate))
        self._bound: list[np.ndarray] = []
        self._current = 0

    def start(self, y0: np.ndarray, f0: np.ndarray, p: np.ndarray, c: np.ndarray, w: np.ndarray) -> None:
        """Bind the parameters and start from ``(y0, f0)``."""
        self._bound = [np.ascontiguousarray(a, dtype=np.float64).reshape(-1) for a in (p, c, w)]
        for i, a in enumerate((y0, f0, *self._bound)):  # CasADi reads as many values as it needs, unchecked
            expected = self._sizes[i if i < 2 else i + 2]
            if a.size != expected:
                raise ValueError(f"attempt: argument {i} has {a.size} values, expected {expected}")
        for buffer, _ in self._buffers:
            for i, a in enumerate(self._bound, start=4):
                buffer.set_arg(i, a.data if a.size else np.empty(0).data)
        self._current = 0
        y, f = self._slots[0]
        y[...], f[...] = y0, f0

    def __call__(self, t: float, h: float) -> np.ndarray:
        """Attempt a step of size ``h`` from ``t``; the scaled error estimate (flat; overwritten next call)."""
        self._t[0], self._h[0] = t, h
        self._buffers[self._current][1]()
        return self._scaled

    def current(self) -> np.ndarray:
        """The current state ``(n_traj, n)`` (a view)."""
        return self._slots[self._current][0]

    def accept(self) -> np.ndarray:
        """Take the last attempt; a copy of its new state."""
        self._current = 1 - self._current
        return self._slots[self._current][0].copy()
