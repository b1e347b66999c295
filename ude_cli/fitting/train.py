"""Optimisation: stages of Adam and LBFGS over the loss, with roll-back on numerical failure.

No file I/O here: progress goes to a :class:`Monitor`, and the position of the training (stage,
iteration, optimiser state, best parameters) lives in a :class:`TrainState` that a caller can save
and hand back to resume. Training stops between iterations when asked (Ctrl-C, SIGTERM, a time
limit), never half-way through an update.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..config import StageSpec, TrainingSpec
from ..engines.torchdiffeq import SolverError
from ..errors import FitError, Interrupted
from ..likelihood.objective import Objective
from .flat_parameters import FlatParameters
from .lean_torch import optimizer_step
from .model import UDEModel

#: LBFGS iterations per ``step()`` call: the history row and stop checks happen between calls.
LBFGS_CHUNK = 10
#: Times a stage rolls back and retries with a 10x smaller learning rate before it gives up.
MAX_RETRIES = 3
#: A loss above this (after the first iteration) counts as a blow-up.
BLOWUP = 1e30
#: An LBFGS stage ends when a chunk of iterations improves the objective by less than this fraction.
LBFGS_REL_TOL = 1e-9
#: Iterations over which an LBFGS stage's ``tolerance`` is judged.
TOLERANCE_WINDOW = 100
#: The automatic warm start ends when the trajectory objective (checked after every chunk: the trajectory
#: loss plus the next stage's weight decay) has not improved by more than WARM_REL_GAIN (relative) for
#: WARM_PATIENCE iterations; it hands on the best trajectory point it passed (the initial values included).
WARM_PATIENCE = 1000
WARM_REL_GAIN = 0.01


class Monitor(Protocol):
    """Receives training progress (a progress bar, a log, nothing)."""

    def stage_started(self, index: int, n_stages: int, stage: StageSpec, done: int) -> None: ...

    def advanced(self, index: int, done: int, loss: float) -> None: ...

    def stage_finished(self, index: int) -> None: ...

    def message(self, text: str) -> None: ...


class _TargetReached(Exception):
    pass


@dataclass
class TrainState:
    """Where training is: enough to resume it exactly."""

    stage: int = 0
    done: int = 0  # iterations done in the current stage
    iteration: int = 0  # iterations done in all stages
    records: list[dict] = field(default_factory=list)  # one per Adam iteration / LBFGS chunk
    optimizer_state: dict | None = None
    lr_factor: float = 1.0
    retries: int = 0
    nfe: int = 0
    seconds: float = 0.0
    finished: bool = False
    stop_reason: str = ""
    best_loss: torch.Tensor | None = None  # (S,) best objective seen per start
    best: dict[str, torch.Tensor] | None = None  # parameter name -> best values (start dim first)
    #: the best trajectory point of the automatic warm start so far, the initial values included:
    #: {"loss": (S,), "params": {...}, "initial": (S,) bool (still the initial values), "at": iteration of
    #: the last improvement}
    before_warm_start: dict | None = None
    shooting_ready: bool = False  # multiple shooting's segment states were initialised (they are in ``best``)
    stage_start_loss: float | None = None  # the objective where the current trajectory stage started
    window: list = field(default_factory=list)  # (iterations done, objective) of the stage's recent LBFGS chunks

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**d)


@dataclass
class TrainResult:
    """What training produced (the fitted values are in the model itself)."""

    records: list[dict]
    iterations: int
    nfe: int
    seconds: float
    final_loss: torch.Tensor  # (S,) data loss at the returned parameters
    stop_reason: str
    stages: list[dict] = field(default_factory=list)  # the stages run, the automatic warm start included
    strategy: str = "single_shooting"  # the training strategy of the default stages ("stages" when written out)


def effective_stages(model: UDEModel, training: TrainingSpec) -> list[StageSpec]:
    """The configured stages (or the strategy's, :mod:`.strategy`), preceded by the automatic collocation warm
    start when it applies."""
    from .strategy import resolve, strategy_stages

    warm = auto_warm_start(model, training)
    if training.stages is not None:
        stages = list(training.stages)
    else:
        stages = strategy_stages(resolve(model.problem, training, warm)[0], training, warm)
    if warm:
        stages.insert(0, StageSpec(optimizer="lbfgs", objective="collocation",
                                   iterations=training.warm_start_iterations))
    return stages


def strategy_used(model: UDEModel, training: TrainingSpec, warm: bool, monitor: Monitor | None = None) -> str:
    """The strategy of the default stages (``stages`` when the config writes its own); ``auto`` tells ``monitor``
    what it chose and why."""
    if training.stages is not None:
        return "stages"
    from .strategy import resolve

    name, line = resolve(model.problem, training, warm)
    if line and monitor is not None:
        monitor.message(line)
    return name


def auto_warm_start(model: UDEModel, training: TrainingSpec) -> bool:
    """Whether the automatic collocation warm start runs before the stages."""
    from .collocation import applicable

    if training.strategy == "auto" and training.stages is None:
        from .strategy.auto import sparse_states

        if sparse_states(model.problem):  # a spline through a sparse state misleads the warm start (docs/training.md)
            return False
    return (training.warm_start == "auto" and applicable(model.problem) is None
            and (training.stages is None or training.stages[0].objective != "collocation"))


def train(model: UDEModel, objective: Objective, training: TrainingSpec, *, monitor: Monitor | None = None,
          state: TrainState | None = None, stop_below: float | None = None,
          should_stop: Callable[[], str | None] | None = None, time_limit: float | None = None) -> TrainResult:
    """Run the training stages on ``model``; return a :class:`TrainResult`.

    Arguments:
        model: the model to fit (changed in place; it ends at the best parameters seen per start).
        objective: the loss.
        training: the stages, weight decay and target.
        monitor: receives progress.
        state: a saved :class:`TrainState` to resume from (default: start afresh).
        stop_below: stop as soon as the training loss is below this (default ``training.stop_below``).
        should_stop: called between iterations; a non-empty reason stops training with
            :class:`Interrupted` (the state stays consistent and resumable).
        time_limit: seconds of training (default ``training.max_seconds``); past it, training stops
            between iterations and returns the best parameters so far.

    Raises:
        FitError: the loss stayed non-finite (or the solver failed) after roll-backs and retries.
        Interrupted: ``should_stop`` asked to stop.
    """
    from ..progress import SilentMonitor  # no output: progress.py imports rich only for its bars

    monitor = monitor or SilentMonitor()
    state = state if state is not None else TrainState()
    target = stop_below if stop_below is not None else training.stop_below
    limit = time_limit if time_limit is not None else training.max_seconds
    runner = _Runner(model, objective, training, monitor, state, target, should_stop, limit)
    return runner.run()


class _Runner:
    def __init__(self, model, objective, training, monitor, state, target, should_stop, time_limit):
        self.model, self.objective, self.training = model, objective, training
        self.time_limit = time_limit
        self.monitor, self.state, self.target = monitor, state, target
        self.should_stop = should_stop or (lambda: None)
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.stages = effective_stages(model, training)
        self.auto_warm_start = auto_warm_start(model, training)
        self.strategy = strategy_used(model, training, self.auto_warm_start, self.monitor)
        #: the current stage's first evaluation, (total, data), or its SolverError (see _objective_here)
        self._start: tuple[torch.Tensor, torch.Tensor] | SolverError | None = None
        self.shooting = self._segments()  # multiple shooting's objective; its segment states are trained too
        if self.shooting is not None:
            self.params.update(self.shooting.states)
        self.flat = FlatParameters(self.params, model.n_starts)  # .data and .grad of self.params: views
        from .switches import describe, relative_step, switch_parameters

        switches = switch_parameters(model.problem)
        #: the learned parameters that set a switch of a right-hand side -> whether their difference step is relative
        self.switches = {n: relative_step(model.problem.parameters[n]) for n in switches
                         if f"parameters_.raw.{n}" in self.params}
        if self.switches:
            self.monitor.message(describe({n: switches[n] for n in self.switches}))
        self._best: torch.Tensor | None = None  # the state's best values as one buffer ...
        self._best_views: dict | None = None  # ... and state.best while it is that buffer's views
        self._windows: dict[float, object] = {}  # a curriculum's window objectives, by fraction
        self._window: float | None = None  # the window of the stage running (None: the whole span)
        self._collocation = None
        self._objective_kind = "trajectory"
        self.net_params = set(id(p) for p in model.network_parameters())
        self.last_data: torch.Tensor | None = None
        self._converged = False  # the last stage run ended by convergence, before its iterations
        self._chunk_objective = math.inf  # the lowest objective of the last LBFGS chunk

    def _segments(self):
        """Multiple shooting's objective when a stage uses it (else None); says once that segments and windows
        are solved by torchdiffeq when the fit's engine is the compiled one."""
        kinds = {(s.objective, s.window is not None) for s in self.stages}
        partial = any(k == "multiple_shooting" or windowed for k, windowed in kinds)
        if not partial:
            return None
        from ..config import STIFF_METHODS

        method = self.model.settings.method
        if method in STIFF_METHODS or (self.model.compiled is not None and self.model.compiled.method in STIFF_METHODS):
            raise FitError(f"multiple shooting and curriculum windows are solved by torchdiffeq, which has no "
                           f"{method} method", hint="use solver.method dopri5 (or auto, rk4), or training.strategy: "
                                                    "single_shooting")
        shooting = None
        if any(k == "multiple_shooting" for k, _ in kinds):
            from .strategy.multiple_shooting import ShootingObjective

            shooting = ShootingObjective(self.model, self.objective, self.training)
        by_torchdiffeq = [what for what, used in (
            ("curriculum windows", any(windowed for _, windowed in kinds)),
            ("multiple shooting's segments (t is an input)", shooting is not None and not shooting.autonomous)) if used]
        if self.model.engine == "compiled" and by_torchdiffeq:
            self.monitor.message(f"{' and '.join(by_torchdiffeq)} are solved by torchdiffeq (the compiled engine solves "
                                 "from the initial states only); the stages on the whole trajectory by the compiled "
                                 "engine")
        return shooting

    def _window_objective(self, fraction: float):
        if fraction not in self._windows:
            from .strategy.curriculum import WindowObjective

            self._windows[fraction] = WindowObjective(self.model, self.objective, fraction)
        return self._windows[fraction]

    def _prepare_segments(self) -> None:
        """The segment states from the data and the current trajectory before the first multiple-shooting stage
        (on a resumed run, from the checkpoint's best values)."""
        st = self.state
        if self.shooting is None:
            return
        if not st.shooting_ready:
            self.shooting.initialise()
            st.shooting_ready = True
            self.monitor.message(f"multiple shooting: {', '.join(map(str, self.shooting.segments))} segment(s) per "
                                 f"group of experiments, continuity weight {self.shooting.continuity:g}")
        elif st.best is not None:
            with torch.no_grad():
                for name, p in self.shooting.states.items():
                    if name in st.best:
                        p.copy_(st.best[name])

    # -- evaluation --------------------------------------------------------------------------------
    def collocation(self):
        if self._collocation is None:
            from .collocation import CollocationObjective

            self._collocation = CollocationObjective(self.model)
        return self._collocation

    def evaluate(self, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
        total, data = self._objective(weight_decay)
        self._remember_best(total.detach(), data.detach())
        return total, data

    def _objective(self, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective per start (with weight decay and priors) and the data term, at the current values."""
        nfe0 = self.model.rhs.nfe
        try:
            if self._objective_kind == "collocation":
                data = self.collocation().loss()
            elif self._objective_kind == "multiple_shooting":
                assert self.shooting is not None  # built when a stage uses it
                data = self.shooting.loss()
            elif self._window is not None:
                data = self._window_objective(self._window).loss()
            else:
                data = self.objective.loss(self.model())
        finally:
            self.state.nfe += self.model.rhs.nfe - nfe0
        total = data + weight_decay * self.model.weight_penalty() if weight_decay else data
        return self._with_prior(total), data

    def _switch_gradients(self, weight_decay: float) -> None:
        """After a backward pass: the gradient of each parameter that sets a switch of the right-hand side by
        central finite differences (:mod:`.switches`), in place of the solvers' (which is 0 for it)."""
        if not self.switches or self._objective_kind == "collocation":
            return  # collocation evaluates the right-hand side at the data's times only: a step function of tau
        from .switches import finite_differences

        for name, relative in self.switches.items():
            raw = self.model.parameters_.raw[name]
            if raw.grad is not None:
                raw.grad.copy_(finite_differences(raw, lambda: self._objective(weight_decay)[0], relative))

    def _with_prior(self, total: torch.Tensor) -> torch.Tensor:
        """The objective minus the priors' log-density per training observation (the config's priors: the
        fit maximises the log-posterior); unchanged without priors."""
        prior = self.model.log_prior()
        if prior is None:
            return total
        return total - prior / max(self.objective.counts["train"], 1)

    def _remember_best(self, total: torch.Tensor, data: torch.Tensor) -> None:
        st = self.state
        if st.best_loss is None:
            st.best_loss = torch.full_like(total, math.inf)
            st.best = None
        best = self._best_values()
        self.last_data = data
        if total.numel() == 1:  # one start: the same decision in Python numbers, a few microseconds
            value = total.item()
            if math.isfinite(value) and value < st.best_loss.item():
                st.best_loss = total
                best.copy_(self.flat.parameter.detach())
            return
        better = torch.isfinite(total) & (total < st.best_loss)
        if bool(better.any()):
            st.best_loss = torch.where(better, total, st.best_loss)
            self.flat.where(better, self.flat.parameter.detach(), best)

    def _best_values(self) -> torch.Tensor:
        """The best values so far as one buffer, ``state.best`` being its views (made on the first call of
        a stage, or from a resumed checkpoint's ``state.best``)."""
        st = self.state
        if st.best is None:
            self._best = self.flat.parameter.detach().clone()
            st.best = self.flat.views(self._best)
        elif st.best is not self._best_views:  # a resumed checkpoint's, or released after training
            self._best = self.flat.flatten(st.best)
            st.best = self.flat.views(self._best)
        self._best_views = st.best
        assert self._best is not None  # set above, or by an earlier call with these views
        return self._best

    def _trajectory_loss(self) -> torch.Tensor:
        with torch.no_grad():
            try:
                loss = self.objective.loss(self.model())
            except SolverError:
                return torch.full((self.model.n_starts,), math.inf, dtype=self.model.dtype)
        return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))

    def _warm_objective(self, trajectory: torch.Tensor) -> torch.Tensor:
        """What the warm start's best point is chosen by: the trajectory loss plus the weight decay of the
        first stage after it (the objective the stages then minimise)."""
        nxt = self.stages[1] if len(self.stages) > 1 else self.stages[0]
        wd = self._decay(nxt)
        with torch.no_grad():
            return self._with_prior(trajectory + wd * self.model.weight_penalty() if wd else trajectory)

    def _snapshot(self) -> dict:
        loss = self._warm_objective(self._trajectory_loss())
        return {"loss": loss, "params": {n: p.detach().clone() for n, p in self.params.items()},
                "initial": torch.ones_like(loss, dtype=torch.bool), "at": 0}

    def _track_warm_start(self, trajectory: torch.Tensor) -> bool:
        """Remember the point with the best trajectory loss the warm start passes (per start); True when
        it has not improved by more than WARM_REL_GAIN for WARM_PATIENCE iterations (the warm start has
        done what it can for the trajectory)."""
        best = self.state.before_warm_start
        if best is None:
            return False
        trajectory = self._warm_objective(trajectory)
        better = torch.isfinite(trajectory) & (trajectory < best["loss"])
        if bool(better.any()):
            gain = better & (trajectory < best["loss"] * (1 - WARM_REL_GAIN))
            with torch.no_grad():
                for n, p in self.params.items():
                    mask = better.view(-1, *([1] * (p.dim() - 1)))
                    best["params"][n] = torch.where(mask, p.detach(), best["params"][n])
            best["loss"] = torch.where(better, trajectory, best["loss"])
            best["initial"] = best["initial"] & ~better
            if bool(gain.any()):
                best["at"] = self.state.done
        return self.state.done - best["at"] >= WARM_PATIENCE

    def _end_warm_start(self) -> None:
        """Per start, hand on the warm start's best trajectory point; say so when that is the initial values
        (the warm start fitted the derivatives but made the trajectory fit worse)."""
        best = self.state.before_warm_start
        if best is None:
            return
        after = self._warm_objective(self._trajectory_loss())
        worse = after > best["loss"]
        if bool(worse.any()):
            with torch.no_grad():
                for n, p in self.params.items():
                    mask = worse.view(-1, *([1] * (p.dim() - 1)))
                    p.copy_(torch.where(mask, best["params"][n], p))
        undone = worse & best["initial"]
        if bool(undone.any()):
            k = int(undone.sum())
            which = "" if self.model.n_starts == 1 else f" for {k} of {self.model.n_starts} starts"
            self.monitor.message(
                f"the collocation warm start fitted the data's derivatives but not the data (trajectory objective "
                f"{float(after.min()):.4g} > {float(best['loss'].min()):.4g}); starting from the initial values"
                f"{which} instead")
        self.state.before_warm_start = None

    def restore_best(self) -> None:
        if self.state.best is None:
            return
        with torch.no_grad():
            self.flat.parameter.copy_(self._best_values())

    # -- stages -----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        st = self.state
        t_start = time.perf_counter() - st.seconds
        stages = self.stages
        try:
            if not st.finished:
                while st.stage < len(stages):
                    stage = stages[st.stage]
                    self._objective_kind = stage.objective
                    self._window = stage.window if stage.window is not None and stage.window < 1 else None
                    if stage.objective == "multiple_shooting":
                        self._prepare_segments()
                    warm = self.auto_warm_start and st.stage == 0
                    if warm and st.done == 0 and st.before_warm_start is None:
                        st.before_warm_start = self._snapshot()
                    self.monitor.stage_started(st.stage, len(stages), stage, st.done)
                    self._start = None
                    if st.done == 0:
                        st.stage_start_loss = self._objective_here(stage) if stage.objective != "collocation" else None
                    if isinstance(self._start, SolverError) and (
                            st.best_loss is None or not bool(torch.isfinite(st.best_loss).any())):
                        # the stage's starting point cannot be solved and there is nothing to roll back to: say so
                        # now (its first step would solve the same point again, to fail the same way)
                        self._roll_back(st.stage, stage, self._start)
                    if st.done == 0 and stage.optimizer == "lbfgs":
                        self._record_start(st.stage, stage, t_start)
                    self._run_stage(st.stage, stage, t_start)
                    self._end_at_best(st.stage, stage)
                    self.monitor.stage_finished(st.stage)
                    if warm:
                        self._end_warm_start()
                    if st.stop_reason:
                        break
                    st.stage, st.done, st.optimizer_state, st.lr_factor, st.retries = st.stage + 1, 0, None, 1.0, 0
                    # each stage compares points by its own objective (its weight decay may differ) and starts
                    # from the best point so far, which is its first evaluation: the best never gets lost
                    st.best, st.best_loss, st.window = None, None, []
                st.finished = True
                st.stop_reason = st.stop_reason or ("converged" if self._converged else "completed")
        except _TargetReached:
            st.finished = True
            st.stop_reason = f"loss below {self.target:g}"
            self.monitor.stage_finished(st.stage)
        finally:
            st.seconds = time.perf_counter() - t_start
            self._release()
        with torch.no_grad():
            final = self.objective.loss(self.model())
        return TrainResult(records=st.records, iterations=st.iteration, nfe=st.nfe, seconds=st.seconds,
                           final_loss=final, stop_reason=st.stop_reason,
                           stages=[s.model_dump(exclude_none=True) for s in stages], strategy=self.strategy)

    def _release(self) -> None:
        """The parameters and the best values in memory of their own again (the buffers are training's)."""
        self.flat.release()
        if self.state.best is not None:
            self.state.best = {n: v.clone() for n, v in self.state.best.items()}
        self._best = self._best_views = None

    def _record_start(self, index: int, stage: StageSpec, t_start: float) -> None:
        """The loss where an LBFGS stage starts, so that its history begins there (its rows come a
        chunk of iterations apart; an Adam stage's first row is already its starting loss)."""
        if isinstance(self._start, SolverError):
            return  # the stage's starting point cannot be solved: its first step meets the failure and reports it
        if self._start is not None:  # the same point's evaluation, by _objective_here
            data = self._start[1]
        else:
            try:
                with torch.no_grad():
                    _, data = self.evaluate(self._decay(stage))
            except SolverError:
                return  # the stage's first step meets the same failure and reports it
        if not bool(torch.isfinite(data).any()):
            return
        record = {"iteration": self.state.iteration, "stage": index, "optimizer": stage.optimizer,
                  "objective": stage.objective, "loss": float(data.min()),
                  "seconds": round(time.perf_counter() - t_start, 6)}
        if stage.objective != "trajectory" and self.state.before_warm_start is not None:
            with torch.no_grad():
                record["trajectory_loss"] = float(self._trajectory_loss().min())
        self.state.records.append(record)

    def _objective_here(self, stage: StageSpec) -> float | None:
        """The stage's objective (data loss plus weight decay) at the current parameters, best start. The evaluation
        (or its failure) is kept for :meth:`_record_start`, at the same point: one solve, not two."""
        try:
            with torch.no_grad():
                total, data = self.evaluate(self._decay(stage))
        except SolverError as exc:
            self._start = exc
            return None
        self._start = (total, data)
        return float(total.min()) if bool(torch.isfinite(total).any()) else None

    def _end_at_best(self, index: int, stage: StageSpec) -> None:
        """A stage hands on the best parameters it saw, so that a stage that made things worse (Adam
        overshooting a good warm start, say) costs time but never the progress made before it. The
        monitor hears the loss there: the one the stage hands on, not the last one it tried."""
        last = math.inf
        wd = self._decay(stage)
        with torch.no_grad():
            with contextlib.suppress(SolverError):  # failing to solve, the last point cannot be the best
                total, _ = self.evaluate(wd)  # the last point counts too
                last = float(total.min()) if bool(torch.isfinite(total).any()) else math.inf
            self.restore_best()
            try:
                total, data = self.evaluate(wd)
            except SolverError:
                return
        if not bool(torch.isfinite(data).any()):
            return
        self.monitor.advanced(index, self.state.done, float(data.min()))
        start, kept = self.state.stage_start_loss, float(total.min())
        if start is not None and last > start and self.state.done > 0 and stage.objective != "collocation":
            what = "the earlier point" if kept >= start * (1 - 1e-9) else f"the best point it passed ({kept:.4g})"
            objective = " (loss + weight decay)" if wd else ""
            self.monitor.message(f"stage {index + 1} ({stage.optimizer}) ended at {last:.4g}{objective}, worse than "
                                 f"its start {start:.4g}: kept {what}")

    def _decay(self, stage: StageSpec) -> float:
        return stage.weight_decay if stage.weight_decay is not None else self.training.weight_decay

    def _make_optimizer(self, stage: StageSpec):
        lr = stage.learning_rate * self.state.lr_factor
        params = [self.flat.parameter]
        if stage.optimizer == "adam":
            opt = _adam(params, lr)
        else:
            opt = torch.optim.LBFGS(params, lr=lr, max_iter=LBFGS_CHUNK, max_eval=LBFGS_CHUNK * 25 // 10,
                                    history_size=10, line_search_fn="strong_wolfe",
                                    tolerance_grad=1e-10, tolerance_change=1e-12)
        if self.state.optimizer_state is not None:
            try:
                opt.load_state_dict(self.state.optimizer_state)
            except ValueError:  # a checkpoint from a version that kept one state per tensor
                self.monitor.message("the checkpoint's optimizer state has another layout; the optimizer "
                                     "starts afresh from the checkpoint's parameters")
        return opt

    def _run_stage(self, index: int, stage: StageSpec, t_start: float) -> None:
        st = self.state
        wd = self._decay(stage)
        opt = self._make_optimizer(stage)
        self._converged = False
        window = st.window  # (iterations done, objective) after each LBFGS chunk: for stage.tolerance
        while st.done < stage.iterations:
            reason = self.should_stop()
            if reason:
                st.optimizer_state = opt.state_dict()
                raise Interrupted(reason)
            if self.time_limit is not None and time.perf_counter() - t_start > self.time_limit:
                st.stop_reason = f"time limit of {self.time_limit:g} s"
                self.monitor.message(f"stopped: {st.stop_reason} reached; keeping the best parameters so far")
                return
            try:
                if stage.optimizer == "adam":
                    k, loss, reached = self._adam_step(opt, wd, st.iteration == 0)
                else:
                    k, loss, reached = self._lbfgs_step(opt, wd, stage.iterations - st.done)
            except (_NumericalTrouble, SolverError) as exc:
                opt = self._roll_back(index, stage, exc)
                continue
            if k == 0:  # LBFGS converged: nothing more to gain in this stage
                self._converged = True
                break
            converged = k < 0
            k = abs(k)
            st.done += k
            st.iteration += k
            record = {"iteration": st.iteration, "stage": index, "optimizer": stage.optimizer,
                      "objective": stage.objective, "loss": loss, "seconds": round(time.perf_counter() - t_start, 6)}
            if stage.optimizer == "lbfgs":
                st.records.extend(self._iteration_rows(record, k, t_start))  # the chunk's iterations but its last
            warm = self.auto_warm_start and index == 0
            if (stage.objective != "trajectory" or self._window is not None) and (self.target is not None or warm):
                trajectory = self._trajectory_loss()  # the target is on the trajectory loss: check it
                record["trajectory_loss"] = float(trajectory.min())
                reached = self.target is not None and record["trajectory_loss"] < self.target
                converged = converged or (warm and self._track_warm_start(trajectory))
            st.records.append(record)
            self.monitor.advanced(index, st.done, loss)
            if reached:
                raise _TargetReached()
            if stage.optimizer == "lbfgs" and stage.tolerance is not None and stage.objective != "collocation":
                window.append([st.done, self._chunk_objective])
                while len(window) > 1 and window[-1][0] - window[1][0] >= TOLERANCE_WINDOW:
                    window.pop(0)
                then_done, then = window[0]
                if st.done - then_done >= TOLERANCE_WINDOW and then - window[-1][1] <= stage.tolerance * abs(then):
                    converged = True
            if converged:
                self._converged = True
                break
        st.optimizer_state = None

    def _check(self, data: torch.Tensor, first: bool) -> float:
        data = data.detach()
        value = float(data.min())
        if not (math.isfinite(value) if data.numel() == 1 else bool(torch.isfinite(data).all())):
            with torch.no_grad():
                prior = self.model.log_prior()
            if prior is not None and not bool(torch.isfinite(prior).all()):
                raise _NumericalTrouble("the log-prior is not finite at the values tried: the log-posterior is "
                                        "unbounded (a prior whose density is infinite at a boundary, such as "
                                        "log-laplace with a scale above 1 or gamma with a shape below 1, has no "
                                        "maximum) or a value left the prior's support")
            raise _NumericalTrouble("the loss is not finite (NaN or infinite)")
        if not first and value > BLOWUP:
            raise _NumericalTrouble(f"the loss blew up to {value:.3g}")
        return value

    def _reached(self, value: float) -> bool:
        return (self._objective_kind == "trajectory" and self._window is None and self.target is not None
                and value < self.target)

    def _adam_step(self, opt, wd: float, first: bool) -> tuple[int, float, bool]:
        self.flat.zero_grad()
        total, data = self.evaluate(wd)
        loss = self._check(data, first)
        if self._reached(loss):  # stop at the point that reached the target, before stepping away
            return 1, loss, True
        if total.requires_grad:  # not when every learned value sets a switch (their gradients: _switch_gradients)
            total.sum().backward()
        self._switch_gradients(wd)
        if not self.flat.gradient_finite():
            raise _NumericalTrouble("a gradient is not finite")
        optimizer_step(opt)
        return 1, loss, False

    def _lbfgs_step(self, opt, wd: float, remaining: int) -> tuple[int, float, bool]:
        evals: list[float] = []  # the data loss at each evaluation (what the history shows)
        objectives: list[float] = []  # what LBFGS minimises (with weight decay, not the data loss)
        during: list[tuple[int, float]] = []  # (LBFGS's iteration count, time) at each evaluation
        first = self.flat.parameter

        def closure():
            self.flat.zero_grad()
            try:
                total, data = self.evaluate(wd)
            except SolverError:
                if not objectives:  # the chunk's first evaluation is the point LBFGS stands on: a real failure
                    raise
                # a trial point of the line search that cannot be solved (the step ran into a blow-up): an
                # objective far above the start's, with no gradient, so that the line search backs off
                return torch.tensor(objectives[0] + TRIAL_PENALTY * (1.0 + abs(objectives[0])), dtype=self.model.dtype)
            value = self._check(data, False)
            evals.append(value)
            objectives.append(float(total.detach().sum()))
            during.append((opt.state[first].get("n_iter", 0), time.perf_counter()))
            if self._reached(value):
                raise _TargetReached()
            if total.requires_grad:  # not when every learned value sets a switch (see _switch_gradients)
                total.sum().backward()
            self._switch_gradients(wd)
            return total.sum()

        n0 = opt.state[first].get("n_iter", 0)
        self._chunk = (n0, evals, objectives, during)  # for one history row per iteration (_iteration_rows)
        opt.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, remaining)
        try:
            opt.step(closure)
        except _TargetReached:
            return max(1, opt.state[first].get("n_iter", 0) - n0), evals[-1], True
        k = opt.state[first].get("n_iter", 0) - n0
        self._chunk_objective = min(objectives) if objectives else math.inf
        if k > 0 and objectives and objectives[0] - min(objectives) <= LBFGS_REL_TOL * abs(objectives[0]):
            k = -k  # converged: no relative progress of the objective over a whole chunk
        return k, evals[objectives.index(min(objectives))] if evals else float("nan"), False

    def _iteration_rows(self, last: dict, k: int, t_start: float) -> list[dict]:
        """History rows for the first ``k - 1`` iterations of the LBFGS chunk that ended with ``last`` (its
        own row): for each, the data loss where LBFGS's objective was lowest among that iteration's
        evaluations (the rule of the chunk's own row), so that a short stage is not a line of a few points.
        Nothing when the evaluations cannot be told apart by iteration."""
        n0, evals, objectives, during = self._chunk
        rows = []
        for i in range(1, k):
            seen = [j for j, (n, _) in enumerate(during) if n == n0 + i]
            if not seen:
                return []
            best = min(seen, key=lambda j: objectives[j])
            rows.append({**last, "iteration": last["iteration"] - k + i, "loss": evals[best],
                         "seconds": round(during[seen[-1]][1] - t_start, 6)})
        return rows

    def _roll_back(self, index: int, stage: StageSpec, exc: Exception):
        st = self.state
        what = exc.message if isinstance(exc, SolverError) else str(exc)
        advice = exc.hint if isinstance(exc, SolverError) and exc.hint else (
            "try a smaller learning rate, tighter parameter bounds, a fixed-step method (rk4) with a smaller "
            "solver.step for stiff equations, or loss 'scaled' / 'log' for data of "
            "very different sizes")
        if st.best_loss is None or not bool(torch.isfinite(st.best_loss).any()):
            # nothing good to roll back to: the stage's starting point itself fails
            where = "the initial guess" if st.iteration == 0 else f"the start of stage {index + 1} ({stage.optimizer})"
            raise FitError(f"{where}: {self._explained(exc, what)}", hint=advice) from None
        if st.retries + 1 > MAX_RETRIES:
            what = self._explained(exc, what)  # the failing parameters, before rolling back
        self.restore_best()
        st.retries += 1
        if st.retries > MAX_RETRIES:
            raise FitError(
                f"stage {index + 1} ({stage.optimizer}), iteration {st.done + 1}: {what}, and it stayed so after "
                f"{MAX_RETRIES} roll-backs to the last good parameters with 10x smaller learning rates",
                hint=advice) from None
        st.lr_factor *= 0.1
        st.optimizer_state = None
        self.monitor.message(f"stage {index + 1} ({stage.optimizer}), iteration {st.done + 1}: {what}; rolled back "
                             f"to the last good parameters, learning rate x{st.lr_factor:g}")
        return self._make_optimizer(stage)


    def _explained(self, exc: Exception, what: str) -> str:
        """``what``, led by the state that ran away and when, for a solver failure (:mod:`ude_cli.fitting.blowup`)."""
        if not isinstance(exc, SolverError) and "loss is not finite" not in str(exc):
            return what
        from .blowup import explain

        return explain(self.model, what)


#: the objective an LBFGS line search sees at a trial point that cannot be solved: this many times the start's
#: above it (finite: an infinite value would make its cubic interpolation NaN)
TRIAL_PENALTY = 1e6


def _adam(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where torch has it for the CPU (2.4 and later): a third of the
    per-iteration cost of the loop over tensors, which matters when a solve takes a millisecond."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class _NumericalTrouble(Exception):
    pass
