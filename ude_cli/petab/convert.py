"""A PEtab problem as a ``ude`` config + data CSV, which the ordinary machinery resolves, fits and evaluates.

The translation, piece by piece:

- SBML states and their right-hand sides -> ``model.states`` / ``model.equations`` (assignment rules
  substituted), initial values -> ``model.initial`` (numbers or formulas of parameters), ``model.t0: 0``;
- estimated parameters -> ``model.parameters`` with the nominal value as ``init``, the bounds, and
  ``positive`` (log scale) for ``log``/``log10``; fixed ones and SBML constants -> ``model.constants``;
- condition-table targets: one value for every condition -> substituted; numbers that differ by condition ->
  a constant read per experiment from a data column; different parameters per condition: not supported;
- measurement rows -> one CSV row per (condition, time), a column per observable, and the condition as the
  experiment. An observable whose rows carry different ``observableParameters``/``noiseParameters`` becomes
  one ``ude`` observable per distinct combination (``OBS__2``, ...), so that the placeholders are substituted;
  repeated measurements of one cell go into replicate experiments (``COND__rep2``) of the same condition;
- observables with ``lin`` transformation and normal noise -> ``noise: normal``; ``log`` / ``log10`` (or v2's
  ``log-normal``) -> ``lognormal`` (the density of ``log10 y ~ N(log10 mu, s^2)`` is that of
  ``log y ~ N(log mu, (s ln 10)^2)``, so the noise parameter is ``s*ln(10)``); Laplace likewise ->
  ``laplace`` / ``loglaplace``; sigma fixed (a number), estimated (one parameter of its own) or a formula of
  parameters; ``a + b * (the observable formula)`` -> combined (proportional) error. The count distributions
  of PEtab v2's draft (pull request 654): ``poisson`` (rate = the observable formula) -> ``poisson``;
  ``negative-binomial`` (r = the observable formula, p = the noise formula) -> ``negative_binomial`` with
  mean ``r (1 - p) / p`` and dispersion ``r``. Other noise formulas of states, and ``binomial``, are not
  supported (one line each).

:func:`import_problem` writes ``config.yaml``, ``data.csv`` and ``petab.json`` (how the PEtab ids map to the
config's names, which :mod:`.evaluate` reads).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sympy as sp

from ..errors import ConfigError
from .language import Unsupported, safe_name, to_text
from .problem import PetabProblem, load_problem
from .sbml import TIME

LN10 = math.log(10.0)
#: Solver settings of an imported config: PEtab's references are computed at tight tolerances.
SOLVER = {"method": "auto", "rtol": 1.0e-8, "atol": 1.0e-10, "max_steps": 100000}


@dataclass
class Translation:
    """A PEtab problem as a ``ude`` config (a dict), its data (a frame) and the map between their names."""

    config: dict
    data: pd.DataFrame
    #: PEtab parameter id -> {"name": ude name, "kind": "parameter" | "noise", "factor": ude value / PEtab value,
    #: "scale", "nominal", "estimate"}
    parameters: dict[str, dict] = field(default_factory=dict)
    #: per measurement row (table order): [observableId, conditionId, time, measurement, experiment, column]
    rows: list[list] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: network -> its weights (``weight0, bias0, ...``) and its PEtab layer ids
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    networks: dict[str, dict] = field(default_factory=dict)


def _names(problem: PetabProblem) -> dict[str, str]:
    """Every id -> its name in the config (``t``, keywords and function names get an underscore)."""
    ids = set(problem.sbml.kinds) | set(problem.parameters)
    out = {i: safe_name(i) for i in sorted(ids)}
    taken = {i for i in ids if out[i] == i}
    for i in sorted(ids):  # a renamed id that meets another id (``_k`` and ``u_k``) gets more underscores
        while out[i] != i and out[i] in taken:
            out[i] += "_"
        taken.add(out[i])
    out[TIME.name] = "t"
    return out


def _text(expr: sp.Expr, names: Mapping[str, str], where: str, what: str) -> str:
    try:
        return to_text(expr, names)
    except Unsupported as exc:
        raise ConfigError(f"{what}: {exc} is not supported in ude's equation language", where=where) from None


#: the one state of a model that has none
NO_STATE = "no_state__"


def _parameter_spec(pid: str, par, notes: list[str]) -> dict:
    """The config's spec of an estimated parameter: its nominal value as init (moved inside the bounds if it
    is not, with a note), the bounds, positive for a log-scaled one. A uniform or log-uniform prior narrower than
    the bounds narrows them (outside, the log-posterior is -inf, which a line search cannot cross back; PEtab's
    library builds its uniform on the intersection too)."""
    lower, upper = par.lower, par.upper
    prior = par.prior
    if prior is not None and prior.kind in ("uniform", "log-uniform") and not prior.on_scale:
        lower, upper = max(lower, prior.parameters[0]), min(upper, prior.parameters[1])
    spec = {"init": par.nominal, "bounds": [_finite(lower), _finite(upper)]}
    if par.scale != "lin":
        spec["positive"] = True
        if spec["bounds"][0] is not None and spec["bounds"][0] <= 0:
            spec["bounds"][0] = None
    lo, hi = spec["bounds"]
    spec["init"] = _start(par.nominal, lo, hi, par.scale != "lin")
    if not par.lower <= par.nominal <= par.upper or (par.scale != "lin" and par.nominal <= 0):
        why = (f"lies outside its bounds [{par.lower:g}, {par.upper:g}]" if not par.lower <= par.nominal
               <= par.upper else f"is not positive, on {par.scale} scale")
        notes.append(f"parameter {pid}: its nominalValue {par.nominal:g} {why}: the fit starts it at "
                     f"{spec['init']:.6g}; `ude evaluate` at the nominal values uses {par.nominal:g}, as the "
                     f"table says")
    if spec["bounds"] == [None, None]:
        del spec["bounds"]
    return spec


def _value(text: str, problem: PetabProblem) -> sp.Expr | None:
    """A condition-table or placeholder cell: a number, a parameter (a symbol), a formula of parameters (PEtab v2's
    condition table: ``initial_A1 + initial_A2``; parsed by the formula language, not evaluated), or None
    (empty / NaN)."""
    from ..expressions import ExpressionError
    from .language import parse_formula

    text = str(text).strip()
    if text == "" or text.lower() == "nan":
        return None
    try:
        return sp.Float(float(text))
    except ValueError:
        pass
    if text in problem.parameters or text in problem.sbml.kinds:
        return sp.Symbol(text)
    try:
        expr = parse_formula(text)
    except ExpressionError:
        raise ValueError(text) from None
    if not expr.free_symbols:  # 2*3, 1/3
        return _real_number(expr, text)
    if any(x.name not in problem.parameters and x.name not in problem.sbml.kinds for x in expr.free_symbols):
        raise ValueError(text)
    return expr


def _real_number(expr: sp.Expr, text: str) -> sp.Expr:
    """``expr`` (free of symbols) as a Float; ValueError when it is not a finite real number."""
    value = complex(expr.evalf()) if expr.is_number else complex("nan")
    if value.imag != 0 or not math.isfinite(value.real):
        raise ValueError(text)
    return sp.Float(value.real)


def translate(problem: PetabProblem) -> Translation:
    """The config, data and name map of ``problem`` (not yet checked by ``ude``: see :func:`import_problem`)."""
    sbml = problem.sbml
    names = _names(problem)
    model_file = str(sbml.path)
    ctable = str((problem.files.conditions or problem.files.experiments or [problem.files.yaml])[0])
    used_conditions = list(dict.fromkeys(problem.measurements["simulationConditionId"]))
    # PEtab v2: an experiment may start at another time than 0; ude's t0 is one for every experiment
    starts = {problem.start_times.get(c, 0.0) for c in used_conditions}
    if len(starts) > 1:
        raise ConfigError(f"the experiments start at different times ({', '.join(f'{x:g}' for x in sorted(starts))}): "
                          f"not supported yet (ude's model.t0 is one for all experiments)",
                          where=str(problem.files.experiments[0]))
    t_start = float(starts.pop())  # (a measurement before its experiment's start: refused by load_problem)
    settle_in = _preequilibration_conditions(problem)  # simulation condition -> its pre-equilibration condition
    steady_only = _at_steady_state(problem, bool(settle_in))
    if steady_only:
        # every measurement at time inf: each condition settles in itself, and is measured there (at t0)
        settle_in = {c: c for c in used_conditions}
        problem.measurements["time"] = t_start
    settling = list(dict.fromkeys(c for c in settle_in.values() if c not in used_conditions))
    notes: list[str] = []
    # PEtab v2: a quantity that a later period of an experiment changes, and that no rule changes, becomes a
    # state that stays put between its jumps (model.events)
    jumping = _jumping(problem, notes)

    # -- condition table: one value for all -> substituted; numbers per condition -> a data column -------------
    substitute: dict[sp.Symbol, sp.Expr] = {}
    per_condition: dict[str, dict[str, float]] = {}  # constant name -> condition -> value
    initial_override: dict[str, sp.Expr] = {}
    reset: list[str] = []  # species the simulation conditions set: their initial values again after settling
    # a parameter with an SBML initial assignment that the condition table sets takes the condition's value (the
    # assignment stands in an empty cell): Liu_IFACPapersOnLine2025's u_2 = 1e9, 0 in its condition ctrl
    sbml.overridden = {c for c in problem.conditions.columns if c in sbml.parameter_initials}
    for column in problem.conditions.columns:
        if column in ("conditionId", "conditionName", "_file", "_row"):
            continue
        cells: dict[str, sp.Expr | None] = {}
        for cond in [*used_conditions, *settling]:
            cell = problem.conditions.loc[cond, column]
            try:
                value = cells[cond] = _value(cell, problem)
                used_states = [] if value is None else sorted(x.name for x in value.free_symbols if x.name in sbml.rhs)
                if used_states:
                    # PEtab v2 ("Initialization and parameter application"): the first period's targets are applied
                    # before the model is initialized and must not refer to model entities other than the
                    # parameter table's (a later period's may: a jump, model.events)
                    which = f"the first period of experiment {cond}" if problem.files.v2 else f"condition {cond}"
                    raise ConfigError(f"{which}, target {column}: {cell!r} uses the state "
                                      f"{used_states[0]}: the first period's target values may use only the "
                                      f"parameter table's parameters (PEtab v2)", where=ctable)
            except ValueError:
                raise ConfigError(f"condition {cond}, column {column}: {cell!r} is neither a number, a "
                                  f"parameter of the parameter table nor a formula of them", where=ctable) from None
        # a state (a species, or a parameter or compartment a rate rule changes): the condition sets its initial
        # value (the test suite's v1 0018: a rate-rule parameter B, NaN after pre-equilibration)
        is_state = (column in sbml.rhs and column in sbml.initial) or column in jumping
        if settle_in and column in sbml.rhs and not steady_only:  # (measured at steady state: a start value)
            # PEtab: a state that the simulation condition sets starts there again after the steady state; an
            # empty cell (NaN) continues from it
            given = {cells[c] is not None for c in used_conditions if c in settle_in}
            if given == {True, False}:
                raise ConfigError(f"column {column}: some simulation conditions set this state after "
                                  f"pre-equilibration and some do not (NaN): not supported yet", where=ctable)
            if given == {True}:
                reset.append(column)
        if is_state:
            default = sbml.initial[column] if column in sbml.initial else jumping[column]
            values = {c: (v if v is not None else default) for c, v in cells.items()}
        else:
            default_value = sbml.values.get(column)
            assigned = sbml.parameter_initials.get(column)
            if any(v is None for v in cells.values()) and default_value is None and column not in problem.parameters \
                    and assigned is None:
                raise ConfigError(f"column {column}: an empty cell, and the model gives no value", where=ctable)
            fallback = sp.Symbol(column) if assigned is None else sbml.substitute(assigned)
            values = {c: (v if v is not None else fallback) for c, v in cells.items()}
        if not all(v.is_number for v in values.values()):  # a fixed parameter is its nominal value
            values = {c: _fixed_value(v, problem) for c, v in values.items()}
        for c, v in values.items():
            if v.is_number:
                try:
                    values[c] = _real_number(v, str(problem.conditions.loc[c, column]))
                except ValueError:
                    raise ConfigError(f"condition {c}, column {column}: "
                                      f"{problem.conditions.loc[c, column]!r} is {v} with the parameters' "
                                      f"nominal values: not a finite real number", where=ctable) from None
        distinct = set(values.values())
        if len(distinct) == 1:
            (only,) = distinct
            if is_state:
                initial_override[column] = only
            elif only != sp.Symbol(column):
                substitute[sp.Symbol(column)] = only
            continue
        if not all(v.is_number for v in distinct):
            # conditions map it to different parameters or formulas (Bertozzi_PNAS2020: I0_ is I0_CA in u_CA,
            # I0_NY in u_NY): the sum of each value times an indicator constant, 1 in the conditions that give it
            # that value and 0 elsewhere -- exact, and the encoding ude export writes for a parameter per experiment
            total: sp.Expr = sp.Integer(0)
            for k, v in enumerate(dict.fromkeys(values.values()), start=1):
                indicator = f"{column}__is{k}"
                per_condition[indicator] = {c: 1.0 if values[c] == v else 0.0 for c in values}
                total = total + v * sp.Symbol(indicator)
            if is_state:
                initial_override[column] = total
            else:
                substitute[sp.Symbol(column)] = total
            continue
        const = f"{column}__initial" if is_state else column
        per_condition[const] = {c: float(v) for c, v in values.items()}
        if is_state:
            initial_override[column] = sp.Symbol(const)
    for const in per_condition:
        names.setdefault(const, safe_name(const))

    networks, weights, net_info = _networks(problem, substitute, names, notes, initial_override)

    def resolve(expr: sp.Expr) -> sp.Expr:
        return sbml.substitute(expr).xreplace(substitute)

    # -- states -------------------------------------------------------------------------------------------------
    rhs, starts_at = dict(sbml.rhs), dict(sbml.initial)
    rhs.update({p: sp.Integer(0) for p in jumping})
    starts_at.update(jumping)
    if not rhs:  # nothing changes (the test suite's 0024: observables of parameters): one state that stays 0
        rhs, starts_at = {NO_STATE: sp.Integer(0)}, {NO_STATE: sp.Integer(0)}
        names[NO_STATE] = NO_STATE
        notes.append(f"the model has no state (no species changes, no rate rule): the config has one, {NO_STATE}, "
                     f"with d{NO_STATE}/dt = 0, so that there is something to solve")
    states = list(rhs)
    equations = {names[s]: _text(resolve(rhs[s]), names, model_file, f"the right-hand side of {s}")
                 for s in states}
    initial: dict[str, object] = {}
    for s in states:
        expr = resolve(initial_override.get(s, starts_at[s])).xreplace({TIME: sp.Float(t_start) if t_start
                                                                        else sp.Integer(0)})
        leftover = {x.name for x in expr.free_symbols} & set(states)
        if leftover:
            raise ConfigError(f"the initial value of {s} depends on the state(s) {', '.join(sorted(leftover))}",
                              where=model_file)
        if expr.is_number:
            initial[names[s]] = float(expr)
        else:
            initial[names[s]] = {"formula": _text(expr, names, model_file, f"the initial value of {s}")}

    later = _later_periods(problem, set(states), resolve, names)
    later += _sbml_events(problem, set(states), resolve, names, used_conditions, per_condition, t_start,
                          bool(settle_in))

    # -- observables, placeholders, noise ------------------------------------------------------------------------
    meas = problem.measurements
    for col in ("observableParameters", "noiseParameters"):
        if col not in meas.columns:
            meas[col] = ""
    combos: dict[str, list[tuple[str, str]]] = {}
    for oid, op, npar in zip(meas["observableId"], meas["observableParameters"], meas["noiseParameters"],
                             strict=True):
        keys = combos.setdefault(oid, [])
        if (op, npar) not in keys:
            keys.append((op, npar))
    observables: dict[str, dict] = {}
    column_of: dict[tuple[str, str, str], str] = {}
    noise_info: dict[str, dict] = {}
    pending: list[tuple] = []
    for oid, keys in combos.items():
        obs = problem.observables[oid]
        where = f"{obs.file}: line {obs.row}"
        for k, (op, npar) in enumerate(keys):
            name = safe_name(oid) if len(keys) == 1 else f"{safe_name(oid)}__{k + 1}"
            column_of[(oid, op, npar)] = name
            subs: dict[sp.Symbol, sp.Expr] = {}
            for kind, text, declared in (("observableParameter", op, obs.placeholders[0]),
                                         ("noiseParameter", npar, obs.placeholders[1])):
                from .tables import split_list

                values_given = split_list(text)
                if problem.files.v2 and values_given and not declared and not any(
                        x.name.startswith(kind) for x in (obs.formula.free_symbols | obs.noise.free_symbols)):
                    raise ConfigError(f"{kind}s {text!r} of observable {oid}: the observable declares no "
                                      f"{'observable' if kind == 'observableParameter' else 'noise'}Placeholders",
                                      where=str(problem.files.measurements[0]))
                if declared and len(values_given) != len(declared):
                    raise ConfigError(f"{kind}s {text!r} of observable {oid}: {len(values_given)} values for its "
                                      f"{len(declared)} placeholders ({';'.join(declared)})",
                                      where=str(problem.files.measurements[0]))
                for i, cell in enumerate(values_given, start=1):
                    try:
                        v = _value(cell, problem)
                    except ValueError:
                        raise ConfigError(f"{kind}s {text!r} of observable {oid}: {cell!r} is neither a number nor "
                                          f"a parameter of the parameter table",
                                          where=str(problem.files.measurements[0])) from None
                    if v is not None:
                        subs[sp.Symbol(declared[i - 1] if declared else f"{kind}{i}_{oid}")] = v
            formula = resolve(obs.formula.xreplace(subs))
            noise = resolve(obs.noise.xreplace(subs))
            placeholders = set(obs.placeholders[0]) | set(obs.placeholders[1])
            left = sorted(x.name for x in (formula.free_symbols | noise.free_symbols)
                          if x.name.startswith(("observableParameter", "noiseParameter")) or x.name in placeholders)
            if left:
                raise ConfigError(f"observable {oid}: the placeholder {left[0]} has no value in the measurement "
                                  f"table", where=str(problem.files.measurements[0]))
            # the noise parameter is the standard deviation (normal) or the scale (laplace) of the transformed
            # value; of log10 y it is that of log y divided by ln(10)
            factor = {"lin": 1.0, "log": 1.0, "log10": LN10}[obs.transformation]
            # PEtab v2: an observable's id in a noise formula is its value (the observable formula; 0021 of the
            # PEtab test suite: obs_a * obs_a_noise_scale, a proportional error)
            others = {sp.Symbol(o): resolve(problem.observables[o].formula) for o in problem.observables
                      if o != oid and sp.Symbol(o) in noise.free_symbols}
            for o, value in others.items():
                if value.free_symbols & {sp.Symbol(n) for n in sum(problem.observables[o.name].placeholders, ())} or \
                        any(x.name.startswith(("observableParameter", "noiseParameter")) for x in value.free_symbols):
                    raise ConfigError(f"observable {oid}: noiseFormula {obs.noise_text!r} uses observable {o.name}, "
                                      f"whose formula has placeholders: not supported", where=where)
            noise = noise.xreplace({sp.Symbol(oid): formula, **others})
            if obs.distribution == "negative-binomial":
                # the draft's NB(r, p) of m failures, r the observable formula and p the noise formula, is ude's
                # NB with mean r (1 - p) / p and dispersion r (p = r / (r + mean))
                formula, noise = _negative_binomial_mean(formula, noise), formula
                distribution = "negative_binomial"
            elif obs.distribution == "poisson":
                distribution = "poisson"
            else:
                distribution = {("normal", True): "normal", ("normal", False): "lognormal",
                                ("laplace", True): "laplace", ("laplace", False): "loglaplace"}[
                    (obs.distribution, obs.transformation == "lin")]
            pending.append((oid, name, formula, noise, factor, distribution, where, len(keys)))
    # an estimated parameter that is one observable's noise formula and appears nowhere else becomes that
    # observable's own noise parameter; any other noise formula stays a formula of declared parameters
    elsewhere: dict[str, int] = {}
    for expr in [*(resolve(e) for e in sbml.rhs.values()), *(resolve(e) for e in sbml.initial.values()),
                 *(entry[2] for entry in pending)]:
        for x in expr.free_symbols:
            elsewhere[x.name] = elsewhere.get(x.name, 0) + 1
    bare: dict[str, int] = {}
    dynamic_names = set(sbml.rhs) | {TIME.name}
    #: pending's index -> (the states and t its noise formula uses, (a, b) of a + b * y_hat or None)
    error_models: dict[int, tuple[list[str], tuple[sp.Expr, sp.Expr, bool] | None]] = {}
    for i, (_, _, formula, noise, _, distribution, *_) in enumerate(pending):
        moves = sorted(x.name for x in noise.free_symbols if x.name in dynamic_names)
        parts = _error_model(noise, formula, dynamic_names) if moves and distribution == "normal" else None
        error_models[i] = moves, parts
        if distribution == "poisson":
            continue
        for piece in (noise,) if parts is None else parts[:2]:  # a + b * y_hat: a and b are noise parameters
            if isinstance(piece, sp.Symbol):
                bare[piece.name] = bare.get(piece.name, 0) + 1
            else:
                for x in piece.free_symbols:
                    elsewhere[x.name] = elsewhere.get(x.name, 0) + 1
    observed_directly: set[str] = set()
    for i, (oid, name, formula, noise, factor, distribution, where, n_keys) in enumerate(pending):
        dynamic, parts = error_models[i]
        if dynamic and distribution == "negative_binomial":
            raise ConfigError(f"observable {oid}: a negative-binomial r (its observableFormula "
                              f"{problem.observables[oid].formula_text!r}) that depends on {dynamic[0]} (a state or "
                              f"time): not supported (ude's dispersion is a parameter or a formula of parameters)",
                              where=where)
        if dynamic and parts is None:
            raise ConfigError(f"observable {oid}: noiseFormula {problem.observables[oid].noise_text!r} depends on "
                              f"{dynamic[0]} (a state or time), other than as a + b * (the observable formula) or "
                              f"sqrt(a^2 + (b * (the observable formula))^2): not supported yet", where=where)
        noise_spec: dict[str, Any] = {"distribution": distribution}
        if distribution == "poisson":
            pass
        elif distribution == "negative_binomial":
            noise_spec["dispersion"] = _sigma(noise, f"dispersion_{name}", oid, where, factor, bare, elsewhere,
                                              problem, names, noise_info)
        elif parts is None:
            noise_spec["sigma"] = _sigma(noise, f"sigma_{name}", oid, where, factor, bare, elsewhere, problem, names,
                                         noise_info)
        else:  # PEtab's a + b * y_hat (or b * y_hat): the combined (proportional) error, a + b |y_hat|; or
            a, b, squares = parts  # sqrt(a^2 + (b * y_hat)^2): combined2
            noise_spec["error"] = "proportional" if a == 0 else "combined2" if squares else "combined"
            roles = [("sigma", b)] if a == 0 else [("sigma", a), ("sigma_rel", b)]
            for role, part in roles:
                noise_spec[role] = _sigma(part, f"{role}_{name}", oid, where, factor, bare, elsewhere, problem,
                                          names, noise_info)
        text = _text(formula, names, where, f"observable {oid}")
        direct = isinstance(formula, sp.Symbol) and formula.name in sbml.rhs
        if direct and (n_keys > 1 or formula.name in observed_directly):
            text = f"1*{text}"  # ude observes a state directly once; the other copies are formulas
        if direct:
            observed_directly.add(formula.name)  # (two PEtab observables of one state: ude export writes them)
        spec: dict = {"formula": text, "column": name, "noise": noise_spec}
        if name != oid:
            spec["label"] = oid
        observables[name] = spec

    # -- parameters and constants -------------------------------------------------------------------------------
    used: set[str] = set()
    for text in [*(i for spec in networks.values() for i in spec["inputs"]), *equations.values(), *(o["formula"] for o in observables.values()),
                 *(o["noise"][role]["formula"] for o in observables.values() for role in ("sigma", "sigma_rel", "dispersion")
                   if isinstance(o["noise"].get(role), dict) and "formula" in o["noise"][role]),
                 *(v["formula"] for v in initial.values() if isinstance(v, dict)),
                 *(text for _, _, sets, *_ in later for text in sets.values())]:
        from ..expressions import parse_expression

        used |= set(parse_expression(text, where="").names)
    inverse = {v: k for k, v in names.items()}
    state_names = {names[s] for s in states}
    parameters: dict[str, dict] = {}
    constants: dict[str, object] = {}
    info: dict[str, dict] = {}
    for uname in sorted(used - state_names - {"t", "pi"}):
        pid = inverse.get(uname, uname)
        if pid in per_condition:
            constants[uname] = {"column": uname}
            continue
        if pid in problem.input_columns and substitute.get(sp.Symbol(pid), sp.Symbol(pid)).is_number:
            constants[uname] = float(substitute[sp.Symbol(pid)])  # a network input the conditions set alike
            continue
        par = problem.parameters.get(pid)
        if par is not None and par.estimate:
            spec = _parameter_spec(pid, par, notes)
            parameters[uname] = spec
            info[pid] = {"name": uname, "kind": "parameter", "factor": 1.0}
        elif par is not None:
            constants[uname] = par.nominal
        elif pid in sbml.values:
            if not math.isfinite(sbml.values[pid]):
                raise ConfigError(f"{pid}: no value in the model nor in the parameter table", where=model_file)
            constants[uname] = sbml.values[pid]
        else:
            raise ConfigError(f"{pid!r}: used in a formula but neither a model quantity nor in the parameter table",
                              where=str(problem.files.parameters))
    info.update(noise_info)
    for pid in problem.estimated:
        if pid in info:
            continue
        if problem.parameters[pid].prior is not None:  # its prior is a term of the log-posterior all the same
            parameters[names.get(pid, safe_name(pid))] = _parameter_spec(pid, problem.parameters[pid], notes)
            info[pid] = {"name": names.get(pid, safe_name(pid)), "kind": "parameter", "factor": 1.0}
            notes.append(f"parameter {pid} is estimated, but only its prior depends on it: a fit takes it to the "
                         f"prior's mode")
            continue
        if pid not in sbml.kinds:
            raise ConfigError(f"parameter {pid} is estimated but used nowhere in the model, observables or noise",
                              where=str(problem.files.parameters))
        # a quantity of the model that nothing depends on, often because the conditions remove its every use
        # (Oliveira_NatCommun2021: beta_2 times beta_2_multiplier, 0 in every condition): the data say nothing
        # about it (PEtab and AMICI evaluate such a problem; its gradient is 0); it stays at its nominal value
        info[pid] = {"name": names[pid], "kind": "unused", "factor": 1.0}
        notes.append(f"parameter {pid} is estimated, but no equation, observable or noise formula depends on it "
                     f"(with the condition table's values): it is not fitted (its gradient is 0) and stays at its "
                     f"nominal value {problem.parameters[pid].nominal:g}")
    for pid, entry in info.items():
        p = problem.parameters[pid]
        entry.update({"scale": p.scale, "nominal": p.nominal, "estimate": p.estimate})
        if p.prior is not None and entry["kind"] != "unused":  # a term of the objective: the log-posterior's
            if entry["kind"] != "parameter":
                raise ConfigError(f"parameter {pid}: a prior on a noise parameter is not supported yet",
                                  where=str(problem.files.parameters))
            parameters[entry["name"]]["prior"] = p.prior.to_config(p.scale)

    # -- pre-equilibration: the per-condition constants take the settling condition's values -------------------
    preequilibration: dict[str, Any] = {}
    settle_varies: set[str] = set()
    if settle_in:
        settle_constants: dict[str, Any] = {}
        for const, by_condition in per_condition.items():
            if names[const] not in constants:
                continue
            settled = {by_condition[c] for c in settle_in.values()}
            if len(settled) == 1:
                settle_constants[names[const]] = settled.pop()
            else:  # several pre-equilibration conditions: a column
                settle_varies.add(const)
                settle_constants[names[const]] = {"column": f"{names[const]}__settle"}
        preequilibration = {"preequilibration": {"constants": settle_constants,
                                                 **({"reset": [names[s] for s in reset]} if reset else {})}}

    # -- data: a row per (experiment, time), a column per observable -------------------------------------------
    filled: dict[tuple[str, float, str], int] = {}
    condition_of: dict[str, str] = {}  # experiment (a condition, or its replicate) -> the condition
    records: dict[tuple[str, float], dict[str, Any]] = {}
    rows = []
    for _, r in meas.iterrows():
        cond, t = r["simulationConditionId"], float(r["time"])
        column = column_of[(r["observableId"], r["observableParameters"], r["noiseParameters"])]
        rep = filled.get((cond, t, column), 0)
        filled[(cond, t, column)] = rep + 1
        experiment = cond if rep == 0 else f"{cond}__rep{rep + 1}"
        condition_of[experiment] = cond
        rec = records.setdefault((experiment, t), {"experiment": experiment, "time": t})
        rec[column] = r["measurement"]
        for const, by_condition in per_condition.items():
            rec[names[const]] = by_condition[cond]
            if const in settle_varies:
                rec[f"{names[const]}__settle"] = by_condition[settle_in.get(cond, cond)]  # (not settling: unused)
        rows.append([r["observableId"], cond, t, float(r["measurement"]), experiment, column])
    ordered: list[dict[str, Any]] = sorted(records.values(),
                                           key=lambda d: (_order(str(d["experiment"]), used_conditions), d["time"]))
    data = pd.DataFrame(ordered)
    if settle_in and set(settle_in) != set(used_conditions):  # some experiments settle, the others do not
        preequilibration["preequilibration"]["experiments"] = list(dict.fromkeys(
            str(d["experiment"]) for d in ordered if condition_of[str(d["experiment"])] in settle_in))
    events = _events(later, condition_of) + _triggered_events(problem, set(states), resolve, names)
    data = data[["experiment", "time", *observables, *(names[c] for c in per_condition),
                 *(f"{names[c]}__settle" for c in per_condition if c in settle_varies)]]

    config = {
        "name": problem.name,
        "description": f"imported from the PEtab problem {problem.files.yaml.name}",
        "data": {"file": "data.csv", "time": "time", "experiment": "experiment"},
        "model": {"states": [names[s] for s in states], "parameters": parameters, "constants": constants,
                  "equations": equations, "initial": initial, "t0": t_start, **preequilibration,
                  **({"events": events} if events else {})},
        "observables": observables,
        **({"networks": networks} if networks else {}),
        "solver": dict(SOLVER),
        "training": {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 500}]},
    }
    return Translation(config=config, data=data, parameters=info, rows=rows, weights=weights, networks=net_info,
                       notes=notes)


def _jumping(problem: PetabProblem, notes: list[str]) -> dict[str, sp.Expr]:
    """The quantities other than states that a later period (PEtab v2) or an SBML event sets, each -> its value
    before: they become states with derivative 0. One that nothing depends on is left out, with a note."""
    sbml = problem.sbml
    used: set[str] = set()
    for expr in [*sbml.rhs.values(), *(sbml.substitute(o.formula) for o in problem.observables.values()),
                 *(sbml.substitute(o.noise) for o in problem.observables.values())]:
        used |= {x.name for x in expr.free_symbols}
    setters: list[tuple[str, Any, Mapping[str, Any], str]] = [
        (f"experiment {experiment!r} sets", t, targets, where) for experiment, periods in problem.periods.items()
        for t, targets, where in periods]
    setters += [(f"SBML event {e.id} sets", e.time if e.trigger is None else e.trigger, e.assignments,
                 str(sbml.path)) for e in sbml.events]
    out: dict[str, sp.Expr] = {}
    for who, t, targets, where in setters:
        when = (f"at time {t:g}" if isinstance(t, float) else f"when {t}" if isinstance(t, sp.core.relational.Relational)
                else f"when time >= {t}")
        for target in targets:
            if target in sbml.rhs or target in out:
                continue
            held = sorted(s for s, c in sbml.concentrations.items() if c == target)
            if held:  # (whether or not the size appears in a formula: it may cancel out of them)
                raise ConfigError(f"{who} the size of compartment {target} {when}, which holds species in "
                                  f"concentration units that reactions change ({', '.join(held[:3])}): their "
                                  f"concentrations would change with it, which is not supported yet", where=where)
            if target not in used:
                notes.append(f"{where}: {who} {target} {when}, which nothing depends on: left out")
                continue
            par = problem.parameters.get(target)
            if par is not None and par.estimate:
                raise ConfigError(f"{who} the estimated parameter {target} {when}: not supported yet", where=where)
            if target in problem.input_columns or sbml.kinds.get(target) not in ("parameter", "species"):
                raise ConfigError(f"{who} {target} (a {sbml.kinds.get(target, 'network input')}) {when}: not "
                                  f"supported yet", where=where)
            value = par.nominal if par is not None else sbml.values.get(target, math.nan)
            if target in sbml.assignments or not math.isfinite(value):
                raise ConfigError(f"{who} {target} {when}, which has no value of its own before (an assignment "
                                  f"rule, or none given): not supported", where=where)
            out[target] = sp.Float(value)
    return out


def _sbml_events(problem: PetabProblem, states: set[str], resolve, names: dict[str, str], conditions: list[str],
                 per_condition: dict[str, dict[str, float]], t_start: float, settles: bool) -> list[Jump]:
    """The SBML events (:class:`~.sbml.SbmlEvent`) as (condition, time, state -> its value after) for every
    simulation condition: the trigger's time with the condition's values, or the start where that time is at or
    before it and the trigger was false before (SBML's ``initialValue``); never, where it was true."""
    sbml = problem.sbml
    where = str(sbml.path)
    if sbml.events and settles:
        raise ConfigError(f"SBML events ({len(sbml.events)}) with pre-equilibration (or steady-state measurements): "
                          f"not supported yet", where=where)
    out = []
    for event in sbml.events:
        sets = _event_sets(event, states, resolve, names, where)
        if not sets or event.trigger is not None:
            continue  # (a trigger on the states: model.events' when, _triggered_events)
        assert event.time is not None  # an event at a time
        for c in conditions:
            at = resolve(event.time).xreplace({sp.Symbol(k): sp.Float(v[c]) for k, v in per_condition.items()})
            at = _fixed_value(at, problem).xreplace({sp.Symbol(k): sp.Float(v) for k, v in sbml.values.items()
                                                     if k not in problem.parameters})
            if not at.is_number:
                left = sorted(x.name for x in at.free_symbols)
                raise ConfigError(f"SBML event {event.id}: its time {event.time} depends on {left[0]}, which is "
                                  f"estimated: not supported (ude's jumps are at given times)", where=where)
            t = float(at)
            if t <= t_start:
                if event.initial_value:
                    continue
                t = t_start
            out.append((c, t, sets, f"SBML event {event.id}", where))
    return out


def _event_sets(event, states: set[str], resolve, names: dict[str, str], where: str) -> dict[str, str]:
    """An SBML event's assignments of states (:class:`~.sbml.SbmlEvent`) as state -> its value after, in ude's
    language (assignments of other things are left to :func:`_jumping`)."""
    return {names[target]: _text(resolve(value), names, where, f"the assignment of {target} in event {event.id}")
            for target, value in event.assignments.items() if target in states}


def _triggered_events(problem: PetabProblem, states: set[str], resolve, names: dict[str, str]) -> list[dict]:
    """The SBML events triggered by a comparison of the states as model.events' ``when`` (every experiment)."""
    where = str(problem.sbml.path)
    out = []
    for event in problem.sbml.events:
        if event.trigger is None:
            continue
        sets = _event_sets(event, states, resolve, names, where)
        if not sets:
            continue
        condition = resolve(event.trigger)
        op = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">", sp.GreaterThan: ">="}[type(condition)]
        what = f"the trigger of event {event.id}"
        out.append({"when": f"{_text(condition.lhs, names, where, what)} {op} {_text(condition.rhs, names, where, what)}",
                    "set": sets})
    return out


#: a jump of the states in one experiment: (experiment, time, state -> its value after, in ude's language; what
#: sets it, for messages; the file that says so)
Jump = tuple[str, float, dict[str, str], str, str]


def _later_periods(problem: PetabProblem, states: set[str], resolve, names: dict[str, str]) -> list[Jump]:
    """Each later period of an experiment (PEtab v2) as a :data:`Jump`: a formula of the states before it and
    the parameters."""
    out = []
    for experiment, periods in problem.periods.items():
        for t, targets, where in periods:
            sets = {}
            for target, cell in targets.items():
                if target not in states:
                    continue  # left out by _jumping, with a note
                try:
                    value = _value(cell, problem)
                except ValueError:
                    raise ConfigError(f"experiment {experiment!r}, time {t:g}, target {target}: {cell!r} is neither "
                                      f"a number nor a formula of the model's quantities", where=where) from None
                if value is None:
                    continue
                sets[names[target]] = _text(resolve(value), names, where, f"the value of {target} at time {t:g}")
            if sets:
                out.append((experiment, t, sets, f"the period at time {t:g} ({where})", where.split(": line")[0]))
    return out


def _events(later: list[Jump], condition_of: dict[str, str]) -> list[dict]:
    """model.events of the later periods and SBML events: one per time and change, for every experiment
    (replicates too) that has it. ude's jumps at one time all read the values before them; where PEtab applies
    them one after the other (two that set one state, or an SBML event that reads what a period sets at its
    time: PEtab applies the period's condition first, the test suite's 0030) they are refused."""
    from ..expressions import parse_expression

    seen: dict[tuple[str, float, str], str] = {}
    for experiment, t, sets, who, where in later:
        for state in sets:
            if (experiment, t, state) in seen:
                raise ConfigError(f"{seen[experiment, t, state]} and {who} both set {state} at time {t:g} in "
                                  f"{experiment}: one after the other, which ude's jumps (all from the values "
                                  f"before them) cannot express yet", where=where)
            seen[experiment, t, state] = who
    for experiment, t, sets, who, where in later:
        if not who.startswith("SBML event"):
            continue
        read = set().union(*(parse_expression(text, where=where).names for text in sets.values()))
        for state in sorted(read):
            setter = seen.get((experiment, t, state))
            if setter is not None and not setter.startswith("SBML event"):
                raise ConfigError(f"{who} reads {state}, which {setter} sets at the same time in {experiment}: "
                                  f"PEtab applies the period first, and ude's jumps all read the values before "
                                  f"them: not supported yet", where=where)
    grouped: dict[tuple[float, tuple], list[str]] = {}
    for experiment, t, sets, *_ in later:
        members = [e for e, c in condition_of.items() if c == experiment]
        grouped.setdefault((t, tuple(sets.items())), []).extend(members)
    return [{"at": [t], "set": dict(sets), "experiments": members} for (t, sets), members in grouped.items()
            if members]


def _networks(problem: PetabProblem, substitute: dict, names: dict[str, str], notes: list[str],
              initial_override: dict[str, sp.Expr]) -> tuple[dict, dict, dict]:
    """PEtab SciML networks in the right-hand side as ``ude`` networks: (config section, weights, PEtab layer
    ids and whether estimated). A model parameter that a network output replaces is substituted by ``NET[i]``
    in ``substitute``."""
    from .sciml import import_network, parse_entity

    files = problem.files
    if not files.networks:
        return {}, {}, {}
    entities: dict[str, tuple[str, str, int, int | None]] = {}
    for pid, text in problem.mapping.items():
        try:
            entities[pid] = parse_entity(text)
        except ValueError:
            continue
    section, weights, info = {}, {}, {}
    sets_initial: set[str] = set()
    inputs: dict[str, dict[tuple[int, int], str]] = {net: {} for net in files.networks}
    shapes: dict[str, dict[int, tuple[int, ...]]] = {net: {} for net in files.networks}  # an array argument's
    for pid, (net, kind, arg, index) in entities.items():  # an output's id in an observable formula: NET[i]
        if kind == "outputs" and arg == 0 and index is not None and net in files.networks:
            substitute[sp.Symbol(pid)] = sp.Symbol(f"{net}[{index}]")
            names[f"{net}[{index}]"] = f"{net}[{index}]"
    for pid, (net, kind, arg, index) in entities.items():  # an input that is a parameter-table entry itself,
        # or that the condition table sets (a constant, or one read per experiment)
        if kind == "inputs" and (pid in problem.parameters or pid in problem.input_columns) and index is not None \
                and net in files.networks:
            inputs[net][(arg, index)] = names.setdefault(pid, safe_name(pid))
    for target, value, file, line in problem.hybridization:
        where = f"{file}: line {line}"
        if target in entities and entities[target][1] == "inputs":
            net, _, arg, index = entities[target]
            if value == "array":  # the array file's values (of the experiment's condition): constants
                if target not in problem.array_inputs:
                    raise ConfigError(f"network input {target} <- array: no dataset inputs/{target} in the array "
                                      f"files", where=where)
                size = len(next(iter(problem.array_inputs[target].values())))
                if index is not None and size != 1:
                    raise ConfigError(f"network input {target} <- array: {size} values for one input", where=where)
                for k in range(size):
                    column = f"{target}_{k}"
                    inputs[net][(arg, k if index is None else index)] = names.setdefault(column, safe_name(column))
                shape = problem.array_shapes.get(target, (size,))
                if index is None and len(shape) > 1:  # an image: the argument's values reshaped (row-major)
                    shapes[net][arg] = tuple(shape)
                continue
            if index is None:
                raise ConfigError(f"network input {target}: a whole argument is supported from an array file only",
                                  where=where)
            if value in problem.sbml.rhs or value in problem.parameters or value in problem.sbml.values:
                inputs[net][(arg, index)] = names.get(value, value)
                continue
            inputs[net][(arg, index)] = _input_formula(value, problem, substitute, names, where, target)
        elif value in entities and entities[value][1] == "outputs":
            net, _, arg, index = entities[value]
            if arg != 0 or index is None:
                raise ConfigError(f"{value}: only outputs[0][i] of a network are supported", where=where)
            if target in problem.sbml.initial:  # the species' initial value: NET[i] (fed no state: checked below)
                initial_override[target] = sp.Symbol(f"{net}[{index}]")
                names[f"{net}[{index}]"] = f"{net}[{index}]"
                sets_initial.add(net)
                continue
            if target not in problem.sbml.kinds and target not in problem.parameters:
                raise ConfigError(f"{target} <- {value}: not a parameter of the model", where=where)
            substitute[sp.Symbol(target)] = sp.Symbol(f"{net}[{index}]")
            names[f"{net}[{index}]"] = f"{net}[{index}]"
        else:
            raise ConfigError(f"{target} <- {value}: only network inputs set from states and model parameters "
                              f"replaced by network outputs are supported yet", where=where)
    for net, (path, pre) in files.networks.items():
        states = [i for i in inputs[net].values() if i in {names.get(s, s) for s in problem.sbml.rhs}]
        if pre and states:  # evaluated once before the simulation: on values constant in time only
            raise ConfigError(f"network {net}: a pre-initialization network fed the state {states[0]}",
                              where=str(files.yaml))
        if net in sets_initial and (states or any(not i.isidentifier() for i in inputs[net].values())):
            raise ConfigError(f"network {net} sets an initial value: its inputs must be parameters or constants, "
                              f"not states or formulas", where=str(files.hybridizations[0]))
        keys = sorted(inputs[net])
        order = [inputs[net][key] for key in keys]
        arguments: list[int | tuple[int, ...]] = [
            shapes[net].get(arg) or sum(1 for a, _ in keys if a == arg) for arg in dict.fromkeys(a for a, _ in keys)]
        imported = import_network(path, net, files.arrays, arguments)  # an MLP chain, or a graph (`file`)
        frozen = _frozen(problem, net, imported.layers, imported.names)
        outputs = sorted(e[3] for e in entities.values() if e[0] == net and e[1] == "outputs" and e[3] is not None)
        section[net] = {"inputs": order, **imported.section}
        if frozen and len(frozen) == len(imported.names):
            section[net]["fixed"] = True
        elif frozen:
            section[net]["frozen"] = frozen
        priors = _array_priors(problem, net, imported, frozen)
        if priors:
            section[net]["priors"] = priors
        weights[net] = _weights(problem, imported, notes)
        info[net] = {"layers": imported.layers, "outputs_used": outputs, "frozen": frozen, "file": str(path),
                     "arrays": {name: list(key) for key, name in imported.names.items()},
                     **({"graph": imported.compiled} if imported.compiled is not None else {})}
    return section, weights, info


def _input_formula(text: str, problem: PetabProblem, substitute: dict, names: dict[str, str], where: str,
                   target: str) -> str:
    """A network input that is a formula (``prey + (alpha - 1.3)``, ``S/N``) in the equation language, of
    states, parameters and constants (assignment rules and condition values substituted)."""
    from ..expressions import ExpressionError
    from .language import parse_formula

    try:
        expr = parse_formula(text)
    except ExpressionError as exc:
        raise ConfigError(f"network input {target} <- {text!r}: {exc.message}", where=where) from None
    expr = problem.sbml.substitute(expr.xreplace({sp.Symbol("time"): TIME})).xreplace(substitute)
    known = set(problem.sbml.kinds) | set(problem.parameters) | set(problem.input_columns) | {TIME.name}
    unknown = sorted(x.name for x in expr.free_symbols if x.name not in known)
    if unknown:
        raise ConfigError(f"network input {target} <- {text!r}: {unknown[0]!r} is neither a model quantity nor "
                          f"in the parameter table", where=where)
    if any("[" in x.name for x in expr.free_symbols):
        raise ConfigError(f"network input {target} <- {text!r}: a network's output as another's input is not "
                          f"supported", where=where)
    return _text(expr, names, where, f"network input {target}")


def _fixed_value(value: sp.Expr, problem: PetabProblem) -> sp.Expr:
    """A condition cell naming a parameter the table does not estimate (or a formula of some): its nominal value."""
    fixed = {x: sp.Float(problem.parameters[x.name].nominal) for x in value.free_symbols
             if x.name in problem.parameters and not problem.parameters[x.name].estimate}
    return value.xreplace(fixed) if fixed else value


def _weights(problem: PetabProblem, imported, notes: list[str]) -> dict[str, np.ndarray]:
    """A network's starting weights: the array files' (``parameters/NET``, read by the import), except where
    the parameter table gives one array (``NET.parameters[layer].weight``) or one layer a number as its
    nominalValue (the more specific wins); a number for the whole network (``NET.parameters``) gives way to the
    array files (a note says so)."""
    net = imported.id
    out = dict(imported.arrays)
    partial = []
    for pid, (entity, value) in problem.network_nominals.items():
        layer, part = _entity_parts(entity, net)
        if layer is None:
            notes.append(f"network {net}: the array file's weights are used, not the nominalValue {value:g} of "
                         f"{pid} (the whole network) in the parameter table")
        elif layer is not False:
            if layer not in imported.layers:
                raise ConfigError(f"{pid} -> {entity}: network {net} has no layer {layer!r}",
                                  where=str(problem.files.parameters))
            partial.append((part is not None, layer, part, value))
    for _, layer, part, value in sorted(partial, key=lambda x: x[0]):  # a layer's number, then an array's
        for (lid, array), name in imported.names.items():
            if lid == layer and (part is None or array == part):
                out[name] = np.full_like(out[name], float(value))
    return out


def _array_priors(problem: PetabProblem, net: str, imported, frozen: list[str]) -> dict[str, dict]:
    """The prior of each learned array of network ``net`` (by its config name: ``weight0``, ``bias1``, ...): a
    row for a single array wins over one for its layer, which wins over one for the whole network."""
    out: dict[str, tuple[int, dict]] = {}
    for pid, (entity, prior) in problem.network_priors.items():
        layer, part = _entity_parts(entity, net)
        if layer is False:
            continue
        if imported.compiled is not None:
            raise ConfigError(f"{pid}: a prior on the weights of network {net}, which is not an MLP chain "
                              f"({imported.compiled}), is not supported yet", where=str(problem.files.parameters))
        level = 0 if layer is None else (1 if part is None else 2)
        for (lid, array), name in imported.names.items():
            if (layer is None or layer == lid) and (part is None or part == array) and name not in frozen \
                    and (name not in out or out[name][0] <= level):
                out[name] = (level, prior.to_config())
    return {k: v for k, (_, v) in sorted(out.items())}


def _entity_parts(entity: str, net: str):
    """``net.parameters[layer].weight`` -> (layer or None, part or None); (False, None) for another network's."""
    import re

    m = re.fullmatch(rf"{re.escape(net)}\.parameters(?:\[(\w+)\](?:\.(\w+))?)?", entity)
    return (False, None) if m is None else (m.group(1), m.group(2))


def _frozen(problem: PetabProblem, net: str, layers: list[str], names: dict[tuple[str, str], str]) -> list[str]:
    """The arrays of network ``net`` that the parameter table does not estimate (their config names ``names``
    of ``(layer, array)``: ``weight0``, ``bias1``, ..., or ``layer1.weight``): a row for a single array wins
    over one for its layer, which wins over one for the whole network."""
    import re

    estimate: dict[tuple[str, str], tuple[int, bool]] = {}  # (layer, part) -> (specificity, estimated)
    for pid, (entity, est) in problem.network_parameters.items():
        m = re.fullmatch(rf"{re.escape(net)}\.parameters(?:\[(\w+)\](?:\.(\w+))?)?", entity)
        if m is None:
            if entity.split(".")[0] == net:
                raise ConfigError(f"{pid} -> {entity}: not a network parameter entity this importer reads",
                                  where=str(problem.files.parameters))
            continue
        layer, part = m.group(1), m.group(2)
        if layer is not None and layer not in layers:
            raise ConfigError(f"{pid} -> {entity}: network {net} has no layer {layer!r}",
                              where=str(problem.files.parameters))
        if part is not None and layer is not None and (layer, part) not in names:
            raise ConfigError(f"{pid} -> {entity}: layer {layer!r} of network {net} has no array {part!r}",
                              where=str(problem.files.parameters))
        level = 0 if layer is None else (1 if part is None else 2)
        for lid, p in names:
            applies = (layer is None or layer == lid) and (part is None or part == p)
            if applies and ((lid, p) not in estimate or estimate[(lid, p)][0] <= level):
                estimate[(lid, p)] = (level, est)
    return [name for key, name in names.items() if not estimate.get(key, (0, True))[1]]


def _sigma(noise: sp.Expr, ude_name: str, oid: str, where: str, factor: float, bare: dict, elsewhere: dict,
           problem: PetabProblem, names: Mapping[str, str], noise_info: dict) -> dict | float:
    """The config's spec of one noise parameter given by the (state-free) expression ``noise``: a number, a fixed
    parameter's value, the observable's own estimated parameter (``{init, bounds}``, recorded in ``noise_info``
    as ``ude_name``: one estimated parameter that is this noise formula and appears nowhere else), or a formula
    of declared parameters; times ``factor`` (ln 10 for a log10 observable)."""
    par = problem.parameters.get(noise.name) if isinstance(noise, sp.Symbol) else None
    if noise.is_number:
        return float(noise) * factor
    if par is not None and not par.estimate:
        return par.nominal * factor
    if par is not None and bare.get(noise.name) == 1 and not elsewhere.get(noise.name):
        lo = par.lower * factor if par.lower > 0 else None
        hi = par.upper * factor if math.isfinite(par.upper) else None
        noise_info[noise.name] = {"name": ude_name, "kind": "noise", "factor": factor}
        # on a bound (Raia_CancerResearch2011's 1e-5): the fit starts inside
        return {"init": _start(par.nominal * factor, lo, hi, par.scale != "lin"), "bounds": [lo, hi]}
    return {"formula": _text(noise * factor if factor != 1.0 else noise, names, where,
                             f"the noise formula of observable {oid}")}


def _negative_binomial_mean(r: sp.Expr, p: sp.Expr) -> sp.Expr:
    """The mean ``r (1 - p) / p`` of the draft's NB(r, p), as ``r / p - r``: for ``p = r / (r + M)`` (what ude export
    writes) sympy's own arithmetic gives back ``M`` exactly and at once, however large; ``cancel`` only where r
    stays and the formula is small (on a sum of a few Hill terms it takes minutes and expands them)."""
    mean = (r / p - r).xreplace({sp.Float(1.0): sp.Integer(1)})  # (1.0*(I + 10.0) - 10.0 of a number r: I)
    if mean.free_symbols & r.free_symbols and sp.count_ops(mean) <= 40:
        mean = sp.cancel(mean)
    return mean


def _error_model(noise: sp.Expr, formula: sp.Expr, dynamic: set[str]) -> tuple[sp.Expr, sp.Expr, bool] | None:
    """``(a, b, False)`` with ``noise = a + b * formula`` (:func:`_linear_error`), or ``(a, b, True)`` with ``noise =
    sqrt(a^2 + (b * formula)^2)`` (Liu_IFACPapersOnLine2025's ``sqrt(sigma_a^2 + (sigma_b * (U + I_1 + ...))^2)``:
    its square is linear in ``formula^2``, a and b the square roots of that line's parts); else None."""
    linear = _linear_error(noise, formula, dynamic)
    if linear is not None:
        return (*linear, False)
    squared = _quadrature_error(noise, formula, dynamic)
    return None if squared is None else (*squared, True)


def _quadrature_error(noise: sp.Expr, formula: sp.Expr, dynamic: set[str]) -> tuple[sp.Expr, sp.Expr] | None:
    """``(a, b)`` with ``noise = sqrt(a^2 + b^2 * formula^2)``, read from its structure without expanding anything
    (the square of a sum of Hill terms expands to thousands of terms, and cancel takes minutes on it): the terms
    of the square free of states are ``a^2``; the one other term over ``formula^2`` (sympy cancels a repeated
    base at once) is ``b^2`` when no state is left in it; the identity is checked at three random points."""
    import random

    def moving(e: sp.Expr) -> bool:
        return any(x.name in dynamic for x in e.free_symbols)

    noise = noise.replace(lambda e: isinstance(e, sp.Abs) and moving(e.args[0]), lambda e: e.args[0])
    if not (isinstance(noise, sp.Pow) and noise.exp == sp.Rational(1, 2) and isinstance(noise.base, sp.Add)):
        return None
    fixed = [term for term in noise.base.args if not moving(term)]
    varying = [term for term in noise.base.args if moving(term)]
    if not fixed or len(varying) != 1:
        return None
    a2, b2 = sp.Add(*fixed), varying[0] / formula ** 2
    if moving(b2):
        return None
    rng = random.Random(0)
    symbols = sorted(noise.free_symbols | formula.free_symbols, key=str)
    for _ in range(3):  # a^2 + b^2 formula^2 == noise^2 where the symbols are positive numbers of various sizes
        point = {x: sp.Float(rng.uniform(0.5, 2.0) * 10 ** rng.uniform(-1, 1)) for x in symbols}
        left = complex((a2 + b2 * formula ** 2).xreplace(point).evalf())
        right = complex(noise.base.xreplace(point).evalf())
        if not abs(left - right) <= 1e-9 * max(1.0, abs(right)):
            return None

    def root(e: sp.Expr) -> sp.Expr:  # sqrt(sigma_a**2) is sigma_a: a noise parameter is positive
        r = sp.powdenest(sp.sqrt(e), force=True)
        return _unit(r.replace(lambda x: isinstance(x, sp.Abs), lambda x: x.args[0]))

    return root(a2), root(b2)


def _linear_error(noise: sp.Expr, formula: sp.Expr, dynamic: set[str]) -> tuple[sp.Expr, sp.Expr] | None:
    """``(a, b)`` with ``noise = a + b * formula`` and neither depending on a state or t (names in ``dynamic``):
    Raia_CancerResearch2011's ``noiseParameter1 + noiseParameter2 * (observable formula)``, Armistead's
    ``noiseParameter1 * Sphinga`` of the observable ``Sphinga``, ``abs(...)`` of the formula as ude export writes
    it; else None. ``b = (d noise / dx) / (d formula / dx)`` for a state ``x`` of the formula (unique when the
    identity holds, the formula not being constant); no ``simplify`` (minutes on a sum of a few Hill terms): ``b``
    by ``cancel``, refused as soon as it has a state in it, and the identity checked at three random points."""
    import random

    def moving(e: sp.Expr) -> bool:
        return any(x.name in dynamic for x in e.free_symbols)

    # abs(k * formula) is k * abs(formula) to sympy: every abs of something that moves is taken as that something
    noise = noise.replace(lambda e: isinstance(e, sp.Abs) and moving(e.args[0]), lambda e: e.args[0])
    states = [x for x in sorted(formula.free_symbols, key=str) if x.name in dynamic]
    slopes = [(x, sp.diff(formula, x)) for x in states]
    slopes = [(x, d) for x, d in slopes if d != 0]
    if not slopes:
        return None
    x, slope = slopes[0]
    b = _unit(sp.cancel(sp.diff(noise, x) / slope))
    if moving(b):
        return None
    a = _unit(sp.expand(noise - b * formula))
    if moving(a):
        return None
    rng = random.Random(0)
    symbols = sorted(noise.free_symbols | formula.free_symbols | a.free_symbols | b.free_symbols, key=str)
    for _ in range(3):  # a + b * formula == noise where the symbols are positive numbers of various sizes
        point = {s: sp.Float(rng.uniform(0.5, 2.0) * 10 ** rng.uniform(-1, 1)) for s in symbols}
        left, right = complex((a + b * formula).xreplace(point).evalf()), complex(noise.xreplace(point).evalf())
        if not abs(left - right) <= 1e-9 * max(1.0, abs(right)):
            return None
    return a, b


def _unit(expr: sp.Expr) -> sp.Expr:
    """``expr`` without a coefficient of one (``1.0*sd_rel`` -> ``sd_rel``, a parameter the noise model can own)."""
    coefficient, rest = expr.as_coeff_Mul()
    return rest if float(coefficient) == 1.0 else expr


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _start(value: float, lo: float | None, hi: float | None, log: bool) -> float:
    """A fit's starting value: ``value`` where it lies strictly inside the bounds (and is positive on a log scale),
    else :func:`_inside`'s."""
    if (lo is not None and value <= lo) or (hi is not None and value >= hi) or (log and value <= 0):
        return _inside(value, lo, hi, log)
    return value


def _inside(value: float, lo: float | None, hi: float | None, log: bool) -> float:
    """A starting value strictly inside the bounds, next to ``value`` (a nominal value on or outside a bound)."""
    if log and lo is not None and hi is not None:
        a, b = math.log(lo), math.log(hi)
        at = math.log(value) if value > 0 else a  # not positive: the lower end
        return math.exp(min(max(at, a + 1e-6 * (b - a)), b - 1e-6 * (b - a)))
    if log and value <= 0:  # a positive parameter without a lower bound (PEtab's 0): a start of its size
        return min(1.0, hi / 10) if hi is not None else 1.0
    span = (hi - lo) if lo is not None and hi is not None else max(abs(value), 1.0)
    if lo is not None and value <= lo:
        return lo + 1e-6 * span
    assert hi is not None
    return hi - 1e-6 * span


def _at_steady_state(problem: PetabProblem, preequilibrated: bool) -> bool:
    """Whether every measurement is at steady state (time inf); a mix with time courses, or with
    pre-equilibration, is refused."""
    times = problem.measurements["time"].astype(float)
    at_inf = times == math.inf
    if not at_inf.any():
        return False
    where = str(problem.files.measurements[0])
    if preequilibrated or not at_inf.all():
        row = problem.measurements[~at_inf].iloc[0] if not at_inf.all() else problem.measurements.iloc[0]
        what = "pre-equilibration" if preequilibrated else f"measurements at finite times ({row['time']} here)"
        raise ConfigError(f"line {row['_row']}, column time: measurements at steady state (inf) together with {what}: "
                          f"not supported yet (only problems measured at steady state alone)", where=where)
    return True


def _preequilibration_conditions(problem: PetabProblem) -> dict[str, str]:
    """Simulation condition -> the condition it is pre-equilibrated in, for those that are; each simulation
    condition in one at most."""
    meas = problem.measurements
    if "preequilibrationConditionId" not in meas.columns:
        return {}
    where = str(problem.files.measurements[0])
    out: dict[str, str] = {}
    for _, row in meas.iterrows():
        cond, pre = row["simulationConditionId"], str(row["preequilibrationConditionId"])
        if out.setdefault(cond, pre) != pre:
            raise ConfigError(f"line {row['_row']}, column preequilibrationConditionId: simulation condition {cond} "
                              f"is pre-equilibrated in {out[cond] or 'none'} elsewhere and in {pre or 'none'} here: "
                              f"one pre-equilibration per simulation condition is supported", where=where)
    return {cond: pre for cond, pre in out.items() if pre}


def _order(experiment: str, conditions: list[str]) -> tuple[int, str]:
    base = experiment.split("__rep")[0]
    return (conditions.index(base) if base in conditions else len(conditions), experiment)


def _yaml(config: dict, problem: PetabProblem) -> str:
    import yaml

    head = (f"# Imported by `ude import` from the PEtab problem {problem.files.yaml}\n"
            f"# (model {problem.files.sbml.name}). Estimated parameters start at the parameter table's nominal\n"
            f"# values; log/log10-scaled ones are learned on log scale (positive: true). petab.json maps the\n"
            f"# PEtab ids to these names. `ude evaluate` of this config gives PEtab's log-likelihood.\n")
    class Dumper(yaml.SafeDumper):
        pass

    def flow(dumper, data):  # [lower, upper], [5, 5]: on one line
        short = all(isinstance(x, int | float | type(None)) for x in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=short)

    Dumper.add_representer(list, flow)
    return head + yaml.dump(config, Dumper=Dumper, sort_keys=False, width=110)


def check_translation(tr: Translation, base: Path, label: str):
    """The translated config resolved by ``ude`` (its data read from ``base``): the :class:`~ude_cli.problem.Problem`."""
    from ..config import config_from_dict
    from ..errors import UdeError
    from ..problem import resolve

    cfg = config_from_dict(json.loads(json.dumps(tr.config)), label=label, path=base / "config.yaml")
    try:
        return resolve(cfg)
    except UdeError as exc:
        raise ConfigError(f"the translated config does not resolve: {exc.lines()[0]}", where=label) from None


def import_problem(path: str | Path, out: str | Path, *, overwrite: bool = False,
                   notes: list[str] | None = None) -> Path:
    """Translate the PEtab problem ``path`` into ``out/config.yaml`` + ``data.csv`` + ``petab.json``; return the
    config's path. Nothing is written when the problem cannot be translated. What the user should know about
    the translation is appended to ``notes``."""
    import shutil
    import tempfile

    from ..errors import RunDirError

    problem = load_problem(path)
    tr = translate(problem)
    if notes is not None:
        notes.extend(tr.notes)
    target = Path(out)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise RunDirError("exists and is not empty (give --overwrite to replace it)", where=str(target))
    with tempfile.TemporaryDirectory(prefix=".ude-import-", dir=target.parent if target.parent.exists() else None) as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        write(tr, problem, staging)
        check_translation(tr, staging, str(path))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    return target / "config.yaml"


def write(tr: Translation, problem: PetabProblem, folder: Path) -> None:
    """Write ``config.yaml``, ``data.csv`` and ``petab.json`` into ``folder``."""
    (folder / "config.yaml").write_text(_yaml(tr.config, problem))
    tr.data.to_csv(folder / "data.csv", index=False, float_format="%.17g")
    for net, arrays in tr.weights.items():
        np.savez(folder / f"{net}.npz", **arrays)  # type: ignore[arg-type]
        if "file" in tr.config["networks"][net]:  # a graph network: its YAML beside the config
            (folder / tr.config["networks"][net]["file"]).write_bytes(Path(tr.networks[net]["file"]).read_bytes())
    sidecar = {"problem": str(problem.files.yaml), "parameters": tr.parameters, "networks": tr.networks,
               "measurements": {"columns": ["observableId", "simulationConditionId", "time", "measurement",
                                            "experiment", "column"], "rows": tr.rows}}
    (folder / "petab.json").write_text(json.dumps(sidecar, indent=1, default=_json_default))


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)
