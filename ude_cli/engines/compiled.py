"""Solves compiled into CasADi expression graphs: every start's and experiment's trajectory, and its
vector-Jacobian product, each in one call, with no Python per solver step.

Why: torchdiffeq steps in Python, so one training iteration of a small UDE is thousands of tiny torch
operations (tens of milliseconds) whatever the network's size. CasADi builds the same Runge-Kutta steps
once as an expression graph (milliseconds) and evaluates the graph and its reverse-mode derivative in
its virtual machine: about a millisecond for the solve and its gradient of the sample problem, against
45 ms. Where a C compiler is found, :mod:`ude_cli.engines.native` compiles the same functions in the background
(and dopri5's step loop, ``dopri5_driver.c``); the engine switches to them between two solves, with the
same numbers bit for bit: a training iteration of the sample problem then costs about 0.6 ms in all.

- Fixed-step methods (euler, midpoint, rk4): torchdiffeq's grid and Butcher tableaus, so the solution
  is torchdiffeq's to rounding (tested to 1e-12).
- ``dopri5`` (:mod:`ude_cli.engines.dopri5`): steps chosen with torchdiffeq's error norm and
  controller, landing on the output times instead of interpolating; the gradient is that of the
  accepted steps with their sizes held fixed (discretise-then-optimise).

:func:`ude_cli.config.reason_not_compiled` says when a model is solved by torchdiffeq instead, and
:func:`worth_compiling` when ``solver.engine: auto`` leaves it to torchdiffeq as the faster. The engine
computes in float64 whatever ``solver.dtype`` says (float32 only changes torchdiffeq's solves).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..expressions import casadi_sigmoid, parse_expression
from .native import Build, NativeLibrary, library, package_source, prepare

if TYPE_CHECKING:
    from ..fitting.neural import MLP
    from .base import OdeSpec
    from .bdf import StiffSolver
    from .torchdiffeq import SolverSettings

# -- the right-hand side of one trajectory, symbolically --------------------------------------------

def _activation(name: str) -> Callable[[Any], Any]:
    """CasADi counterparts of :data:`ude_cli.fitting.neural.ACTIVATIONS` (torch's definitions, term for term)."""
    import casadi as ca

    table: dict[str, Callable[[Any], Any]] = {
        "tanh": ca.tanh,
        "relu": lambda z: ca.if_else(z > 0, z, 0),  # derivative 0 at 0, as torch's (fmax gives 0.5)
        "gelu": lambda z: 0.5 * z * (1 + ca.erf(z / math.sqrt(2.0))),
        "softplus": lambda z: ca.if_else(z > 20, z, ca.log1p(ca.exp(z))),  # torch's threshold 20
        "rbf": lambda z: ca.exp(-z * z),
        "sigmoid": casadi_sigmoid,  # finite derivatives far below zero, as torch's
        "silu": lambda z: z * casadi_sigmoid(z),
    }
    return table[name]


class _Outputs:
    """A network's outputs where the compiled equations index them as ``env[name][..., i]`` (torch's
    leading batch dimensions do not exist here: only the output index counts)."""

    def __init__(self, column: Any):
        self.column = column

    def __getitem__(self, key: tuple) -> Any:
        return self.column[key[-1]]


class SymbolicRHS:
    """``f(t, u, p, c, w)`` of one trajectory as a CasADi function, from an :class:`~ude_cli.engines.base.OdeSpec`.

    ``u``: the states; ``p``: every mechanistic parameter's value (learned and fixed, in the spec's
    order); ``c``: the constants that differ between experiments; ``w``: every network's weights and
    biases, flattened as :func:`numpy_inputs` does. Constants shared by all experiments are numbers
    in the graph.
    """

    def __init__(self, spec: OdeSpec):
        import casadi as ca

        self.spec = spec
        self.states = list(spec.states)
        self.parameter_names = list(spec.parameters)
        self.experiment_constants = list(spec.experiment_constants)
        self.networks = dict(spec.networks)
        n_w = sum(p[0].numel() for net in self.networks.values() for p in (*net.weights, *net.biases))

        t = ca.SX.sym("t")
        u = ca.SX.sym("u", len(self.states))
        p = ca.SX.sym("p", len(self.parameter_names))
        c = ca.SX.sym("c", len(self.experiment_constants))
        w = ca.SX.sym("w", n_w)
        env: dict[str, Any] = {"t": t}
        env.update({n: p[i] for i, n in enumerate(self.parameter_names)})
        env.update({n: float(v) for n, v in spec.constants.items()})
        env.update({n: c[i] for i, n in enumerate(self.experiment_constants)})
        env.update({s: u[i] for i, s in enumerate(self.states)})
        offset = 0
        for name, net in self.networks.items():
            inputs = ca.vertcat(*[env[i] if i in env else parse_expression(i).compile("casadi")(env)
                                  for i in spec.network_inputs[name]])  # states, t, parameters, constants, formulas
            out, offset = _mlp(net, inputs, w, offset)
            env[name] = _Outputs(out)
        rates = []
        for s in self.states:
            r = spec.equations[s].compile("casadi", networks=list(self.networks))(env)
            rates.append(ca.SX(r) if isinstance(r, int | float) else r)
        self.f = ca.Function("f", [t, u, p, c, w], [ca.vertcat(*rates)])
        self._weights = [x for net in self.networks.values() for wb in zip(net.weights, net.biases, strict=True)
                         for x in wb]  # the order of w
        self._constant_columns: dict[tuple[int, ...], torch.Tensor] = {}

    # -- torch tensors in, per trajectory -------------------------------------------------------
    def pack(self, y0: torch.Tensor, p: torch.Tensor, experiments: Sequence[int]) -> list[torch.Tensor]:
        """``y0, p, c`` for every (start, experiment) of a group, ``(S * Bg, ·)`` each (``y0`` and ``p`` as
        :meth:`ude_cli.fitting.model.UDEModel.trajectory_inputs` gives them, differentiable), then the networks'
        weight tensors as they are (see :func:`numpy_inputs`)."""
        return [y0, p, self._constants(tuple(experiments)), *self._weights]

    def _constants(self, experiments: tuple[int, ...]) -> torch.Tensor:
        """The experiments' constants per trajectory ``(S * Bg, ·)``: the same every solve, built once."""
        if experiments not in self._constant_columns:
            S, Bg = self.spec.n_starts, len(experiments)
            values = self.spec.experiment_constants
            c = (torch.stack([values[n][list(experiments)] for n in self.experiment_constants], -1)
                 if self.experiment_constants else torch.zeros(Bg, 0, dtype=self.spec.dtype))
            self._constant_columns[experiments] = c[None].expand(S, Bg, c.shape[-1]).reshape(S * Bg, -1)
        return self._constant_columns[experiments]


def numpy_inputs(tensors: Sequence[torch.Tensor], n_starts: int, per_start: int) -> list[np.ndarray]:
    """``y0, p, c, w`` as CasADi columns ``(S * Bg, ·)``. The weights are flattened per start and repeated
    for each experiment here, in numpy: as torch operations they cost more than the solve's own call."""
    y0, p, c, *weights = tensors
    w = (np.concatenate([_numpy(x).reshape(n_starts, -1) for x in weights], 1)
         if weights else np.zeros((n_starts, 0)))
    return [as_columns(y0), as_columns(p), as_columns(c), np.repeat(w, per_start, axis=0) if per_start > 1 else w]


def _numpy(x: torch.Tensor) -> np.ndarray:
    """A tensor's values as float64 numpy (no copy when it is float64 already)."""
    x = x.detach()
    return (x if x.dtype == torch.float64 else x.to(torch.float64)).numpy()


def torch_gradients(adjoints: Sequence[np.ndarray | None], tensors: Sequence[torch.Tensor], needed: Sequence[bool],
                    n_starts: int, per_start: int) -> list[torch.Tensor | None]:
    """The adjoints of ``y0, p, c, w`` back onto ``tensors`` (a weight's gradient summed over experiments)."""
    y0, p, c, *weights = tensors
    out = [torch.from_numpy(np.ascontiguousarray(a)).to(x.dtype) if need and a is not None else None
           for a, x, need in zip(adjoints[:3], (y0, p, c), needed[:3], strict=True)]
    w_adj = adjoints[3]
    if per_start > 1 and w_adj is not None:
        w_adj = w_adj.reshape(n_starts, per_start, -1).sum(1)
    offset = 0
    for x, need in zip(weights, needed[3:], strict=True):  # numpy views, one torch tensor each: the cheapest
        size = x.numel() // n_starts
        if need and w_adj is not None:
            g = torch.from_numpy(w_adj[:, offset:offset + size].reshape(x.shape))
            out.append(g if g.dtype == x.dtype else g.to(x.dtype))
        else:
            out.append(None)
        offset += size
    return out


def _mlp(net, x: Any, w: Any, offset: int) -> tuple[Any, int]:
    """The network ``net`` (:class:`~ude_cli.fitting.neural.MLP`) at ``x``, its weights read from ``w[offset:]``."""
    import casadi as ca

    if not net.identity_in:
        x = (x - ca.DM(net.in_shift.tolist())) / ca.DM(net.in_scale.tolist())
    act = _activation(net.activation_name)
    layers = list(zip(net.weights, net.biases, strict=True))
    for k, (weight, _bias) in enumerate(layers):
        n_in, n_out = weight.shape[1], weight.shape[2]
        m = ca.reshape(w[offset:offset + n_in * n_out], n_out, n_in)  # stored (in, out) row-major: m = W^T
        offset += n_in * n_out
        b = w[offset:offset + n_out]
        offset += n_out
        x = ca.mtimes(m, x) + b
        if k < len(layers) - 1:
            x = act(x)
    if not net.identity_out:
        x = x * ca.DM(net.out_scale.tolist())
    return x, offset


# -- Runge-Kutta steps, as torchdiffeq writes them ------------------------------------------------

def fixed_step(method: str, f: Any) -> Any:
    """One step ``u1 = step(u, t0, h, p, c, w)`` of a fixed-step method, with torchdiffeq's arithmetic."""
    import casadi as ca

    rhs = f
    u, t0, h = ca.SX.sym("u", f.size1_in(1)), ca.SX.sym("t0"), ca.SX.sym("h")
    p, c, w = (ca.SX.sym(n, f.size1_in(i)) for i, n in ((2, "p"), (3, "c"), (4, "w")))

    def call(t: Any, y: Any) -> Any:
        return rhs(t, y, p, c, w)

    if method == "euler":
        dy = h * call(t0, u)
    elif method == "midpoint":
        half = 0.5 * h
        f0 = call(t0, u)
        dy = h * call(t0 + half, u + f0 * half)
    elif method == "rk4":  # torchdiffeq's rk4_alt_step_func (the 3/8 rule)
        k1 = call(t0, u)
        k2 = call(t0 + h * (1 / 3), u + h * k1 * (1 / 3))
        k3 = call(t0 + h * (2 / 3), u + h * (k2 - k1 * (1 / 3)))
        k4 = call(t0 + h, u + h * (k1 - k2 + k3))
        dy = (k1 + 3 * (k2 + k3) + k4) * h * 0.125
    else:
        raise ValueError(f"not a compiled fixed-step method: {method}")
    return ca.Function("step", [u, t0, h, p, c, w], [u + dy])


#: right-hand-side evaluations per step of the fixed-step methods (dopri5 counts its attempts)
STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}


def map_over(fn: Any, n_traj: int, shared: Sequence[int] = ()) -> Any:
    """``fn`` for ``n_traj`` trajectories side by side (a column each, evaluated one after another: CasADi's
    thread map was slower here); the inputs ``shared`` (e.g. time) are given once for all."""
    if n_traj == 1:
        return fn
    return fn.map(fn.name() + "_map", "serial", n_traj, [i for i in range(fn.n_in()) if i in shared], [], {})


class Call:
    """A CasADi function called on numpy arrays in place, without CasADi's argument conversion (which
    costs ~60 microseconds a call, twenty times the evaluation of a small step).

    CasADi matrices are column-major, so an ``(rows, cols)`` CasADi argument is a C-ordered
    ``(cols, rows)`` array: a column per trajectory is an ``(n_traj, n)`` array, as torch holds it.
    """

    def __init__(self, fn: Any):
        self.fn = fn
        self._buffer, self._evaluate = fn.buffer()
        self._in_sizes = [fn.nnz_in(i) for i in range(fn.n_in())]
        self._out_shapes = [(fn.size2_out(i), fn.size1_out(i)) for i in range(fn.n_out())]

    def __call__(self, *args: Any) -> list[np.ndarray]:
        keep = []
        for i, (a, size) in enumerate(zip(args, self._in_sizes, strict=True)):
            a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1) if size else np.empty(0)  # 0: not used
            if a.size != size:
                raise ValueError(f"{self.fn.name()}: argument {i} has {a.size} values, expected {size}")
            keep.append(a)
            self._buffer.set_arg(i, a.data)  # a memoryview of a
        outs = [np.empty(shape) for shape in self._out_shapes]
        for i, o in enumerate(outs):
            self._buffer.set_res(i, o.reshape(-1).data)
        self._evaluate()
        return outs


class Program:
    """A compiled solve of ``n_traj`` trajectories over a fixed sequence of steps, and its reverse mode.

    ``forward(y0, p, c, w)`` -> the states after every step that ends on an output time, with the
    initial state first: ``(n, n_traj * T)``, trajectory by trajectory. ``reverse(y0, p, c, w, out, seed)``
    -> the seed pulled back onto each input.
    """

    def __init__(self, step: Any, starts: np.ndarray, sizes: np.ndarray, output_steps: Sequence[int],
                 n_traj: int):
        import casadi as ca

        n, n_p, n_c, n_w = (step.size1_in(i) for i in (0, 3, 4, 5))
        y0, p, c, w = ca.MX.sym("y0", n), ca.MX.sym("p", n_p), ca.MX.sym("c", n_c), ca.MX.sym("w", n_w)
        k = len(starts)
        states = step.mapaccum("steps", k)(y0, ca.DM(starts).T, ca.DM(sizes).T, p, c, w)  # (n, K)
        out = ca.horzcat(y0, states[:, [j - 1 for j in output_steps]])
        one = ca.Function("solve", [y0, p, c, w], [out])
        forward = map_over(one, n_traj)
        self.forward, self.reverse = Call(forward), Call(forward.reverse(1))
        self.n_outputs = len(output_steps) + 1
        self.n_steps = k
        self.n_traj = n_traj


class _CompiledSolve(torch.autograd.Function):
    """Torch's view of a :class:`Program`: ``(y0, p, c, *weights)`` -> states ``(T, n_traj, n)``, with gradients."""

    @staticmethod
    def forward(ctx, program: Program, shape: tuple[int, int], *tensors: torch.Tensor) -> torch.Tensor:
        args = numpy_inputs(tensors, *shape)
        (out,) = program.forward(*args)  # (n_traj * T, n)
        ctx.program, ctx.shape, ctx.args, ctx.out = program, shape, args, out
        ctx.save_for_backward(*tensors)
        n = out.shape[1]
        return torch.from_numpy(out.reshape(program.n_traj, program.n_outputs, n)).transpose(0, 1).to(tensors[0].dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        seed = as_columns(grad.transpose(0, 1))
        adjoints = ctx.program.reverse(*ctx.args, ctx.out, seed)
        return (None, None, *torch_gradients(adjoints, ctx.saved_tensors, ctx.needs_input_grad[2:], *ctx.shape))


def as_columns(x: torch.Tensor) -> np.ndarray:
    """A tensor as float64 numpy, C-ordered (a column per leading index, in CasADi's terms)."""
    return np.ascontiguousarray(_numpy(x))


def run(program: Program, inputs: Sequence[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """The program's states ``(T, n_traj, n)``, differentiable with respect to ``inputs`` (``shape``: starts,
    experiments)."""
    return _CompiledSolve.apply(program, shape, *inputs)


# -- the compiled engine of a model ----------------------------------------------------------------

#: ``solver.method: auto`` looks at a dopri5 solve's steps for stiffness again when it took this many times the
#: steps of the solve it last looked at (and at least GROWTH_FLOOR steps)
GROWTH, GROWTH_FLOOR = 4, 256
#: a solve whose states exceed this multiple of the data's (and initial states') largest magnitude is a blow-up:
#: its steps are not read for stiffness
BLOWUP = 1e3

#: ``engine: auto`` compiles while trajectories x instructions of the right-hand side stay below this.
#: The compiled cost grows with both (~10-30 ns per instruction per evaluation, forward and reverse);
#: torchdiffeq's is mostly Python overhead, ~0.3 ms per batched evaluation. Measured on the
#: Lotka-Volterra UDE (2 cores): 2-5-5-5-2 network (282 instructions) x 64 trajectories: 62 against
#: 75 ms per iteration; 32-32 network (3,724) x 8: 71 against 59 ms; 64-64 x 1 (13,580): 16 against 55 ms.
AUTO_INSTRUCTIONS = 20_000
#: The same limit when the functions will run as native code (:mod:`ude_cli.engines.native`), ~8 times faster.
#: Measured, native against torchdiffeq, ms per iteration: 5-5-5 x 256 trajectories 14 against 96;
#: 32-32 x 8: 5.3 against 61; 64-64 x 16: 36 against 79 (but 64-64 is too large to compile quickly).
AUTO_INSTRUCTIONS_NATIVE = 200_000


def worth_compiling(engine: CompiledEngine, n_trajectories: int) -> bool:
    """Whether the compiled engine is the faster one for this right-hand side and batch (see
    :data:`AUTO_INSTRUCTIONS`)."""
    limit = AUTO_INSTRUCTIONS_NATIVE if engine.native_build().viable else AUTO_INSTRUCTIONS
    return n_trajectories * engine.symbolic.f.n_instructions() <= limit


def clearly_too_large(networks: Mapping[str, MLP], n_trajectories: int) -> bool:
    """True when the networks alone make the graph far too large to be the faster (an estimate from the
    layer sizes, so that a large network is not built as a graph only to be turned down: a 256-256
    network takes a second to build)."""
    from .native import MAX_INSTRUCTIONS

    estimate = sum(2 * w.shape[1] * w.shape[2] + 4 * w.shape[2]
                   for net in networks.values() for w in net.weights)
    compilable = 18 * estimate <= 2 * MAX_INSTRUCTIONS  # a step and its gradient: ~18 right-hand sides
    return n_trajectories * estimate > 4 * (AUTO_INSTRUCTIONS_NATIVE if compilable else AUTO_INSTRUCTIONS)


class CompiledEngine:
    """Solves an :class:`~ude_cli.engines.base.OdeSpec`'s groups on their data grids with compiled programs.

    Arguments:
        spec: the problem (its ``settings``, unless ``settings`` is given).
        settings: other solver settings (``ude check``'s stiffness probe: ``auto``).
    """

    def __init__(self, spec: OdeSpec, settings: SolverSettings | None = None):
        self.spec = spec
        self.settings = settings = settings if settings is not None else spec.settings
        self.symbolic = SymbolicRHS(spec)
        #: the method solving now: ``auto`` starts as dopri5 and may become bdf (:meth:`solver_choice`)
        self.method = "dopri5" if settings.method == "auto" else settings.method
        self.auto = settings.method == "auto"
        #: right-hand-side evaluations of the last solve (the model adds them to its count)
        self.evaluations = 0
        self.choice_reason = ""  # why auto chose what it solves with
        self._probed: set[int] = set()  # groups whose first dopri5 solve auto has probed for stiffness
        self._bdf_failed = False  # auto went to bdf on signs of stiffness, bdf failed, dopri5 stayed (_keep_dopri5)
        #: later dopri5 failures that bdf solved once without a switch (no sign of stiffness in dopri5's steps)
        self.one_off_bdf = 0
        self._looked: dict[int, int] = {}  # group -> accepted steps of the solve auto last looked at
        self._fixed: dict[int, Program] = {}
        self._stiff: StiffSolver | None = None  # bdf's, built when bdf (or auto's stiffness probe) needs it
        if self.method == "bdf":
            self._stiff = self._stiff_solver()
            self.functions: list[Any] = []  # CVODES steps in C already; nothing for native code to compile
            self.choice_reason = "solver.method: bdf"
        elif self.method == "dopri5":
            from .dopri5 import AdaptiveSolver

            self._adaptive = AdaptiveSolver(self.symbolic.f, settings)
            self._adaptive.state_names, self._adaptive.trajectory_name = self.symbolic.states, self._trajectory_name
            self.functions = self._adaptive.functions()
        else:
            self._step = fixed_step(self.method, self.symbolic.f)
            self.functions = [self._step, self._step.reverse(1)]  # the reverse: what Program's reverse mode calls
        self.native: NativeLibrary | None = None
        self.native_since: float | None = None  # when the first solve in native code began
        self._build: Build | None = None
        self._vm_solves = 0  # solves in the virtual machine before the switch
        self._group = 0  # the group being solved (for failure messages)

    def _stiff_solver(self) -> StiffSolver:
        from .bdf import StiffSolver

        return StiffSolver(self.symbolic.f, self.settings, self.symbolic.states, self._trajectory_name)

    def _trajectory_name(self, j: int) -> str:
        """Trajectory ``j`` of the group being solved, as a user knows it."""
        spec = self.spec
        experiments = spec.grids[self._group].experiments
        start = f"start {j // len(experiments) + 1}" if spec.n_starts > 1 else ""
        if len(spec.experiment_names) == 1:
            return start
        name = spec.experiment_names[experiments[j % len(experiments)]]
        return f"experiment '{name}'" + (f" ({start})" if start else "")

    def solver_choice(self) -> dict[str, str]:
        """``solver_method`` (what solved last) and ``solver_method_reason`` for ``metrics.json``."""
        if self.method == "bdf":
            return {"solver_method": "bdf", "solver_method_reason": self.choice_reason}
        if self.auto and self.one_off_bdf:
            return {"solver_method": self.method, "solver_method_reason": (
                f"solver.method: auto: dopri5's steps showed no stiffness; {self.one_off_bdf} solve(s) that dopri5 "
                f"failed (trial points that blow up) were solved once by bdf, without switching")}
        if self.auto:
            return {"solver_method": self.method, "solver_method_reason": self.choice_reason or (
                "solver.method: auto: dopri5's steps showed no stiffness and no dopri5 solve failed")}
        return {"solver_method": self.method, "solver_method_reason": f"solver.method: {self.method}"}

    def undecided(self, k: int) -> bool:
        """Whether ``solver.method: auto`` has yet to look at group ``k``'s first solve on its data grid."""
        return self.auto and self.method == "dopri5" and k not in self._probed

    def switch_to_stiff(self, reason: str) -> None:
        """Solve with bdf from now on (``solver.method: auto``), saying why."""
        self.method = "bdf"
        self._stiff = self._stiff or self._stiff_solver()
        self.choice_reason = f"solver.method: auto switched from dopri5 to bdf: {reason}"

    def native_build(self) -> Build:
        """What compiling :attr:`functions` takes, or why it will not happen (:func:`ude_cli.engines.native.prepare`)."""
        if self._build is None:
            self._build = prepare(self.functions, package_source("dopri5_driver.c") if self.method == "dopri5" else "")
        return self._build

    def start_native(self) -> None:
        """Start compiling :attr:`functions` in the background (or load them from the cache)."""
        if self.method != "bdf":
            self.native = library(self.native_build())

    def _switch_to_native(self) -> None:
        """Solve in native code from now on if its library is ready and gives the virtual machine's numbers."""
        functions = self.native.poll() if self.native is not None else None
        if functions is None:
            self._vm_solves += 1
            return
        assert self.native is not None  # the functions are its
        if not self.same_numbers(functions):
            self.native.refuse("the compiled library's numbers differ from the virtual machine's (the compiler's "
                               "floating-point settings? UDE_CC, CC)")
            return
        if self.method == "dopri5":
            self._adaptive.use(functions, self.native.path)
        else:
            self._step = functions[self._step.name()]
            self._fixed.clear()
        self.native_since = time.perf_counter()

    def same_numbers(self, functions: dict[str, Any]) -> bool:
        """Whether ``functions`` give :attr:`functions`' numbers bit for bit on sample inputs."""
        rng = np.random.default_rng(0)
        for fn in self.functions:
            args = [rng.uniform(0.05, 1.0, fn.nnz_in(i)) for i in range(fn.n_in())]
            ours, theirs = fn.call(args), functions[fn.name()].call(args)
            if not all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
                       for a, b in zip(ours, theirs, strict=True)):
                return False
        return True

    def native_status(self) -> dict[str, Any]:
        """Whether solves run in native code by now, and how it came (for ``metrics.json``)."""
        if self.method == "bdf":
            return {"native_code": False, "native_code_note": "bdf: CVODES steps in its own compiled C; the "
                                                              "right-hand side runs in CasADi's virtual machine"}
        native = self.native
        if native is None:
            return {"native_code": False, "native_code_note": "CasADi's virtual machine: native code not started"}
        if self.native_since is not None:
            if native.cached:
                how = "loaded from the cache"
            elif self._vm_solves == 0:
                how = f"compiled earlier in this process ({native.seconds:.1f} s)"
            else:
                how = f"compiled in {native.seconds:.1f} s while the first solves ran in CasADi's virtual machine"
            dropped = self.method == "dopri5" and self._adaptive.driver_note
            return {"native_code": True, "native_code_note": how + (f"; {dropped}" if dropped else "")}
        why = native.reason or "the C compiler had not finished when training ended (the next fit will load it)"
        return {"native_code": False, "native_code_note": f"CasADi's virtual machine: {why}"}

    def solve_group(self, k: int, y0: torch.Tensor, p: torch.Tensor, times: np.ndarray | None = None,
                    networks: bool = True, stops: np.ndarray | None = None) -> torch.Tensor:
        """Group ``k``'s solution on its grid (or on ``times``, which start at its t0: adaptive methods only),
        ``(T, S, Bg, n)``, as :meth:`UDEModel.solve_group` returns it, from the initial states ``y0`` and parameter
        values ``p`` of its trajectories (:meth:`UDEModel.trajectory_inputs`); ``networks=False``: the mechanism
        alone (every network's output 0: all its weights and biases 0). dopri5 lands on ``stops`` too (the switches
        of a ``where`` in time, :mod:`ude_cli.fitting.switches`); bdf and the fixed-step methods take none."""
        if self.native_since is None and self.method != "bdf":
            self._switch_to_native()
        g = self.spec.grids[k]
        self._group = k
        inputs = self.symbolic.pack(y0, p, g.experiments)
        if not networks:
            inputs = inputs[:3] + [torch.zeros_like(x) for x in inputs[3:]]
        shape = (self.spec.n_starts, len(g.experiments))  # every experiment has 2 or more times (data.py)
        grid = g.times if times is None else np.asarray(times, dtype=np.float64)
        rows = None
        if stops is not None and self.method == "dopri5":
            full = np.union1d(grid, stops)
            rows, grid = np.searchsorted(full, grid), full
        if self.method == "dopri5" and self.auto and k not in self._probed:
            sol, evaluations = self._probe(k, inputs, shape, grid)
        elif self.method == "dopri5":
            sol, evaluations = self._adaptive_solve(inputs, shape, grid)
            if self.auto and times is None:
                self._watch_growth(k, inputs, shape)
        elif self.method == "bdf":
            assert self._stiff is not None  # built with the method bdf (switch_to_stiff)
            sol, evaluations = self._stiff.solve(inputs, shape, grid)
        else:
            if times is not None:
                raise ValueError("the compiled fixed-step methods solve on the data's grid only")
            if k not in self._fixed:
                self._fixed[k] = self._fixed_program(k, len(inputs[0]))
            program = self._fixed[k]
            sol = run(program, inputs, shape)
            evaluations = STAGES[self.method] * program.n_steps
        self.evaluations = evaluations
        sol = sol.reshape(len(grid), self.spec.n_starts, len(g.experiments), -1)
        return sol if rows is None else sol[torch.as_tensor(rows)]

    def solve_batch(self, y0: torch.Tensor, p: torch.Tensor, experiments: Sequence[int], grid: np.ndarray
                    ) -> torch.Tensor:
        """Trajectories from ``y0`` ``(S, B, n)`` with parameter values ``p`` ``(S * B, ·)`` (trajectory ``b`` with
        experiment ``experiments[b]``'s constants) on ``grid`` by the adaptive method, ``(T, S, B, n)``: multiple
        shooting's segments of an autonomous system, all at once (the caller shifts each segment's times to start
        at ``grid[0]``)."""
        if self.method != "dopri5":
            raise ValueError("solve_batch needs the adaptive method")
        if self.native_since is None:
            self._switch_to_native()
        inputs = self.symbolic.pack(y0.reshape(-1, y0.shape[-1]), p, list(experiments))
        shape = (self.spec.n_starts, len(experiments))
        sol, evaluations = self._adaptive_solve(inputs, shape, np.asarray(grid, dtype=np.float64))
        self.evaluations = evaluations
        return sol.reshape(len(grid), self.spec.n_starts, len(experiments), -1)

    def _adaptive_solve(self, inputs: list[torch.Tensor], shape: tuple[int, int], grid: np.ndarray, watch: Any = None):
        """dopri5; under ``auto`` a failure, or stiffness seen by ``watch``, switches to bdf, which solves again."""
        from .dopri5 import Stiff
        from .torchdiffeq import SolverError

        failed, reason = None, self.choice_reason
        try:
            return self._adaptive.solve(inputs, shape, grid, watch)
        except SolverError as exc:
            if not self.auto:
                raise
            failed = exc
            self.switch_to_stiff(f"dopri5 failed ({exc.message})")
        except Stiff as exc:
            self.switch_to_stiff(str(exc))
        assert self._stiff is not None  # switch_to_stiff built it
        try:
            result = self._stiff.solve(inputs, shape, grid)
        except SolverError as exc:
            if failed is None:  # dopri5 did not fail, it only looked stiff: it solves it, and stays the method
                self._keep_dopri5(exc)
                return self._adaptive.solve(inputs, shape, grid)
            # both failed: no sign of stiffness, so dopri5 stays the method (the fit may roll back and retry)
            self.method, self.choice_reason = "dopri5", reason
            raise SolverError(f"{failed.message}; bdf, tried next by solver.method: auto, failed too: {exc.message}",
                              hint=exc.hint) from None
        if failed is not None and watch is None and self._blows_up(result[0]):
            # a later failure whose solution runs far beyond the data is a trial point that blows up (a line
            # search overshooting), not stiffness: bdf solves it this once, and dopri5 stays the method
            self.method, self.choice_reason = "dopri5", reason
            self.one_off_bdf += 1
        return result

    def _blows_up(self, solution: Any) -> bool:
        """Whether a solution leaves :data:`BLOWUP` times the data's largest magnitude (or is not finite)."""
        values = np.abs(np.asarray(solution.detach() if torch.is_tensor(solution) else solution, dtype=float))
        return bool(not np.all(np.isfinite(values)) or values.max(initial=0.0) > BLOWUP * self.spec.scale)

    def _watch_growth(self, k: int, inputs: list[torch.Tensor], shape: tuple[int, int]) -> None:
        """Under ``auto``, after a dopri5 solve on the data's grid that took :data:`GROWTH` times the steps of
        the group's last look (and at least :data:`GROWTH_FLOOR`): look at its steps for stiffness again;
        stiff, the next solves are bdf's (this one's solution stands: dopri5 met its tolerance)."""
        from .bdf import stiffness

        assert self._adaptive.last_steps is not None  # the solve just made
        states, starts, sizes = self._adaptive.last_steps
        if len(starts) < max(GROWTH * self._looked.get(k, 0), GROWTH_FLOOR):
            return
        if self._blows_up(states) or self._bdf_failed:
            return  # a trajectory far beyond the data is a blow-up at a trial point, not a sign of stiffness
        self._looked[k] = len(starts)
        if self._stiff is None:
            self._stiff = self._stiff_solver()
        why = stiffness(self._stiff, states, starts, sizes, numpy_inputs(inputs, *shape))
        if why is not None:
            self.switch_to_stiff(f"{why}, in a later solve of the fit")

    def _probe(self, k: int, inputs: list[torch.Tensor], shape: tuple[int, int], grid: np.ndarray):
        """Group ``k``'s first solve under ``auto``: dopri5 with its accepted steps read for stiffness as it goes
        and at the end (:func:`ude_cli.engines.bdf.stiffness`); stiff, the group is solved by bdf (unless bdf fails
        there: :meth:`_keep_dopri5`)."""
        from .bdf import stiffness
        from .torchdiffeq import SolverError

        self._probed.add(k)
        if self._stiff is None:
            self._stiff = self._stiff_solver()  # its Jacobian function, for the probe
        stiff = self._stiff
        args = numpy_inputs(inputs, *shape)

        def watch(states: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> str | None:
            return stiffness(stiff, states, starts, sizes, args)

        sol, evaluations = self._adaptive_solve(inputs, shape, grid, watch)
        if self.method == "bdf":  # stiff, or dopri5 failed: bdf solved it
            return sol, evaluations
        assert self._adaptive.last_steps is not None  # the solve just made
        states, starts, sizes = self._adaptive.last_steps
        self._looked[k] = len(starts)
        why = watch(states, starts, sizes)
        if why is None:
            return sol, evaluations
        self.switch_to_stiff(why)
        try:
            return self._stiff.solve(inputs, shape, grid)
        except SolverError as exc:  # dopri5's solution stands (it met its tolerance)
            self._keep_dopri5(exc)
            return sol, evaluations

    def _keep_dopri5(self, exc: Exception) -> None:
        """``auto`` went to bdf on signs of stiffness and bdf failed where dopri5 does not: dopri5 stays the method,
        and a later sign of stiffness does not switch again (bench/borghans_global.py's fourth start: CVODES's
        Newton iteration failed at t = 0 on a point dopri5 solves in 141 432 evaluations)."""
        why = str(getattr(exc, "message", exc)).split(";")[0]
        self.method = "dopri5"
        self.choice_reason = (f"solver.method: auto kept dopri5: the solution looked stiff, but bdf failed ({why})")
        self._bdf_failed = True

    def _fixed_program(self, k: int, n_traj: int) -> Program:
        from .torchdiffeq import check_fixed_steps, grid_through_outputs

        times = torch.tensor(self.spec.grids[k].times, dtype=torch.float64)  # not the model's dtype: the
        check_fixed_steps(times, self.settings)  # output times are looked up in this grid
        assert self.settings.step is not None  # a fixed-step method has its step
        grid = grid_through_outputs(self.settings.step)(None, None, times).numpy()
        output_steps = [int(j) for j in np.searchsorted(grid, times.numpy()[1:])]
        return Program(self._step, grid[:-1], np.diff(grid), output_steps, n_traj)


def stiffness_note(spec: OdeSpec, inputs: Callable[[Sequence[int]], tuple[torch.Tensor, torch.Tensor]],
                   engine: CompiledEngine | None = None) -> str | None:
    """What ``ude check`` says about stiffness at the initial guess (None: nothing to say): solved as
    ``solver.method: auto`` would solve it, by dopri5 probed for stiffness (:meth:`CompiledEngine._probe`).

    Arguments:
        spec: the problem.
        inputs: experiments -> the initial states and parameter values of their trajectories
            (:meth:`ude_cli.fitting.model.UDEModel.trajectory_inputs`).
        engine: the model's own compiled engine, if it has one (with ``solver.method: auto`` it decides).
    """
    from dataclasses import replace

    from .torchdiffeq import SolverError

    method = spec.settings.method
    if method == "bdf":
        return None
    if method == "auto" and engine is not None:
        pass
    elif clearly_too_large(spec.networks, spec.n_starts * len(spec.experiment_names)):
        return None  # not built as a graph only to probe it
    else:
        try:
            engine = CompiledEngine(spec, replace(spec.settings, method="auto", step=None))
            with torch.no_grad():
                for k, g in enumerate(spec.grids):
                    engine.solve_group(k, *inputs(g.experiments))
        except SolverError:
            return None  # bdf fails too where dopri5 did not: nothing better to suggest
    if engine.method != "bdf":
        return None
    reason = engine.choice_reason.removeprefix("solver.method: auto switched from dopri5 to bdf: ")
    if method == "auto":
        return f"the equations are stiff at the initial guess ({reason}): solver.method auto solves them with bdf"
    return (f"the equations are stiff at the initial guess ({reason}): solver.method: bdf (or auto) solves them "
            f"faster than {method}")
