"""Mechanistic models fitted to the data by ODE least squares, without torch: scipy's
``least_squares`` over ``solve_ivp``.

Used by ``ude discover`` to refit each candidate model (the equations with every ``NN[i]``
replaced by a sum of library terms with new coefficients) to the *data*, and to fit the
mechanistic-only model (every learned term set to 0) beside it. A handful of parameters and a
stiff-capable solver (LSODA) make this much faster than training through torch.

The objective is the fit's own (:mod:`ude_cli.likelihood.objective`), on the fit's whole statistical model: the
observables are computed from the states by the fit's observation model (formulas included, with their
observation parameters refitted), a per-experiment parameter has one value per experiment in the refit's vector,
an initial value given by a formula is computed from the parameters at every solve; the observed cells of the
training window are compared by the fit's loss (mean squared error, optionally divided by each observable's
spread or on log scale) or its noise model's negative log-likelihood (noise parameters held at the fit's
estimates), so that its numbers compare with the UDE's ``metrics.json``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..expressions import Expression, parse_expression
from ..problem import Parameter, Problem, initial_label
from .symbolic import Feature, information_criterion

#: Relative and absolute tolerances of the refit's ODE solves (the finite-difference Jacobian
#: needs solutions much more precise than its step).
RTOL = 1e-8
ATOL = 1e-10
#: A solution larger than this multiple of the data's largest magnitude counts as a blow-up.
BLOWUP_FACTOR = 1e3
#: Right-hand-side evaluations after which one solve is abandoned.
MAX_RHS_CALLS = 100_000
#: Residual (in loss units) given to a cell the solver did not reach.
PENALTY = 10.0


# -- candidate equations ------------------------------------------------------------------------

@dataclass(frozen=True)
class TermModel:
    """An expression standing in for one learned term: a sum of library features, each with a
    coefficient that becomes a new parameter.

    Attributes:
        term: ``(network, output)`` it replaces.
        features: the library features kept.
        names: the coefficient names, one per feature.
    """

    term: tuple[str, int]
    features: tuple[Feature, ...] = ()
    names: tuple[str, ...] = ()

    def text(self) -> str:
        """``"U0_x_y*x*y + U0_x*x"`` (``"0"`` when no feature is kept)."""
        if not self.features:
            return "0"
        parts = []
        for name, f in zip(self.names, self.features, strict=True):
            if f.text == "1":
                parts.append(name)
            elif _is_monomial(f.expression.tree):
                parts.append(f"{name}*{f.text}")
            else:
                parts.append(f"{name}*({f.text})")
        return " + ".join(parts)


def _is_monomial(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _is_monomial(node.left) and _is_monomial(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return isinstance(node.left, ast.Name) and isinstance(node.right, ast.Constant)
    return False


def coefficient_name(term: tuple[str, int], feature: Feature, taken: set[str]) -> str:
    """A new parameter name for the coefficient of ``feature`` in ``term``: ``U0_x_y``."""
    net, idx = term
    base = f"{net}{idx}_{feature.slug}"
    name = base
    k = 2
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    return name


class _Replace(ast.NodeTransformer):
    def __init__(self, replacements: Mapping[tuple[str, int], ast.expr], single: set[str]):
        self.replacements = replacements
        self.single = single

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        value, index = node.value, node.slice
        assert isinstance(value, ast.Name) and isinstance(index, ast.Constant) and isinstance(index.value, int)
        key = (value.id, index.value)  # the whitelist allows only NN[int]
        return self.replacements.get(key, node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.single:
            return self.replacements.get((node.id, 0), node)
        return node


def replace_terms(expression: Expression, term_models: Mapping[tuple[str, int], TermModel],
                  single_output: Collection[str] = frozenset()) -> Expression:
    """``expression`` with each ``NN[i]`` (and each bare single-output ``NN``) replaced by its
    term model, in parentheses; the result is parsed again through the whitelist."""
    replacements = {term: parse_expression(f"({tm.text()})").tree for term, tm in term_models.items()}
    tree = _Replace(replacements, set(single_output)).visit(ast.parse(expression.text, mode="eval").body)
    ast.fix_missing_locations(tree)
    return parse_expression(ast.unparse(tree))


# -- the ODE, in numpy ---------------------------------------------------------------------------

@dataclass
class Simulation:
    """A solution at requested times; rows after a failure are NaN.

    ``y`` is ``(T, n)`` for one parameter set and ``(T, P, n)`` for a batch of ``P`` (then ``ok``
    and ``messages`` are per set)."""

    t: np.ndarray
    y: np.ndarray
    ok: bool
    message: str = ""
    oks: np.ndarray | None = None
    messages: list[str] | None = None


class _TooManyCalls(Exception):
    pass


def experiment_constants(problem: Problem) -> list[dict[str, float]]:
    """Per experiment: every constant's value (a number, or the experiment's value of its column)."""
    return [{c: float(e.covariates[v]) if isinstance(v, str) else float(v) for c, v in problem.constants.items()}
            for e in problem.dataset.experiments]


class OdeSystem:
    """The problem's equations (without networks) as a numpy right-hand side, one solve per
    experiment with its own initial state, start time and constants.

    Several parameter sets can be solved at once (a batch, used for finite-difference Jacobians):
    the states of all sets form one system whose Jacobian is block-banded, with one Python call
    of the right-hand side per solver step for the whole batch.

    Arguments:
        problem: the resolved problem (its dataset, initial states, constants and t0 are used).
        equations: state -> expression (default: the problem's; they must not use networks).
        parameters: name -> parameter (default: the problem's).
    """

    def __init__(self, problem: Problem, equations: Mapping[str, Expression] | None = None,
                 parameters: Mapping[str, Parameter] | None = None):
        self.problem = problem
        self.states = list(problem.states)
        self.equations = dict(equations if equations is not None else problem.equations)
        self.parameters = dict(parameters if parameters is not None else problem.parameters)
        #: parameters with one value per experiment: their values are arrays whose last axis is the experiment
        self.per_experiment = {n for n, p in self.parameters.items() if p.per_experiment}
        self._functions = [self.equations[s].compile("numpy") for s in self.states]
        ds = problem.dataset
        self.experiments = ds.experiments
        self.constants = experiment_constants(problem)
        self.t0 = [problem.t0 if problem.t0 is not None else float(e.t[0]) for e in ds.experiments]
        #: states whose initial value is a formula of the parameters and constants: (index, compiled formula)
        self._initial_formulas = []
        for j, s in enumerate(self.states):
            formula = problem.initial[s].expression
            if problem.initial[s].source == "formula" and formula is not None:
                self._initial_formulas.append((j, formula.compile("numpy")))
        self.initial = self._initial_states()
        finite = np.concatenate([np.abs(e.values[np.isfinite(e.values)]) for e in ds.experiments] or [np.ones(1)])
        finite = np.concatenate([finite, *(np.abs(e.observations[np.isfinite(e.observations)]) for e in ds.experiments)])
        scale = max(float(finite.max()) if finite.size else 1.0, *(abs(float(v)) for v in self.initial.ravel()), 1e-12)
        self.bound = BLOWUP_FACTOR * scale

    def _initial_states(self) -> np.ndarray:
        ds = self.problem.dataset
        y0 = np.zeros((len(ds.experiments), len(self.states)))
        for b, e in enumerate(ds.experiments):
            for j, s in enumerate(self.states):
                spec = self.problem.initial[s]
                if spec.source == "observed":
                    y0[b, j] = e.values[0, j]
                elif spec.source == "value":
                    y0[b, j] = spec.value
                elif spec.source == "column":
                    assert spec.column is not None
                    y0[b, j] = e.covariates[spec.column]
        return self.with_formulas(self.values(), y0)

    def values(self, overrides: Mapping[str, float | np.ndarray] | None = None) -> dict[str, float | np.ndarray]:
        """Parameter values: the parameters' ``init`` (an array over the experiments for a per-experiment one),
        replaced by ``overrides``."""
        n = len(self.experiments)
        out: dict[str, float | np.ndarray] = {
            name: np.full(n, float(p.init)) if name in self.per_experiment else p.init
            for name, p in self.parameters.items()}
        for name, v in (overrides or {}).items():
            out[name] = self.experiment_array(name, v) if name in self.per_experiment else v
        return out

    def experiment_array(self, name: str, value) -> np.ndarray:
        """A per-experiment parameter's values ``(B,)`` from an array, a number (every experiment) or a mapping
        experiment name -> value (as ``discovery.json`` writes them)."""
        if isinstance(value, Mapping):
            return np.array([float(value[str(e.name)]) for e in self.experiments])
        return np.broadcast_to(np.asarray(value, dtype=float), (len(self.experiments),)).copy()

    def environment(self, b: int, values: Mapping[str, float | np.ndarray]) -> dict:
        """The names an expression of experiment ``b`` reads: its constants, ``t0`` and the parameter values
        (a per-experiment one's value for ``b``; a batch ``(P, B)`` gives ``(P,)``)."""
        env: dict = dict(self.constants[b])
        env["t0"] = self.t0[b]
        for name, v in values.items():
            if name in self.per_experiment:
                if isinstance(v, Mapping):
                    v = v[str(self.experiments[b].name)]
                a = np.asarray(v, dtype=float)
                env[name] = a[..., b] if a.ndim else a
            else:
                env[name] = np.asarray(v, dtype=float) if isinstance(v, np.ndarray) else float(v)
        return env

    def with_formulas(self, values: Mapping[str, float | np.ndarray], y0: np.ndarray) -> np.ndarray:
        """Initial states ``(B, n)`` with the states given by a formula computed from ``values``."""
        y0 = np.array(y0, dtype=float)
        if not self._initial_formulas:
            return y0
        for b in range(len(self.experiments)):
            env = self.environment(b, values)
            for j, f in self._initial_formulas:
                with np.errstate(all="ignore"):
                    y0[b, j] = float(np.asarray(f(env), dtype=float))
        return y0

    def rates(self, t: float, y: np.ndarray, env: dict) -> np.ndarray:
        """``dy/dt`` for states ``y`` of shape ``(n,)`` or ``(n, P)``."""
        env["t"] = t
        for j, s in enumerate(self.states):
            env[s] = y[j]
        out = np.empty(y.shape)
        for j, f in enumerate(self._functions):
            out[j] = f(env)  # a constant rate broadcasts
        return out

    def simulate(self, b: int, values: Mapping[str, float | np.ndarray], times: np.ndarray, y0: np.ndarray | None = None,
                 t0: float | None = None, bound: float | None = None) -> Simulation:
        """Solve experiment ``b`` from ``t0`` (default: its start) and return the states at ``times``.

        Arguments:
            b: experiment index (its constants; its initial state unless ``y0`` is given).
            values: parameter values by name.
            times: increasing times ``>= t0``.
            y0: initial state (default: the experiment's).
            t0: start time (default: the experiment's).
            bound: a state beyond this magnitude counts as a blow-up.

        Returns:
            The solution at ``times``; after a failure (blow-up, solver failure, non-finite rates)
            the rows not reached are NaN and ``ok`` is false.
        """
        y0 = self.initial[b] if y0 is None else np.asarray(y0, dtype=float)
        batch = {k: (self.experiment_array(k, v) if k in self.per_experiment else np.asarray(v, dtype=float))[None, ...]
                 for k, v in values.items()}
        sim = self.simulate_many(b, batch, times, y0[None, :],
                                 t0=t0, bound=bound)
        assert sim.oks is not None and sim.messages is not None  # simulate_many gives them
        return Simulation(sim.t, sim.y[:, 0, :], bool(sim.oks[0]), sim.messages[0])

    def simulate_many(self, b: int, values: Mapping[str, np.ndarray], times: np.ndarray, y0: np.ndarray,
                      t0: float | None = None, bound: float | None = None) -> Simulation:
        """Solve experiment ``b`` for ``P`` parameter sets at once.

        Arguments:
            values: parameter values by name, each an array ``(P,)`` (``(P, B)`` for a per-experiment one).
            y0: initial states ``(P, n)``.
            (the others as in :meth:`simulate`)

        Returns:
            ``y`` of shape ``(T, P, n)``, with ``oks`` and ``messages`` per set. A set that blows up
            is frozen from then on (its rows become NaN) so that the others finish.
        """
        from scipy.integrate import solve_ivp

        times = np.asarray(times, dtype=float)
        t0 = self.t0[b] if t0 is None else float(t0)
        y0 = np.asarray(y0, dtype=float)
        n_sets, n = y0.shape
        bound = self.bound if bound is None else bound
        env = self.environment(b, values)
        if self._initial_formulas:  # computed from the parameters, whatever y0 says
            y0 = y0.copy()
            with np.errstate(all="ignore"):
                for j, formula in self._initial_formulas:
                    y0[:, j] = np.broadcast_to(np.asarray(formula(env), dtype=float), (n_sets,))
            if not np.isfinite(y0).all():
                oks = np.isfinite(y0).all(axis=1)
                msg = "an initial value given by a formula is not finite"
                return Simulation(times, np.full((len(times), n_sets, n), np.nan), bool(oks.all()), msg, oks,
                                  ["" if ok else msg for ok in oks])
        out = np.full((len(times), n_sets, n), np.nan)
        at_start = times <= t0
        out[at_start] = y0
        later = times[~at_start]
        oks = np.ones(n_sets, dtype=bool)
        messages = [""] * n_sets
        if later.size == 0:
            return Simulation(times, out, True, "", oks, messages)
        calls = [0]
        hit = np.full(n_sets, np.inf)  # time each set left the bound (or became non-finite)
        frozen = [False]

        def f(t, flat):
            calls[0] += 1
            if calls[0] > MAX_RHS_CALLS:
                raise _TooManyCalls
            y = flat.reshape(n_sets, n)
            rates = self.rates(t, y.T, env).T  # (P, n)
            if not (np.abs(flat) <= bound).all() or frozen[0]:
                bad = ~np.all(np.abs(y) <= bound, axis=1)
                hit[bad] = np.minimum(hit[bad], t)
                frozen[0] = True
                rates[np.isfinite(hit)] = 0.0
            if not np.isfinite(rates).all():
                rates[~np.isfinite(rates)] = 0.0
            return rates.ravel()

        atol = (ATOL * np.maximum(np.abs(y0), 1.0)).ravel()
        try:
            with np.errstate(all="ignore"):
                sol = solve_ivp(f, (t0, float(later[-1])), y0.ravel(), t_eval=later, method="LSODA", rtol=RTOL,
                                atol=atol, lband=n - 1, uband=n - 1)
        except _TooManyCalls:
            oks[:] = False
            msg = (f"more than {MAX_RHS_CALLS} right-hand-side evaluations (the equations are too stiff, or the "
                   "solution blows up)")
            return Simulation(times, out, False, msg, oks, [msg] * n_sets)
        except (ValueError, ArithmeticError, OverflowError) as exc:
            oks[:] = False
            return Simulation(times, out, False, f"the solver failed: {exc}", oks, [f"the solver failed: {exc}"] * n_sets)
        got = sol.y.T if isinstance(sol.y, np.ndarray) and sol.y.ndim == 2 else np.zeros((0, n_sets * n))
        got = got.reshape(len(got), n_sets, n)
        rows = np.flatnonzero(~at_start)
        out[rows[: len(got)]] = got
        for p in range(n_sets):
            if np.isfinite(hit[p]):
                out[rows[later >= hit[p]], p, :] = np.nan
                oks[p] = False
                from .extrapolate import (
                    time_text,  # worded as every "diverges" (ude_cli.discovery.extrapolate)
                )

                messages[p] = (f"the solution diverges (leaves {BLOWUP_FACTOR:g} times the data's largest value, "
                               f"{bound:.3g}) at t = {time_text(hit[p])}")
            elif not sol.success or len(got) < len(later):
                oks[p] = False
                messages[p] = f"the solver failed: {sol.message}"
        return Simulation(times, out, bool(oks.all()), next((m for m in messages if m), ""), oks, messages)


# -- the objective --------------------------------------------------------------------------------

def unsupported(problem: Problem) -> str | None:
    """What the numpy refits cannot do (None: they can refit this problem): observables that read a network
    (discovery replaces the networks of the equations, not of the observables), pre-equilibration and events."""
    nets = set(problem.networks)
    using = [o.name for o in problem.observables.values()
             if o.state is None and ({n for n, _ in o.expression.network_refs} | (o.expression.names & nets))]
    if using:
        return f"observables that use a network ({', '.join(using)})"
    if problem.preequilibration is not None:  # the refits start from the initial values, not a steady state
        return "pre-equilibration (model.preequilibration)"
    if problem.events:  # the numpy refits solve without jumps
        return "jumps of states at given times (model.events)"
    return None


class DataObjective:
    """The fit's objective against the data (:class:`ude_cli.likelihood.objective.Objective`), for numpy
    predictions of the states ``(n, n_states)`` per experiment.

    The states are mapped to the observables by the fit's own observation model
    (:class:`ude_cli.likelihood.observation.ObservationModel`, evaluated in torch float64, at the parameter values
    given: observation and per-experiment parameters included); a directly observed state is its column, with no
    arithmetic. Without a noise model: the weighted residuals of the squared-error loss. With one: the noise
    parameters are held at the fit's estimates (``noise``), and each observed cell's residual is its deviance
    residual ``sign(y - mu) * sqrt(2 (nll(y | mu) - nll*))`` (``nll*`` the cell's smallest NLL over ``mu``), so
    that the least-squares refit minimises the same negative log-likelihood, computed by the same noise models, and
    :meth:`loss` is the fit's objective (the NLL per observation).

    Arguments:
        problem: the resolved problem (data, observables, loss settings, noise model, validation window).
        noise: noise parameter name -> value (default: each one's starting value).
    """

    def __init__(self, problem: Problem, noise: Mapping[str, float] | None = None):
        reason = unsupported(problem)
        if reason is not None:
            raise ValueError(f"the numpy refits do not handle {reason}")
        spec = problem.config.training.loss
        self.problem = problem
        self.log = bool(spec.log)
        ds = problem.dataset
        self.names = list(ds.observables)
        _, std = ds.observable_stats()
        self.weights = 1.0 / std if spec.scale == "std" else np.ones_like(std)
        self.floor = 1e-9 * np.maximum(std, 1e-300)
        self.experiments = ds.experiments
        self.spread = std
        self.likelihood = problem.likelihood
        observables = [problem.observables[n] for n in self.names]
        self.state_index = [problem.states.index(o.state) if o.state is not None else None for o in observables]
        self.direct = all(j is not None for j in self.state_index)
        self._index = np.array([j if j is not None else 0 for j in self.state_index], dtype=int)
        self._observation = None
        self._uses: set[str] = set()
        if not self.direct:
            from ..likelihood.observation import ObservationModel

            self._observation = ObservationModel(problem)
            self._uses = set().union(*[o.expression.names for o in observables if o.state is None])
        self.constants = experiment_constants(problem)
        self.per_experiment = {n for n, p in problem.parameters.items() if p.per_experiment}
        n = len(self.experiments)
        #: the values the observables are computed at when none are given: each parameter's ``init``
        self.defaults: dict[str, float | np.ndarray] = {
            name: np.full(n, p.init) if p.per_experiment else p.init for name, p in problem.parameters.items()}
        if self.likelihood:
            self._noise_setup(problem, dict(noise or {}))

    def _noise_setup(self, problem: Problem, noise: dict[str, float]) -> None:
        from ..likelihood.noise import noise_model

        self.models: list = [None] * len(self.names)
        self.noise_values: list[dict[str, float]] = [{} for _ in self.names]
        for k, name in enumerate(self.names):
            o = problem.observables[name]
            assert o.noise is not None  # with a likelihood, every observable has a noise model
            self.models[k] = noise_model(o.noise.distribution, o.noise.error)
            self.noise_values[k] = {role: self._noise_value(problem, p, noise) for role, p in o.noise_parameters.items()}
        self.saturated = [self._saturated(e.observations) for e in self.experiments]

    def _noise_value(self, problem: Problem, name: str, noise: Mapping[str, float]) -> float:
        """The fit's estimate (``noise``), else the starting value, else (a noise formula) its value at the
        parameters' starting values."""
        if name in noise:
            return float(noise[name])
        if name in problem.noise_parameters:
            return float(problem.noise_parameters[name].init)
        env = {**self.constants[0], **{n: p.init for n, p in problem.parameters.items()}}
        return float(problem.noise_formulas[name].compile("numpy")(env))

    # -- predictions of the observables ---------------------------------------------------------------
    def observe(self, b: int, states: np.ndarray, values: Mapping[str, float | np.ndarray] | None = None,
                times: np.ndarray | None = None) -> np.ndarray:
        """The observables ``(T, P, n_observables)`` of experiment ``b`` from states ``(T, P, n_states)`` of ``P``
        parameter sets at ``values`` (name -> a number or ``(P,)``; a per-experiment one ``(B,)`` or
        ``(P, B)``; default: :attr:`defaults`), at ``times`` (default: the experiment's observation times)."""
        if self.direct:
            return states[..., self._index]
        import torch

        assert self._observation is not None  # not direct: the observation model is built
        n_t, n_sets, _ = states.shape
        source = self.defaults if values is None else values
        params = {}
        for name in self._uses:
            if name not in source:
                continue
            v = source[name]
            a = np.asarray([v[str(self.experiments[b].name)]] if isinstance(v, Mapping) else v, dtype=float)
            if name in self.per_experiment and a.ndim:
                a = a[..., b]
            params[name] = torch.as_tensor(np.broadcast_to(a, (n_sets,)).copy(), dtype=torch.float64)[:, None]
        solution = torch.as_tensor(np.ascontiguousarray(states), dtype=torch.float64)[:, :, None, :]
        t = self.experiments[b].t if times is None else times
        with torch.no_grad():
            out = self._observation.predict(solution, torch.as_tensor(t, dtype=torch.float64), params,
                                            dict(self.constants[b]), None)
        return out[:, :, 0, :].numpy()

    def curves(self, trajectories: Sequence[tuple[np.ndarray, np.ndarray]],
               values: Mapping[str, float | np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Per experiment: each observable given by a formula along a trajectory ``(t, y (T, n_states))`` at
        ``values`` (name -> ``(T,)``; none for directly observed states, whose curve is the state's)."""
        names = [(k, o) for k, (o, j) in enumerate(zip(self.names, self.state_index, strict=True)) if j is None]
        if not names:
            return [{} for _ in trajectories]
        out = []
        for b, (t, y) in enumerate(trajectories):
            with np.errstate(all="ignore"):
                pred = self.observe(b, np.asarray(y, dtype=float)[:, None, :], values, times=np.asarray(t, dtype=float))
            out.append({o: pred[:, 0, k] for k, o in names})
        return out

    def observed(self, predictions: Sequence[np.ndarray],
                 values: Mapping[str, float | np.ndarray] | None = None) -> list[np.ndarray]:
        """Per experiment: the observables ``(T, n_observables)`` from the states ``(T, n_states)`` at ``values``."""
        return [self.observe(b, np.asarray(p)[:, None, :], values)[:, 0, :] for b, p in enumerate(predictions)]

    # -- the likelihood -----------------------------------------------------------------------------
    def _cell_nll(self, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """Per cell ``(..., n_observables)``: the noise models' NLL."""
        import torch

        out = np.full(np.broadcast(y, mu).shape, np.nan)
        for j, model in enumerate(self.models):
            m = mu[..., j]
            if model.positive:
                m = np.maximum(m, self.floor[j])
            p = {k: torch.tensor(v, dtype=torch.float64) for k, v in self.noise_values[j].items()}
            with torch.no_grad():
                out[..., j] = model.nll(torch.tensor(np.broadcast_to(y[..., j], m.shape), dtype=torch.float64),
                                        torch.tensor(m, dtype=torch.float64), p).numpy()
        return out

    def _saturated(self, values: np.ndarray) -> np.ndarray:
        """Each cell's smallest NLL over the prediction: at ``mu = y`` for these models, except where the sd
        grows with the prediction (normal, proportional or combined error), found there by a golden-section
        search over ``mu = y * m``, ``m`` in [0.01, 100] on log scale."""
        y = np.where(np.isfinite(values), values, 1.0)
        best = self._cell_nll(y, y)
        for j, model in enumerate(self.models):
            if model.name != "normal" or model.error == "constant":
                continue
            yj = np.where(y[:, j] != 0, y[:, j], self.floor[j])

            def f(log_m, yj=yj, j=j):
                mu = y.copy()
                mu[:, j] = yj * np.exp(log_m)
                return self._cell_nll(y, mu)[:, j]

            lo, hi = np.full(len(yj), math.log(0.01)), np.full(len(yj), math.log(100.0))
            golden = (math.sqrt(5) - 1) / 2
            for _ in range(90):
                a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
                left = f(a) < f(b)
                hi, lo = np.where(left, b, hi), np.where(left, lo, a)
            best[:, j] = np.minimum(best[:, j], f((lo + hi) / 2))
        return best

    def transform(self, y: np.ndarray, column: int | None = None) -> np.ndarray:
        """Values as the loss compares them (logarithms with a floor for a log loss); ``y`` is
        ``(..., n_observables)``, or the values of observable ``column`` alone."""
        if self.log:
            floor = self.floor if column is None else self.floor[column]
            with np.errstate(all="ignore"):
                return np.log(np.maximum(y, floor))
        return y

    def mask(self, b: int, split: str) -> np.ndarray:
        """The observed cells ``(T, n_observables)`` of experiment ``b`` in ``split``."""
        e = self.experiments[b]
        rows = e.train if split == "train" else ~e.train
        return np.isfinite(e.observations) & rows[:, None]

    def residuals_observed(self, observed: Sequence[np.ndarray], split: str = "train") -> np.ndarray:
        """Weighted (or deviance) residuals ``(P, m)`` at the observed cells of ``split`` of observable predictions
        ``(T, P, n_observables)`` per experiment (a penalty where a solve failed)."""
        parts = []
        n_sets = observed[0].shape[1] if observed else 1
        for b, pred in enumerate(observed):
            e = self.experiments[b]
            m = self.mask(b, split)
            y = np.where(np.isfinite(e.observations), e.observations, 1.0)[:, None, :]
            if self.likelihood:
                with np.errstate(all="ignore"):
                    excess = np.maximum(self._cell_nll(y, pred) - self.saturated[b][:, None, :], 0.0)
                    r = np.where(y >= pred, 1.0, -1.0) * np.sqrt(2.0 * excess)  # sign(0) would drop the excess
                r = np.where(np.isfinite(r), r, PENALTY)
            else:
                with np.errstate(all="ignore"):
                    r = (self.transform(pred) - self.transform(y)) * self.weights
                penalty = PENALTY * (1.0 if self.log else self.spread * self.weights)
                r = np.where(np.isfinite(r), r, np.broadcast_to(penalty, r.shape))
            parts.append(r.transpose(1, 0, 2)[:, m])
        # C order, as one set's residuals stacked: the optimiser's linear algebra rounds by the memory layout
        return np.ascontiguousarray(np.concatenate(parts, axis=1)) if parts else np.zeros((n_sets, 0))

    def residuals(self, predictions: Sequence[np.ndarray], split: str = "train",
                  values: Mapping[str, float | np.ndarray] | None = None) -> np.ndarray:
        """Weighted (or deviance) residuals at the observed cells of ``split`` of state predictions ``(T, n_states)``
        per experiment, the observables computed at ``values`` (default: :attr:`defaults`)."""
        observed = [self.observe(b, np.asarray(p)[:, None, :], values) for b, p in enumerate(predictions)]
        return self.residuals_observed(observed, split)[0]

    def residuals_many(self, predictions: Sequence[np.ndarray], values: Mapping[str, np.ndarray],
                       split: str = "train") -> np.ndarray:
        """:meth:`residuals` of ``P`` parameter sets at once: states ``(T, P, n_states)`` per experiment, values
        name -> ``(P,)`` (``(P, B)`` per experiment); ``(P, m)``."""
        return self.residuals_observed([self.observe(b, p, values) for b, p in enumerate(predictions)], split)

    def constant(self, split: str) -> float:
        """With a noise model: the sum of the observed cells' smallest NLLs (NLL = sum(r^2)/2 + this)."""
        if not self.likelihood:
            return 0.0
        return float(sum(self.saturated[b][self.mask(b, split)].sum() for b in range(len(self.experiments))))

    def loss_of(self, residuals: np.ndarray, split: str = "train") -> float:
        """The fit's objective from this split's residuals: the mean squared residual, or with a noise model
        the NLL per observation."""
        if not residuals.size:
            return 0.0
        if self.likelihood:
            return float((0.5 * np.sum(residuals * residuals) + self.constant(split)) / residuals.size)
        return float(np.mean(residuals * residuals))

    def nll_of(self, residuals: np.ndarray, split: str = "train") -> float:
        """The negative log-likelihood, normalising constants included, from this split's residuals (with a noise
        model; as :meth:`ude_cli.likelihood.objective.Objective.nll`)."""
        return float(0.5 * np.sum(residuals * residuals) + self.constant(split))

    def criterion(self, residuals: np.ndarray, k: int) -> float:
        """BIC of a refit from its training residuals: ``2 NLL + k log n`` with a noise model (its parameters
        held at the fit's estimates), else the Gaussian ``n log(RSS/n) + k log n``."""
        n = max(residuals.size, 1)
        if self.likelihood:
            return float(2.0 * n * self.loss_of(residuals, "train") + k * np.log(n))
        return information_criterion(self.loss_of(residuals) * n, n, k)

    def cell_groups(self, split: str = "train") -> np.ndarray:
        """For each residual of ``split`` (in :meth:`residuals`' order), the observation time it belongs to
        (an index over every experiment's rows): the unit that resampling draws."""
        out, offset = [], 0
        for b in range(len(self.experiments)):
            m = self.mask(b, split)
            out.append(np.nonzero(m)[0] + offset)
            offset += m.shape[0]
        return np.concatenate(out) if out else np.zeros(0, dtype=int)

    def cell_states(self, split: str = "train") -> np.ndarray:
        """For each residual of ``split``: the index of its observable (with :meth:`cell_groups`, the sequences in
        time order that the runs test reads)."""
        parts = [np.nonzero(self.mask(b, split))[1] for b in range(len(self.experiments))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=int)

    def cell_experiments(self, split: str = "train") -> np.ndarray:
        """For each residual of ``split``: the index of its experiment."""
        parts = [np.full(int(self.mask(b, split).sum()), b) for b in range(len(self.experiments))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=int)

    def cell_constants(self, split: str = "train") -> np.ndarray:
        """For each residual of ``split``: the cell's smallest NLL (with a noise model; zeros without), so
        that the NLL of any subset of cells is ``sum(r^2)/2 + sum(these)``."""
        if not self.likelihood:
            return np.zeros(self.count(split))
        return np.concatenate([self.saturated[b][self.mask(b, split)] for b in range(len(self.experiments))])

    def count(self, split: str) -> int:
        return int(sum(self.mask(b, split).sum() for b in range(len(self.experiments))))

    def loss(self, predictions: Sequence[np.ndarray], split: str = "train",
             values: Mapping[str, float | np.ndarray] | None = None) -> float | None:
        r = self.residuals(predictions, split, values)
        return self.loss_of(r, split) if r.size else None

    def mse_per_observable(self, observed: Sequence[np.ndarray], split: str) -> dict | None:
        """Plain MSE in data units per observable (None without observations in ``split``), from the observable
        predictions ``(T, n_observables)`` per experiment."""
        sq = np.zeros(len(self.names))
        cnt = np.zeros(len(self.names))
        for b, pred in enumerate(observed):
            e = self.experiments[b]
            m = self.mask(b, split)
            with np.errstate(all="ignore"):
                d2 = np.where(m, (pred - np.where(np.isfinite(e.observations), e.observations, 0.0)) ** 2, 0.0)
            sq += np.where(np.isfinite(d2), d2, np.inf).sum(axis=0)
            cnt += m.sum(axis=0)
        if cnt.sum() == 0:
            return None
        return {o: float(sq[j] / cnt[j]) for j, o in enumerate(self.names) if cnt[j] > 0}


def fitted_values(model, start: int) -> dict | None:
    """The fitted model's parameter values in the refits' layout (a per-experiment one ``(B,)``), or None."""
    if model is None or not hasattr(model, "parameter_values"):
        return getattr(model, "values", None)  # a stand-in with its values (tests)
    return {n: (v[start] if v.ndim == 2 else float(v[start])) for n, v in model.parameter_values().items()}


def observe_extrapolations(objective: DataObjective, extrapolations: Mapping,
                           values: Mapping[str, Mapping | None]) -> None:
    """Each model's observables given by a formula along its extrapolated trajectories
    (:class:`~ude_cli.discovery.extrapolate.Extrapolation`, name -> it), at that model's values (for the figures)."""
    for name, ext in extrapolations.items():
        given = values.get(name)
        if given is not None and ext.trajectories:
            try:
                ext.observables = objective.curves(ext.trajectories, given)
            except KeyError:  # a value the formula needs is not known for this model
                ext.observables = []


def runs_test(sequences: Sequence[np.ndarray]) -> tuple[float, float]:
    """Wald–Wolfowitz runs test on the signs of residual sequences (each in time order).

    Too few runs (long stretches of one sign) mean the residuals are systematic, not noise.

    Returns:
        ``(z, p)``: the standardised number of runs and the one-sided p-value of so few runs.
    """
    runs = expected = variance = 0.0
    for seq in sequences:
        s = np.sign(np.asarray(seq, dtype=float))
        s = s[s != 0]
        n = len(s)
        n_pos, n_neg = float((s > 0).sum()), float((s < 0).sum())
        if n < 2 or n_pos == 0 or n_neg == 0:
            continue
        runs += 1 + float(np.sum(s[1:] != s[:-1]))
        expected += 1 + 2 * n_pos * n_neg / n
        variance += 2 * n_pos * n_neg * (2 * n_pos * n_neg - n) / (n * n * (n - 1))
    if variance <= 0:
        return 0.0, 1.0
    z = (runs - expected) / math.sqrt(variance)
    return float(z), float(0.5 * math.erfc(-z / math.sqrt(2)))


# -- the refit -----------------------------------------------------------------------------------

@dataclass
class Refit:
    """A model fitted to the data by ODE least squares.

    Attributes:
        values: every parameter's value (fixed ones included), by name; a per-experiment parameter's is an
            array over the experiments ``(B,)``.
        initial: initial state per experiment ``(B, n)`` (a state given by a formula: its value at ``values``).
        free: names of the fitted values (parameters, ``name[experiment]`` for each experiment's value of a
            per-experiment one as in ``params.csv``, then ``state(t0)[experiment]``).
        train_loss, validation_loss: the loss (as the fit's ``metrics.json``) per window.
        train_mse, validation_mse: plain MSE in data units per observable.
        bic: ``n log(train_loss) + k log n`` over the ``n`` training cells and ``k`` fitted values.
        n_train: training cells.
        success: every solve succeeded and the optimiser converged to finite values.
        message: why not, when not.
        runs_z, runs_p: runs test of the training residuals (see :func:`runs_test`).
        evaluations: residual evaluations used.
    """

    values: dict[str, Any]  # a number, or an array over the experiments for a per-experiment parameter
    initial: np.ndarray
    free: list[str]
    train_loss: float
    validation_loss: float | None
    train_mse: dict | None
    validation_mse: dict | None
    bic: float
    n_train: int
    success: bool
    message: str = ""
    runs_z: float = 0.0
    runs_p: float = 1.0
    evaluations: int = 0
    extra: dict = field(default_factory=dict)
    #: the training residuals at ``values`` (the objective's, ``(m,)``) and their Jacobian with respect to
    #: ``free`` (``(m, k)``, the optimiser's forward differences at its solution; None when not fitted)
    residuals: np.ndarray | None = field(default=None, repr=False)
    jacobian: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_free(self) -> int:
        return len(self.free)


def _bounds(p: Parameter) -> tuple[float, float]:
    lo = -np.inf if p.lower is None else float(p.lower)
    hi = np.inf if p.upper is None else float(p.upper)
    if p.positive:
        lo = max(lo, 0.0)
    return lo, hi


def _inside(x: float, lo: float, hi: float) -> float:
    if lo < x < hi:
        return x
    width = (hi - lo) if np.isfinite(hi - lo) else max(abs(x), 1.0)
    return float(np.clip(x, lo + 1e-6 * width, hi - 1e-6 * width)) if np.isfinite(lo) or np.isfinite(hi) else x


def predict_all(system: OdeSystem, values: Mapping[str, float | np.ndarray], initial: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Every experiment at its observation times; the first failure message (or "")."""
    preds, message = [], ""
    for b, e in enumerate(system.experiments):
        sim = system.simulate(b, values, e.t, y0=initial[b])
        if not sim.ok and not message:
            message = f"experiment '{e.name}': {sim.message}"
        preds.append(sim.y)
    return preds, message


def refit(system: OdeSystem, objective: DataObjective, start: Mapping[str, float | np.ndarray] | None = None,
          initial: np.ndarray | None = None, max_evaluations: int = 200) -> Refit:
    """Fit the learned parameters (and learned initial states) of ``system`` to the data.

    scipy's trust-region reflective ``least_squares`` with bounds (positive parameters stay > 0);
    its Jacobian is a forward difference computed from one batched solve of every perturbed set.

    Arguments:
        system: the equations and parameters; parameters marked fixed are kept.
        objective: the loss against the data.
        start: starting values (default: each parameter's ``init``).
        initial: starting initial states ``(B, n)`` (default: the system's).
        max_evaluations: most residual evaluations of the optimiser.

    Returns:
        The fitted values and their scores; a failed solve or fit gives ``success = False`` and
        a message (never an exception).
    """
    from scipy.optimize import least_squares

    values = system.values(start)
    y0 = np.array(system.initial if initial is None else initial, dtype=float)
    # each fitted value: (label, parameter name ("" for an initial state), experiment or None, (experiment, state)
    # or None)
    free: list[tuple[str, str, int | None, tuple[int, int] | None]] = []
    x0, lower, upper = [], [], []
    for name, p in system.parameters.items():
        if p.fixed:
            continue
        lo, hi = _bounds(p)
        if name in system.per_experiment:
            for b, e in enumerate(system.experiments):
                free.append((f"{name}[{e.name}]", name, b, None))
                x0.append(_inside(float(np.asarray(values[name])[b]), lo, hi))
                lower.append(lo)
                upper.append(hi)
            continue
        free.append((name, name, None, None))
        x0.append(_inside(float(values[name]), lo, hi))
        lower.append(lo)
        upper.append(hi)
    problem = system.problem
    for j, s in enumerate(system.states):
        spec = problem.initial[s]
        if not spec.learn:
            continue
        for b, e in enumerate(system.experiments):
            lo = 0.0 if spec.positive else -np.inf
            label = initial_label(s, e.name, len(system.experiments))
            free.append((label, "", None, (b, j)))
            x0.append(_inside(float(y0[b, j]), lo, np.inf))
            lower.append(lo)
            upper.append(np.inf)
    lower_a, upper_a = np.array(lower, dtype=float), np.array(upper, dtype=float)

    def unpack(x):
        vals: dict[str, Any] = {n: (np.array(v, dtype=float) if n in system.per_experiment else v)
                                for n, v in values.items()}
        init = y0.copy()
        for (_, name, b, where), v in zip(free, x, strict=True):
            if where is not None:
                init[where] = float(v)
            elif b is not None:
                vals[name][b] = float(v)
            else:
                vals[name] = float(v)
        return vals, system.with_formulas(vals, init)

    evaluations = [0]

    def batch_residuals(xs: np.ndarray) -> np.ndarray:
        """Residuals of each row of ``xs`` ``(P, k)``: ``(P, m)``."""
        evaluations[0] += len(xs)
        n_sets = len(xs)
        vals: dict[str, np.ndarray] = {  # (P,), or (P, B) per experiment
            n: (np.repeat(np.asarray(v, dtype=float)[None, :], n_sets, axis=0) if n in system.per_experiment
                else np.full(n_sets, float(v))) for n, v in values.items()}
        inits = np.repeat(y0[None, :, :], n_sets, axis=0)  # (P, B, n)
        for i, (_, name, b, where) in enumerate(free):
            if where is not None:
                inits[:, where[0], where[1]] = xs[:, i]
            elif b is not None:
                vals[name][:, b] = xs[:, i]
            else:
                vals[name] = xs[:, i].astype(float)
        preds = [system.simulate_many(b, vals, e.t, inits[:, b, :]).y for b, e in enumerate(system.experiments)]
        return objective.residuals_many(preds, vals, "train")

    def fun(x):
        return batch_residuals(np.asarray(x, dtype=float)[None, :])[0]

    def jac(x):
        x = np.asarray(x, dtype=float)
        h = 1e-6 * np.maximum(1.0, np.abs(x))
        h = np.where(x + h > upper_a, -h, h)  # step back from an upper bound
        xs = np.vstack([x, x + np.diag(h)])
        r = batch_residuals(xs)
        return ((r[1:] - r[0]) / h[:, None]).T

    message = ""
    converged = True
    jacobian = None
    if free:
        try:
            sol = least_squares(fun, np.array(x0), jac=jac, bounds=(lower_a, upper_a), method="trf",
                                x_scale="jac", max_nfev=max_evaluations)
            x = sol.x
            jacobian = np.asarray(sol.jac, dtype=float)  # trf recomputes it at each accepted point: at x
            converged = bool(sol.status > 0)
            if not converged:
                message = f"the optimiser stopped after {max_evaluations} evaluations without converging"
        except (ValueError, np.linalg.LinAlgError) as exc:
            x, converged, message = np.array(x0), False, f"the optimiser failed: {exc}"
    else:
        x = np.array([])
    vals, init = unpack(x)
    fitted = score(system, objective, vals, init, [label for label, *_ in free], evaluations[0],
                   converged=converged, message=message)
    if jacobian is None and not free:
        jacobian = np.zeros((fitted.n_train, 0))
    if jacobian is not None and fitted.residuals is not None and jacobian.shape[0] == fitted.residuals.size:
        fitted.jacobian = jacobian
    return fitted


def score(system: OdeSystem, objective: DataObjective, values: Mapping[str, float | np.ndarray], initial: np.ndarray,
          free: Sequence[str] = (), evaluations: int = 0, converged: bool = True, message: str = "") -> Refit:
    """Scores of given values on the training and validation windows (no fitting)."""
    initial = system.with_formulas(values, initial)
    preds, failure = predict_all(system, values, initial)
    observed = [o[:, None, :] for o in objective.observed(preds, values)]
    train = objective.residuals_observed(observed, "train")[0]
    train_loss = objective.loss_of(train, "train")
    ok = not failure and converged and all(np.isfinite(np.asarray(v, dtype=float)).all() for v in values.values())
    sequences: list[np.ndarray] = []
    for b, pred in enumerate(observed):
        e = system.experiments[b]
        obs = objective.transform(np.where(np.isfinite(e.observations), e.observations, 1.0))
        with np.errstate(all="ignore"):
            r = objective.transform(pred[:, 0, :]) - obs
        m = objective.mask(b, "train")
        sequences.extend(r[m[:, j], j] for j in range(r.shape[1]) if m[:, j].any())
    z, p = runs_test(sequences)
    bic = objective.criterion(train, len(free)) if failure == "" else float("inf")
    validation = objective.residuals_observed(observed, "validation")[0]
    flat = [o[:, 0, :] for o in observed]
    return Refit(values=dict(values), initial=np.array(initial), free=list(free), train_loss=train_loss,
                 validation_loss=objective.loss_of(validation, "validation") if validation.size else None,
                 train_mse=objective.mse_per_observable(flat, "train"),
                 validation_mse=objective.mse_per_observable(flat, "validation"),
                 bic=bic, n_train=int(train.size), success=ok, message=failure or message, runs_z=z, runs_p=p,
                 evaluations=evaluations, residuals=train)


# -- the noise parameters of a refitted model ------------------------------------------------------------------

def estimate_noise(objective: DataObjective, observed: Sequence[np.ndarray]) -> dict[str, float]:
    """The maximum-likelihood values of the learned noise parameters (``problem.noise_parameters`` not fixed) given
    the observable predictions ``(T, n_observables)`` per experiment: the training cells' NLL by the noise models
    themselves, minimised over the log of each value within its bounds (L-BFGS-B, torch gradients), from the
    objective's current values. Empty without a noise model or without learned noise parameters."""
    import torch
    from scipy.optimize import minimize

    if not objective.likelihood:
        return {}
    problem = objective.problem
    free = {n: p for n, p in problem.noise_parameters.items() if not p.fixed}
    if not free:
        return {}
    names = list(free)
    cells = []
    for j, name in enumerate(objective.names):
        roles = problem.observables[name].noise_parameters
        if not any(pname in free for pname in roles.values()):
            continue
        ys, mus = [], []
        for b, pred in enumerate(observed):
            m = objective.mask(b, "train")[:, j]
            ys.append(objective.experiments[b].observations[m, j])
            mus.append(np.asarray(pred, dtype=float)[m, j])
        y, mu = np.concatenate(ys), np.concatenate(mus)
        model = objective.models[j]
        if model.positive:
            mu = np.maximum(mu, objective.floor[j])
        if not np.all(np.isfinite(mu)):
            return {}
        cells.append((model, torch.tensor(y, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64), roles, j))
    start = {n: objective.noise_values[j][role] for _, _, _, roles, j in cells for role, n in roles.items()}
    z0 = np.array([math.log(start.get(n, free[n].init)) for n in names])
    bounds = [(math.log(p.lower) if p.lower else None, math.log(p.upper) if p.upper else None)
              for p in free.values()]

    def nll(z: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        values = {n: torch.exp(theta[i]) for i, n in enumerate(names)}
        total = torch.zeros((), dtype=torch.float64)
        for model, y, mu, roles, j in cells:
            p = {role: values[n] if n in values else torch.tensor(objective.noise_values[j][role], dtype=torch.float64)
                 for role, n in roles.items()}
            total = total + model.nll(y, mu, p).sum()
        if not torch.isfinite(total):
            return float("inf"), np.zeros_like(z)
        total.backward()
        assert theta.grad is not None  # backward fills it
        return float(total.detach()), theta.grad.numpy().copy()

    sol = minimize(nll, z0, jac=True, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(sol.x)):
        return {}
    return {n: float(math.exp(v)) for n, v in zip(names, sol.x, strict=True)}


def refit_with_noise(system: OdeSystem, problem: Problem, noise: Mapping[str, float], fit: Refit,
                     rounds: int = 8, tolerance: float = 1e-4) -> tuple[Refit, dict[str, float]] | None:
    """``fit`` (refitted with the noise parameters held at ``noise``) and its learned noise parameters estimated
    jointly: alternately the noise parameters' maximum-likelihood values given the predictions
    (:func:`estimate_noise`) and the refit of every other value with them held, until no noise value changes by more
    than ``tolerance`` relative. The joint optimum is where a profile likelihood must start: with the noise held at
    another model's estimates (the UDE's, as the selection holds them) or at the config's starting values, a profile
    measures from a point that is not the maximum. None without learned noise parameters or when a solve fails."""
    noise = dict(noise)
    current = fit
    for _ in range(rounds):
        objective = DataObjective(problem, noise=noise)
        preds, failure = predict_all(system, current.values, current.initial)
        if failure:
            return None
        estimate = estimate_noise(objective, objective.observed(preds, current.values))
        if not estimate:
            return None
        moved = max(abs(math.log(v / noise[n])) if n in noise else math.inf for n, v in estimate.items())
        noise.update(estimate)
        if moved <= tolerance:
            break
        again = refit(system, DataObjective(problem, noise=noise), current.values, current.initial)
        if not again.success:
            return None
        current = again
    return current, noise
