"""A :class:`Problem` built into torch: parameters, initial states, networks, the hybrid right-hand
side, and the simulation of every experiment at its observation times.

Experiments that start at the same time are solved together as one batch on the union of their
time grids, so that a fit with many experiments costs about as much as one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from ..config import STIFF_METHODS, reason_not_compiled
from ..engines.torchdiffeq import SolverSettings, solve
from ..problem import Problem, default_step
from .events import Jumps, Piece, Schedule, Triggers, before_times, joined, pieces, schedule
from .hybrid import HybridRHS
from .neural import MLP
from .parameters import InitialStates, NoiseParameterSet, ParameterSet

if TYPE_CHECKING:
    from ..engines.base import OdeSpec
    from ..engines.compiled import CompiledEngine

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class Group:
    """Experiments solved together: same start time, union of their time grids."""

    t0: float
    experiments: list[int]  # indices into the dataset's experiments (= batch positions)
    times: np.ndarray  # (T,) union grid, times[0] = t0
    positions: list[np.ndarray]  # per experiment: indices of its observation times in `times`
    observed: np.ndarray  # (T, Bg, n) observations on the union grid, NaN where none
    train: np.ndarray  # (T, Bg, n) bool: observed and in the training window
    valid: np.ndarray  # (T, Bg, n) bool: observed and in the validation window
    observations: np.ndarray  # (T, Bg, n_observables): every observable on the union grid, NaN where none
    obs_train: np.ndarray  # (T, Bg, n_observables) bool: observed and in the training window
    obs_valid: np.ndarray  # (T, Bg, n_observables) bool: observed and in the validation window
    #: the jumps of the states (model.events) that every experiment of the group has (:mod:`.events`)
    jumps: Schedule = ()
    #: the jump times at which an observation sees the states before the jump (``observed: before``)
    before: frozenset[float] = frozenset()
    #: ``times`` cut at the jumps: each piece's times, the events at its start, and whether its first time is seen
    #: before them (:func:`.events.pieces`)
    pieces: list[Piece] = field(default_factory=list)


def make_groups(problem: Problem) -> list[Group]:
    """The experiments grouped by start time and schedule of jumps (model.events), each group on the union of
    its experiments' times and its jump times up to the last of them."""
    ds = problem.dataset
    starts = [problem.t0 if problem.t0 is not None else float(e.t[0]) for e in ds.experiments]
    schedules = [schedule(problem.events, e) for e in ds.experiments]
    groups: list[Group] = []
    for t0, jumps in dict.fromkeys(zip(starts, schedules, strict=True)):
        members = [b for b, key in enumerate(zip(starts, schedules, strict=True)) if key == (t0, jumps)]
        times = np.unique(np.concatenate([[t0], *[ds.experiments[b].t for b in members]]))
        times = np.union1d(times, [t for t, _ in jumps if t0 < t < times[-1]])
        n = len(ds.states)
        obs = np.full((len(times), len(members), n), np.nan)
        train = np.zeros(obs.shape, dtype=bool)
        observations = np.full((len(times), len(members), len(ds.observables)), np.nan)
        obs_train = np.zeros(observations.shape, dtype=bool)
        positions = []
        for k, b in enumerate(members):
            e = ds.experiments[b]
            pos = np.searchsorted(times, e.t)
            positions.append(pos)
            obs[pos, k, :] = e.values
            train[pos, k, :] = np.isfinite(e.values) & e.train[:, None]
            observations[pos, k, :] = e.observations
            obs_train[pos, k, :] = np.isfinite(e.observations) & e.train[:, None]
        valid = np.isfinite(obs) & ~train
        before = before_times(problem.events, jumps)
        groups.append(Group(t0=t0, experiments=members, times=times, positions=positions, observed=obs,
                            train=train, valid=valid, observations=observations, obs_train=obs_train,
                            obs_valid=np.isfinite(observations) & ~obs_train, jumps=jumps,
                            before=before, pieces=pieces(times, jumps, at_start=True, before=before)))
    return groups


def load_weights(net: MLP, path: Path, where: str) -> None:
    """Set every start's weights of ``net`` from a .npz file of ``weight0, bias0, ...`` (PyTorch layout: a
    weight is ``(out, in)``); a missing file or a wrong shape is a :class:`~ude_cli.errors.ConfigError`."""
    from ..errors import ConfigError

    try:
        with np.load(path) as arrays:
            stored = {k: np.asarray(arrays[k], dtype=float) for k in arrays.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", where=where) from None
    set_weights(net, stored, where, str(path))


def set_weights(net: MLP, stored: dict[str, np.ndarray], where: str, path: str = "the weights") -> None:
    """Every start's weights of ``net`` from ``weight0, bias0, ...`` (PyTorch layout)."""
    from ..errors import ConfigError

    with torch.no_grad():
        for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            want_w, want_b = (w.shape[2], w.shape[1]), (b.shape[2],)
            got_w, got_b = stored.get(f"weight{k}"), stored.get(f"bias{k}")
            if got_w is None or got_b is None or got_w.shape != want_w or got_b.reshape(-1).shape != want_b:
                raise ConfigError(f"{path}: layer {k} needs weight{k} of shape {want_w} and bias{k} of {want_b[0]}; "
                                  f"got {None if got_w is None else got_w.shape}", where=where)
            w.copy_(torch.tensor(got_w.T, dtype=w.dtype).expand_as(w))
            b.copy_(torch.tensor(got_b.reshape(1, -1), dtype=b.dtype).expand_as(b))
        if len(stored) != 2 * len(net.weights):
            raise ConfigError(f"{path}: {len(stored)} arrays for {len(net.weights)} layers", where=where)


def network_scaling(problem: Problem, name: str) -> tuple[list[float], list[float], list[float]]:
    """Input shift/scale and output scale of a network (identity when ``normalize`` is off)."""
    spec = problem.networks[name]
    ds = problem.dataset
    n_in = len(spec.inputs)
    if not spec.normalize:
        return [0.0] * n_in, [1.0] * n_in, [1.0] * spec.outputs
    mean, std = ds.state_stats()
    shift, scale = [], []
    for inp in spec.inputs:
        if inp == "t":
            t_all = np.concatenate([e.t for e in ds.experiments])
            shift.append(float((t_all.min() + t_all.max()) / 2))
            scale.append(float(max((t_all.max() - t_all.min()) / 2, 1e-12)))
            continue
        if inp not in problem.states:  # a parameter or constant: used as it is
            shift.append(0.0)
            scale.append(1.0)
            continue
        j = problem.states.index(inp)
        if inp in ds.columns:
            shift.append(float(mean[j]))
            scale.append(float(std[j]))
        else:
            v = _initial_magnitude(problem, inp)
            shift.append(0.0)
            scale.append(v)
    out_scale = []
    for i in range(spec.outputs):
        state = next((s for s, e in problem.equations.items()
                      if (name, i) in e.network_refs or (i == 0 and name in e.names)), None)
        out_scale.append(_rate_scale(problem, state) if state is not None else 1.0)
    return shift, scale, out_scale


def _initial_magnitude(problem: Problem, state: str) -> float:
    init = problem.initial.get(state)
    if init is not None and init.value is not None and init.value != 0:
        return abs(float(init.value))
    return 1.0


def _rate_scale(problem: Problem, state: str) -> float:
    """Typical size of d(state)/dt: RMS of the data's finite differences (or size / span)."""
    ds = problem.dataset
    j = problem.states.index(state)
    rates = []
    for e in ds.experiments:
        v, t = e.values[e.train, j], e.t[e.train]
        ok = np.isfinite(v)
        if ok.sum() >= 2:
            rates.append(np.diff(v[ok]) / np.diff(t[ok]))
    if rates:
        r = np.concatenate(rates)
        rms = float(np.sqrt(np.mean(r * r)))
        if rms > 0:
            return rms
    return _initial_magnitude(problem, state) / max(ds.time_span, 1e-12)


class UDEModel(nn.Module):
    """Everything learnable in a fit, and how to simulate it.

    Arguments:
        problem: the resolved problem.
        n_starts: number of independent starts fitted at once (1 for a plain fit).
        parameter_starts: optional ``(n_learned, S)`` starting values of learned parameters.
    """

    def __init__(self, problem: Problem, n_starts: int = 1, parameter_starts: np.ndarray | None = None):
        super().__init__()
        cfg = problem.config
        self.problem = problem
        self.dtype = DTYPES[cfg.solver.dtype]
        self.n_starts = n_starts
        #: the seed of each start's parameter draw (:mod:`ude_cli.fitting.multistart`; None: the config's values)
        self.parameter_seeds: list[int | None] = [cfg.training.seed + k for k in range(n_starts)]
        #: a line per start whose initial guess could not be solved and was drawn again (multistart)
        self.redrawn: list[str] = []
        ds = problem.dataset
        n_exp = len(ds.experiments)
        self.parameters_ = ParameterSet(problem.parameters, n_starts, self.dtype, parameter_starts, n_exp)
        constants = {}
        for cname, value in problem.constants.items():
            if isinstance(value, str):
                constants[cname] = torch.tensor([e.covariates[value] for e in ds.experiments], dtype=self.dtype)
            else:
                constants[cname] = torch.tensor(float(value), dtype=self.dtype)
        #: the likelihood's noise parameters (standard deviations, dispersions): fitted with the rest, or
        #: computed from the mechanistic parameters by a formula
        self.noise = NoiseParameterSet(problem.noise_parameters, n_starts, self.dtype, problem.noise_formulas,
                                       self.parameters_, constants)
        first = np.stack([e.values[0] for e in ds.experiments])
        starts = [problem.t0 if problem.t0 is not None else float(e.t[0]) for e in ds.experiments]
        self.initial = InitialStates(problem.states, problem.initial, first,
                                     [e.covariates for e in ds.experiments], n_starts, self.dtype,
                                     parameters=self.parameters_, constants=constants, t0=starts)
        networks: dict[str, Any] = {}  # MLPs, and graphs (ude_cli.petab.network.batched)
        for k, (name, spec) in enumerate(problem.networks.items()):
            base_seed = spec.seed if spec.seed is not None else cfg.training.seed + 100 + k
            seeds = [base_seed + 1000 * s for s in range(n_starts)]
            shift, scale, out_scale = network_scaling(problem, name)
            if spec.file is not None:  # a network YAML's graph (PEtab SciML): point by point, on torchdiffeq
                from ..petab.network.batched import from_spec

                networks[name] = from_spec(spec, cfg.base_dir, seeds, shift, scale, out_scale, self.dtype,
                                           f"{cfg.label}: networks.{name}")
                continue
            networks[name] = MLP(len(spec.inputs), spec.outputs, spec.hidden, spec.activation, seeds,
                                 spec.final_scale, shift, scale, out_scale, self.dtype)
            if spec.weights is not None:
                load_weights(networks[name], cfg.base_dir / spec.weights, f"{cfg.label}: networks.{name}.weights")
            if spec.fixed:  # not learned: left out of the optimiser, the weight penalty and the counts
                networks[name].requires_grad_(False)
            for array in spec.frozen:  # weight0, bias1, ...: single arrays kept as given
                kind, layer = ("weight", int(array[6:])) if array.startswith("weight") else ("bias", int(array[4:]))
                (networks[name].weights if kind == "weight" else networks[name].biases)[layer].requires_grad_(False)
        self.rhs = HybridRHS(problem.states, problem.equations, networks,
                             {n: s.inputs for n, s in problem.networks.items()}, self.parameters_, constants)
        from .switches import Breakpoints, time_switches

        switches = time_switches(problem)
        #: the stops of the right-hand sides' switches in time (:mod:`.switches`; None: there are none)
        self.breakpoints = Breakpoints(switches, self.parameters_, constants, self.dtype) if switches else None
        if problem.preequilibration is not None:  # every experiment starts at a steady state
            from .steady_state import SteadyState

            pre = problem.preequilibration
            settling = {n: torch.tensor([e.covariates[v] for e in ds.experiments], dtype=self.dtype)
                        if isinstance(v, str) else torch.tensor(float(v), dtype=self.dtype)
                        for n, v in pre.constants.items()}
            names = [e.name for e in ds.experiments]
            which = [b for b, name in enumerate(names) if pre.experiments is None or name in pre.experiments]
            self.initial.settle_with(SteadyState(self.rhs, settling, starts, [problem.states.index(s) for s in
                                                                               pre.reset],
                                                 names, _data_scale(problem), which), settling)
        in_initial = {n for i in problem.initial.values() if i.expression is not None for n, _ in i.expression.network_refs}
        if in_initial:  # a network fed parameters and constants sets an initial value
            self.initial.use_networks({n: (networks[n], problem.networks[n].inputs) for n in in_initial})
        self.settings = SolverSettings.from_spec(cfg.solver, default_step(problem))
        self.groups = make_groups(problem)
        #: the states' jumps at given times (model.events), or None
        self.jumps = Jumps(problem.events, problem.states, self.rhs, ds.experiments) if problem.events else None
        #: the events with a condition (``when``), located in every solve, or None
        self.triggers = (Triggers(problem.events, problem.states, self.rhs, ds.experiments, self.jumps)
                         if self.jumps is not None and any(e.trigger is not None for e in problem.events) else None)
        #: per group: the engine's grids (OdeSpec.grids) of its pieces between jumps, in order (one without jumps)
        self.grid_index: list[list[int]] = []
        offset = 0
        for g in self.groups:
            self.grid_index.append(list(range(offset, offset + len(g.pieces))))
            offset += len(g.pieces)
        self.times = [torch.tensor(g.times, dtype=self.dtype) for g in self.groups]
        #: per group: the experiments' indices, selecting their per-experiment constants and parameters
        self.group_index = [torch.tensor(g.experiments, dtype=torch.long) for g in self.groups]
        #: the groups with events with a condition (``when``), solved by :class:`.events.Triggers`
        self._triggered_groups = frozenset() if self.triggers is None else frozenset(
            k for k, index in enumerate(self.group_index) if self.triggers.happen_in(index))
        self._experiment_index: dict[tuple[int, ...], torch.Tensor] = {}

        self._compiled: CompiledEngine | None = None
        self.engine = self._choose_engine()

    def _choose_engine(self) -> str:
        """'compiled' or 'torchdiffeq' (``solver.engine``; 'auto': compiled where it can and is the faster)."""
        solver = self.problem.config.solver
        if solver.engine == "torchdiffeq" or reason_not_compiled(solver.method, solver.adjoint,
                                                                 self.problem.networks) is not None:
            return "torchdiffeq"
        from ..engines.compiled import CompiledEngine, clearly_too_large, worth_compiling

        if solver.method in STIFF_METHODS:  # only the compiled engine solves them (config.py)
            self._compiled = CompiledEngine(self.ode_spec())
            return "compiled"
        n_trajectories = self.n_starts * len(self.problem.dataset.experiments)
        if solver.engine == "auto" and clearly_too_large(self.networks, n_trajectories):
            return "torchdiffeq"
        self._compiled = CompiledEngine(self.ode_spec())
        if solver.engine == "auto" and not worth_compiling(self._compiled, n_trajectories):
            self._compiled = None
            return "torchdiffeq"
        self._compiled.start_native()
        return "compiled"

    # -- what the engines are given ------------------------------------------------------------------
    @property
    def networks(self) -> dict[str, MLP]:
        """name -> network (the right-hand side's)."""
        return dict(cast(Mapping[str, MLP], self.rhs.networks))  # a ModuleDict of MLPs (untyped)

    def ode_spec(self) -> OdeSpec:
        """The ODE problem as the engines see it (:class:`~ude_cli.engines.base.OdeSpec`), at the current values."""
        from ..engines.base import Grid, OdeSpec

        rhs = self.rhs
        constants = rhs.constants
        ds = self.problem.dataset
        finite = [np.abs(e.observations[np.isfinite(e.observations)]) for e in ds.experiments]
        with torch.no_grad():
            y0 = np.abs(self.initial().detach().numpy())
        scale = float(max([float(x.max()) for x in finite if x.size] + [float(y0.max()) if y0.size else 0.0, 1e-12]))
        return OdeSpec(
            states=tuple(rhs.states), parameters=tuple(self.parameters_.values()), equations=dict(rhs.expressions),
            networks=self.networks, network_inputs={n: tuple(v) for n, v in rhs.network_inputs.items()},
            constants={n: float(v) for n, v in constants.items() if not (torch.is_tensor(v) and v.ndim == 1)},
            experiment_constants={n: v for n, v in constants.items() if torch.is_tensor(v) and v.ndim == 1},
            experiment_names=tuple(e.name for e in ds.experiments),
            grids=tuple(Grid(tuple(g.experiments), times) for g in self.groups for times, _, _ in g.pieces),
            n_starts=self.n_starts, dtype=self.dtype, settings=self.settings, scale=scale)

    def trajectory_inputs(self, experiments: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The initial states ``(S * B, n)`` and parameter values ``(S * B, n_parameters)`` of every (start,
        experiment) trajectory of ``experiments``, start-major, differentiable: what an engine solves from."""
        S, B = self.n_starts, len(experiments)
        key = tuple(experiments)
        if key not in self._experiment_index:
            self._experiment_index[key] = torch.tensor(key, dtype=torch.long)
        y0 = self.initial()[:, list(experiments), :].reshape(S * B, -1)
        values = self.parameters_.values(self._experiment_index[key])
        p = (torch.stack([v.expand(S, B) for v in values.values()], -1).reshape(S * B, -1)
             if values else torch.zeros(S * B, 0, dtype=self.dtype))
        return y0, p

    def _stops(self, experiments: Sequence[int], times) -> np.ndarray | None:
        """Where the adaptive solvers stop for the switches in time of ``experiments`` over ``times``, or None."""
        if self.breakpoints is None or len(times) < 2:
            return None
        stops = self.breakpoints.times(experiments, float(times[0]), float(times[-1]))
        return stops if stops.size else None

    def _compiled_solve(self, k: int, times: np.ndarray | None = None, networks: bool = True,
                        y0: torch.Tensor | None = None, piece: int = 0) -> torch.Tensor:
        """Group ``k`` solved by the compiled engine (its evaluations counted as the right-hand side's), from
        its initial states or ``y0`` ``(S, Bg, n)``; on the grid of its ``piece`` (:mod:`.events`) or ``times``."""
        engine = self._compiled
        assert engine is not None  # the callers check
        g = self.groups[k]
        start, p = self.trajectory_inputs(g.experiments)
        start = start if y0 is None else y0.reshape(start.shape)
        grid = g.pieces[piece][0] if times is None else times
        if len(grid) == 1:  # measured at t0 alone (a steady state): nothing to solve
            return start.reshape(self.n_starts, len(g.experiments), -1)[None]
        sol = engine.solve_group(self.grid_index[k][piece], start, p, times, networks=networks,
                                 stops=self._stops(g.experiments, grid))
        self.rhs.nfe += engine.evaluations
        return sol

    def solve_segments(self, y0: torch.Tensor, experiments: Sequence[int], grid: np.ndarray) -> torch.Tensor:
        """Trajectories from ``y0`` ``(S, B, n)`` (trajectory ``b`` with experiment ``experiments[b]``'s values)
        on ``grid``, all at once by the compiled engine's adaptive method (multiple shooting's segments of an
        autonomous system; :meth:`~ude_cli.engines.compiled.CompiledEngine.solve_batch`)."""
        engine = self._compiled
        assert engine is not None and self.engine == "compiled"  # the caller checks
        _, p = self.trajectory_inputs(experiments)
        sol = engine.solve_batch(y0, p, experiments, grid)
        self.rhs.nfe += engine.evaluations
        return sol

    def stiffness_note(self) -> str | None:
        """What ``ude check`` says about stiffness at the initial guess (:func:`ude_cli.engines.compiled.stiffness_note`)."""
        from ..engines.compiled import stiffness_note

        return stiffness_note(self.ode_spec(), self.trajectory_inputs,
                              self._compiled if self.engine == "compiled" else None)

    # -- simulation -----------------------------------------------------------------------------
    def solve_group(self, k: int, times: torch.Tensor | None = None) -> torch.Tensor:
        """Solution of group ``k`` on its grid (or ``times``, which must start at its t0): ``(T, S, Bg, n)``.

        On the data's grid a compiled model (``engine == "compiled"``) is solved by :mod:`ude_cli.engines.compiled`;
        other grids (dense predictions) and the mechanism alone by torchdiffeq, except with bdf (configured, or
        chosen by ``auto``), which only the compiled engine solves."""
        if self.engine == "compiled" and self._compiled is None:  # a copy (deepcopy) leaves CasADi's functions behind
            from ..engines.compiled import CompiledEngine

            self._compiled = CompiledEngine(self.ode_spec())
            self._compiled.start_native()
        compiled = self._compiled if self.engine == "compiled" else None
        if compiled is not None and times is not None and compiled.undecided(self.grid_index[k][0]):
            # auto decides on the data's grid, as in training
            with torch.no_grad():
                self._compiled_solve(k, networks=self.rhs.networks_enabled)
        g = self.groups[k]
        if g.jumps or self._triggered(k):
            grid = None if times is None else times.detach().cpu().numpy()
            return self._jumping(k, self.initial()[:, g.experiments, :], grid, compiled)
        if self._by_compiled(compiled, times is None):
            return self._compiled_solve(k, None if times is None else times.detach().cpu().numpy(),
                                        networks=self.rhs.networks_enabled)
        return self.solve_from(k, self.initial()[:, g.experiments, :], self.times[k] if times is None else times)

    def _by_compiled(self, compiled: CompiledEngine | None, on_data_grid: bool) -> bool:
        """Whether :meth:`solve_group` (or a piece of it between jumps) goes to the compiled engine: bdf always
        (only it solves bdf), the other methods on the data's grid with the networks on; torchdiffeq otherwise."""
        return compiled is not None and (compiled.method == "bdf" or (on_data_grid and self.rhs.networks_enabled))

    def _jumping(self, k: int, y0: torch.Tensor, times: np.ndarray | None, compiled: CompiledEngine | None
                 ) -> torch.Tensor:
        """Group ``k`` solved piece by piece between its jumps (:mod:`.events`) from ``y0`` at ``times[0]`` (its
        data grid when None), each piece by the engine :meth:`solve_group` would choose for the group."""
        assert self.jumps is not None  # a group with jumps
        g = self.groups[k]
        parts = g.pieces if times is None else pieces(times, g.jumps, at_start=times[0] == g.t0, before=g.before)
        y, solutions = y0, []
        for n, (grid, events, _) in enumerate(parts):
            if events:
                y = self.jumps.apply(y, float(grid[0]), events, self.group_index[k])
            if len(grid) == 1:
                sol = y[None]
            elif self._triggered(k):
                sol = self._triggered_piece(k, y, grid, compiled)
            elif self._by_compiled(compiled, times is None):
                sol = self._compiled_solve(k, None if times is None else grid, self.rhs.networks_enabled, y,
                                           n if times is None else 0)
            else:
                sol = self._torchdiffeq(k, y, torch.tensor(grid, dtype=self.dtype), None)
            solutions.append(sol)
            y = sol[-1]
        seen_before = [b for _, _, b in parts]
        sol = joined(solutions, seen_before)
        if times is None:
            return sol
        return sol[torch.as_tensor(np.searchsorted(joined([p for p, _, _ in parts], seen_before), times))]

    def jump_times(self, start: int = 0) -> dict[str, list[float]]:
        """Per experiment (by name): the times of the jumps its conditions (``when``) make in a solve on the data's
        grid of start ``start``; empty without such events (those at given times are in the schedules)."""
        if self.triggers is None:
            return {}
        self.triggers.record = {}
        try:
            with torch.no_grad():
                self.forward()
            record = self.triggers.record
        finally:
            self.triggers.record = None
        names = [e.name for e in self.problem.dataset.experiments]
        return {names[b]: sorted(ts) for (s, b), ts in record.items() if s == start}

    def _triggered(self, k: int) -> bool:
        """Whether group ``k`` has events with a condition (``when``)."""
        return k in self._triggered_groups

    def _triggered_piece(self, k: int, y: torch.Tensor, grid: np.ndarray, compiled: CompiledEngine | None
                         ) -> torch.Tensor:
        """A piece of group ``k`` with the jumps its conditions make (:class:`.events.Triggers`), every solve of
        it on times it chooses: by the compiled engine with bdf (which only it solves), by torchdiffeq otherwise."""
        assert self.triggers is not None  # the caller checks

        def solve_piece(start: torch.Tensor, times: np.ndarray) -> torch.Tensor:
            if compiled is not None and compiled.method == "bdf":
                return self._compiled_solve(k, times, self.rhs.networks_enabled, start)
            return self._torchdiffeq(k, start, torch.tensor(times, dtype=self.dtype), None)

        return self.triggers.solve(y, grid, self.group_index[k], solve_piece)

    def solve_from(self, k: int, y0: torch.Tensor, times: torch.Tensor, experiments: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """Group ``k``'s states from ``y0`` ``(S, Bg, n)`` at ``times[0]`` (any time, not only t0), at ``times``:
        ``(T, S, Bg, n)``, by torchdiffeq (multiple shooting's segments, a curriculum's windows). ``experiments``:
        the experiment of each of ``y0``'s trajectories (default: the group's). The group's jumps (model.events)
        after ``times[0]`` happen, and one at ``times[0]`` where that is the group's start."""
        g = self.groups[k]
        if (g.jumps or self._triggered(k)) and experiments is None:
            return self._jumping(k, y0, times.detach().cpu().numpy(), None)
        return self._torchdiffeq(k, y0, times, experiments)

    def _torchdiffeq(self, k: int, y0: torch.Tensor, times: torch.Tensor, experiments: torch.Tensor | None
                     ) -> torch.Tensor:
        """:meth:`solve_from` by torchdiffeq, without jumps."""
        self.rhs.select(self.group_index[k] if experiments is None else experiments)
        stops = None
        if self.breakpoints is not None:  # a switch in time: the solver stops at it (no cost otherwise)
            which = self.groups[k].experiments if experiments is None else sorted(set(experiments.tolist()))
            stops = self._stops(which, times.detach().cpu().numpy())
        try:
            if not self.settings.adjoint:
                self.rhs.bind()
            return solve(self.rhs, y0, times, self.settings, stops=stops)
        finally:
            self.rhs.unbind()
            self.rhs.select(None)

    @property
    def compiled(self) -> CompiledEngine | None:
        """The compiled engine (:class:`~ude_cli.engines.compiled.CompiledEngine`) once built, else None."""
        return self._compiled

    def solver_choice(self) -> dict:
        """``solver_method`` (the method that solved last) and ``solver_method_reason`` (``metrics.json``)."""
        if self.engine == "compiled" and self._compiled is not None:
            return self._compiled.solver_choice()
        method = self.settings.method
        if method == "auto" and self.engine == "compiled":  # a copy that has not solved since
            return {"solver_method": "auto", "solver_method_reason": "solver.method: auto: not solved yet"}
        solver = self.problem.config.solver
        why = reason_not_compiled(solver.method, solver.adjoint, self.problem.networks)
        engine = {"solver_engine_reason": f"torchdiffeq: {why}"} if why is not None else {}
        if method == "auto":
            return {"solver_method": "dopri5", "solver_method_reason": "solver.method: auto in torchdiffeq, which "
                    "has no stiff method: dopri5 (the compiled engine switches to bdf where stiff)", **engine}
        return {"solver_method": method, "solver_method_reason": f"solver.method: {method}", **engine}

    def native_status(self) -> dict:
        """``native_code`` (bool) and ``native_code_note`` for the compiled engine (:mod:`ude_cli.engines.native`);
        empty for torchdiffeq."""
        return self._compiled.native_status() if self.engine == "compiled" and self._compiled is not None else {}

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_compiled"] = None  # CasADi functions and buffers: built again on the next solve
        return state

    def forward(self) -> list[torch.Tensor]:
        """Solutions of every group on its union grid."""
        return [self.solve_group(k) for k in range(len(self.groups))]

    def parameter_values(self) -> dict[str, np.ndarray]:
        return self.parameters_.numpy()

    def network_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.rhs.networks.parameters() if p.requires_grad]  # a fixed network's are not learned

    def log_prior(self) -> torch.Tensor | None:
        """The priors' log-density per start ``(S,)`` at the current values (learned parameters with a
        ``prior``, learned network arrays with ``priors``), or None when the config gives none."""
        from ..likelihood.prior import log_density

        terms = []
        learned = {n: p for n, p in self.problem.parameters.items() if p.prior is not None and not p.fixed}
        if learned:
            values = self.parameters_.values()
            for n, p in learned.items():
                prior = p.prior
                assert prior is not None  # chosen above
                terms.append(log_density(prior.distribution, prior.parameters, values[n], prior.scale,
                                         prior.truncated).sum(-1))
        for name, spec in self.problem.networks.items():
            net = cast(MLP, self.rhs.networks[name])
            for array, prior in spec.priors.items():
                kind, k = ("weight", int(array[6:])) if array.startswith("weight") else ("bias", int(array[4:]))
                tensor = (net.weights if kind == "weight" else net.biases)[k]
                if tensor.requires_grad:  # a fixed network's or a frozen array's prior is a constant
                    terms.append(log_density(prior.distribution, prior.parameters, tensor, prior.scale,
                                             prior.truncated).sum(dim=(1, 2)))
        return torch.stack(terms).sum(0) if terms else None

    def weight_penalty(self) -> torch.Tensor:
        """Sum of squared network weights per start ``(S,)`` (0 without networks)."""
        total = torch.zeros(self.n_starts, dtype=self.dtype)
        for net in self.rhs.networks.values():  # MLPs and graphs (ude_cli.petab.network.batched) alike
            total = total + cast(MLP, net).weight_penalty()
        return total

    def dense(self, n_points: int = 400, until: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per experiment: a dense time grid from t0 to its last time (or ``until``), and the states
        ``(T, S, n)`` on it."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # experiment -> (t, y): each is in one group
        with torch.no_grad():
            for k, g in enumerate(self.groups):
                end = max(float(self.problem.dataset.experiments[b].t[-1]) for b in g.experiments)
                end = until if until is not None else end  # the grid ends where it was asked to, before or after the data
                grid = dense_grid(g.t0, end, n_points, g.times)
                jumps = [t for t, _ in g.jumps if g.t0 <= t <= end]
                if jumps:  # the states just before and after each jump: a figure draws it upright (a jump time
                    # itself holds one of the two: the states after, or before where ``observed: before``)
                    eps = [1e-6 * max(end - g.t0, abs(t)) for t in jumps]
                    grid = np.union1d(grid, [*jumps, *(t - e for t, e in zip(jumps, eps, strict=True) if t > g.t0),
                                             *(t + e for t, e in zip(jumps, eps, strict=True)
                                               if t in g.before and t + e < end)])
                sol = self.solve_group(k, torch.tensor(grid, dtype=self.dtype)).cpu().numpy()
                for i, b in enumerate(g.experiments):
                    t_end = until if until is not None else float(self.problem.dataset.experiments[b].t[-1])
                    keep = grid <= t_end + 1e-12 * max(1.0, abs(t_end))
                    out[b] = (grid[keep], sol[keep, :, i, :])
        return [out[b] for b in range(len(self.problem.dataset.experiments))]

    def terms_along(self, t: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Network outputs along a trajectory: ``t (T,)``, ``y (T, S, n)`` -> name -> ``(T, S, outputs)``."""
        with torch.no_grad():
            yt = torch.tensor(y, dtype=self.dtype).permute(1, 0, 2)  # (S, T, n): time as the batch
            tt = torch.tensor(t, dtype=self.dtype)
            return {name: net(self.rhs.inputs(name, tt, yt)).permute(1, 0, 2).cpu().numpy()
                    for name, net in self.rhs.networks.items()}


#: data times whose positive offsets from the start span this many decades are drawn on a log time axis,
#: and predicted on a log-spaced grid (Robertson's kinetics: 1e-4 to 1e5)
LOG_TIME_DECADES = 3.0


def _data_scale(problem: Problem) -> float:
    """The largest magnitude observed (1 without observations)."""
    finite = [np.abs(e.observations[np.isfinite(e.observations)]) for e in problem.dataset.experiments]
    return float(max([float(x.max()) for x in finite if x.size] + [0.0])) or 1.0


def log_time_threshold(times: np.ndarray, t0: float) -> float | None:
    """The smallest positive offset ``t - t0`` of ``times`` when their positive offsets span
    :data:`LOG_TIME_DECADES` decades or more (a log time axis then shows them), else None."""
    offsets = np.asarray(times, dtype=np.float64) - t0
    offsets = offsets[np.isfinite(offsets) & (offsets > 0)]
    if len(offsets) < 2 or offsets.max() < offsets.min() * 10 ** LOG_TIME_DECADES:
        return None
    return float(offsets.min())


def dense_grid(t0: float, end: float, n_points: int, times: np.ndarray) -> np.ndarray:
    """``n_points`` times from ``t0`` to ``end``: evenly spaced, or for data times that span decades
    (:func:`log_time_threshold`) ``t0`` then log-spaced from the first data time on."""
    if not end > t0:  # measured at t0 alone (a steady state): the one time
        return np.array([float(t0)])
    first = log_time_threshold(times, t0)
    if first is None or not end - t0 > first or n_points < 3:
        return np.linspace(t0, end, n_points)
    return t0 + np.concatenate([[0.0], np.geomspace(first, end - t0, n_points - 1)])
