"""A validated config + its data -> a :class:`Problem`: everything a fit needs, resolved and checked.

This is where the fields of a config are checked against each other (states, columns, names used
in equations, networks, initial states) and the data are read. Every problem found is collected
and reported at once, one line each, with its place in the config. Nothing here imports torch, so
``ude check`` stays fast.
"""

from __future__ import annotations

import contextlib
import keyword
import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from .config import Config, NetworkSpec, NoiseParameterSpec, NoiseSpec, ParameterSpec, PriorSpec
from .data import Dataset, Experiment, read_dataset, split_validation
from .errors import ConfigError, DataError, ExpressionError, Problems, UdeError, did_you_mean, nearest
from .expressions import FUNCTIONS, RESERVED, Expression, Namespace, parse_expression, parse_trigger


@dataclass(frozen=True)
class Parameter:
    """A resolved mechanistic parameter."""

    name: str
    init: float
    fixed: bool
    lower: float | None
    upper: float | None
    positive: bool
    unit: str | None = None
    description: str = ""
    per_experiment: bool = False  # one value per experiment
    role: str = "mechanistic"  # "mechanistic" (in an equation), "observation" (only in observables), "noise"
    prior: PriorSpec | None = None  # a prior of the value: a term of the objective

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        return (self.lower, self.upper)


@dataclass(frozen=True)
class Observable:
    """What one CSV column measures: a formula of the states, parameters, constants and t, with its noise model.

    ``state`` names the state when the formula is that state alone (a direct observation: it also gives the
    state's default initial value and makes collocation possible). ``noise`` is None when the fit has no
    noise model (the objective is then ``training.loss``); ``noise_parameters`` maps each role the noise
    model needs (``sigma``, ``sigma_rel``, ``dispersion``) to the parameter's name.
    """

    name: str
    column: str
    expression: Expression
    state: str | None = None
    noise: NoiseSpec | None = None
    noise_parameters: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Initial:
    """How a state's initial value is obtained, per experiment."""

    state: str
    source: str  # "observed" | "value" | "column" | "formula"
    value: float | None = None
    column: str | None = None
    expression: Expression | None = None  # source "formula": of parameters, constants and t0
    learn: bool = False
    positive: bool = False


@dataclass(frozen=True)
class Preequilibration:
    """Each experiment starts at a steady state of the model under other constants
    (:mod:`ude_cli.fitting.steady_state`)."""

    constants: dict[str, float | str]  # constant -> its value while settling, or the column giving it
    reset: tuple[str, ...] = ()  # states that take their initial values again after the steady state
    experiments: tuple[str, ...] | None = None  # the experiments that settle (None: all)


@dataclass(frozen=True)
class Event:
    """States that jump at given times (``model.events``; :mod:`ude_cli.fitting.events`)."""

    times: tuple[float, ...]  # sorted, distinct (empty with ``column``)
    assignments: dict[str, Expression]  # state -> its value after the jump, from the states before it
    experiments: tuple[str, ...] | None = None  # the experiments it happens in (None: all)
    #: a data column of dosing records instead of times: a jump at each of its rows with a value, whose value the
    #: formulas read under the column's name (:attr:`ude_cli.data.Experiment.records`)
    column: str | None = None
    #: an observation at a jump's time sees the states before it (``observed: before``), not after
    before: bool = False
    #: the config field that gives its times, for messages: 'at', 'first' (of ``every``), 'when' or 'column'
    field: str = "at"
    #: ``when``: the condition's root function ``a - b`` and whether the condition is true above 0 (``>``) rather
    #: than below (``<``); the jump happens each time the condition becomes true (no times: :mod:`.fitting.events`)
    trigger: tuple[Expression, bool] | None = None

    def applies(self, experiment: str) -> bool:
        return self.experiments is None or experiment in self.experiments

    def times_in(self, experiment: Experiment) -> tuple[float, ...]:
        """The times it happens at in ``experiment`` (none where it does not apply)."""
        if not self.applies(experiment.name):
            return ()
        if self.column is None:
            return self.times
        return tuple(float(t) for t in experiment.records[self.column][0])

    def value(self, experiment: Experiment, t: float) -> float:
        """The dosing record's value at ``t`` in ``experiment`` (``column`` events)."""
        assert self.column is not None  # the caller checks
        times, values = experiment.records[self.column]
        return float(values[int(np.searchsorted(times, t))])


@dataclass
class Problem:
    """A checked model + data, ready to be built into torch modules and fitted."""

    config: Config
    states: list[str]
    parameters: dict[str, Parameter]
    constants: dict[str, float | str]  # value, or the name of the column giving it per experiment
    equations: dict[str, Expression]  # full right-hand side (mechanism + corrections) per state
    corrections: dict[str, Expression]  # the correction added to a built-in, per state (may be empty)
    networks: dict[str, NetworkSpec]
    initial: dict[str, Initial]
    t0: float | None
    dataset: Dataset
    builtin: str | None = None
    warnings: list[str] = field(default_factory=list)
    observables: dict[str, Observable] = field(default_factory=dict)  # in the data's column order
    noise_parameters: dict[str, Parameter] = field(default_factory=dict)
    #: noise parameters given by a formula of parameters and constants (``sigma: {formula: ...}``), by name
    noise_formulas: dict[str, Expression] = field(default_factory=dict)
    structural: list | None = None  # the structural check's findings, once computed (api.check, api.fit)
    preequilibration: Preequilibration | None = None
    #: the initial guess's steady states (SteadyState.summary), once ``api.check`` has solved them
    settled: dict | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def likelihood(self) -> bool:
        """Whether the objective is a negative log-likelihood (a noise model is given)."""
        return any(o.noise is not None for o in self.observables.values())

    @property
    def network_outputs(self) -> dict[str, int]:
        return {name: spec.outputs for name, spec in self.networks.items()}

    @property
    def learned_terms(self) -> list[tuple[str, int]]:
        """(network, output) pairs used in the equations, in a stable order."""
        refs: set[tuple[str, int]] = set()
        for expr in self.equations.values():
            refs |= set(expr.network_refs)
            refs |= {(n, 0) for n in expr.names if n in self.networks}
        return sorted(refs)

    def term_label(self, net: str, index: int) -> str:
        return f"{net}[{index}]" if self.networks[net].outputs > 1 else net

    def equation_texts(self) -> dict[str, str]:
        return {s: e.text for s, e in self.equations.items()}


def resolve(config: Config, *, read_data: bool = True) -> Problem:
    """Check a config as a whole and read its data; raise :class:`ProblemList` with every problem."""
    label = config.label
    problems = Problems()
    warnings: list[str] = []
    m = config.model

    # -- states, equations, parameters -----------------------------------------------------------
    builtin = None
    equations_text: dict[str, str] = {}
    param_defaults: dict[str, ParameterSpec] = {}
    constants_defaults: dict[str, float | None] = {}
    if m.builtin is not None:
        from .mechanistic import get_model

        try:
            builtin = get_model(m.builtin, where=f"{label}: model.builtin")
        except ConfigError as exc:
            problems.add(exc)
            problems.raise_if_any()  # everything else is checked against the model's states
        if builtin is not None:
            states = list(builtin.states)
            equations_text = dict(builtin.equations)
            from .mechanistic.base import unit_text

            data_units = {"t": config.data.units.get(config.data.time)}  # the data's units, for the models' own
            data_units |= {s: config.data.units.get(c) for s, c in config.data.columns.items()}
            data_units |= {s: config.data.units.get(i.column) for s, i in m.initial.items()  # a dose column
                           if i.column is not None and not data_units.get(s)}
            for pname, pd in builtin.parameters.items():
                param_defaults[pname] = ParameterSpec(init=pd.init, fixed=pd.fixed, bounds=pd.bounds,
                                                      positive=pd.positive, unit=unit_text(pd.unit, data_units))
            constants_defaults = dict(builtin.constants)
        else:
            states = []
    else:
        states = list(m.states or [])
        equations_text = dict(m.equations or {})
        if m.states is None:
            problems.add(ConfigError("required when 'equations' are written out: the list of state names",
                                     where=f"{label}: model.states"))
            states = list(equations_text)

    _check_state_names(states, label, problems)
    problems.raise_if_any()  # everything else is checked against the states: report these alone
    if m.builtin is None:
        for s in states:
            if s not in equations_text:
                problems.add(ConfigError(f"no equation for state '{s}'; every state needs d{s}/dt",
                                         where=f"{label}: model.equations"))
        for s in equations_text:
            if s not in states:
                problems.add(ConfigError(f"equation for unknown state '{s}'{did_you_mean(s, states)}; "
                                         f"states are: {', '.join(states)}", where=f"{label}: model.equations.{s}"))

    networks = dict(config.networks)
    net_outputs = {n: s.outputs for n, s in networks.items()}

    # constants
    constants: dict[str, float | str] = {}
    for cname, default in constants_defaults.items():
        if cname not in m.constants and default is None:
            desc = builtin.constant_descriptions.get(cname, "") if builtin else ""
            problems.add(ConfigError(
                f"the built-in model '{m.builtin}' needs constant '{cname}'" + (f" ({desc})" if desc else "")
                + f"; add it under model.constants, e.g. {{{cname}: 100}}", where=f"{label}: model.constants"))
            constants[cname] = math.nan  # keeps the equations' names known: no follow-on errors
        elif default is not None:
            constants[cname] = default
    for cname, value in m.constants.items():
        if not cname.isidentifier() or keyword.iskeyword(cname):
            problems.add(ConfigError(f"constant name '{cname}' must be an identifier",
                                     where=f"{label}: model.constants"))
        constants[cname] = value if isinstance(value, float | int) else value.column

    # parameters: built-in defaults overridden by the config; custom: exactly those declared
    param_specs: dict[str, ParameterSpec] = dict(param_defaults)
    for pname, spec in m.parameters.items():
        if not pname.isidentifier() or keyword.iskeyword(pname) or pname.startswith("_"):
            problems.add(ConfigError(f"parameter name '{pname}' must be an identifier (letters, digits, '_')",
                                     where=f"{label}: model.parameters"))
            continue
        if builtin is not None and pname not in param_defaults:
            problems.add(ConfigError(
                f"'{pname}' is not a parameter of '{builtin.name}'{did_you_mean(pname, param_defaults)}; "
                f"its parameters are: {', '.join(param_defaults)}", where=f"{label}: model.parameters.{pname}"))
            continue
        base = param_specs.get(pname)
        if base is not None:
            merged = base.model_dump()
            merged.update(spec.model_dump(exclude_none=True))  # None means "not given": keep the default
            spec = ParameterSpec.model_validate(merged)
        param_specs[pname] = spec

    # equations (+ corrections)
    taken = {"states": set(states), "parameters": set(param_specs), "constants": set(constants),
             "networks": set(networks)}
    _check_collisions(taken, label, problems)
    namespace = Namespace(states=tuple(states), parameters=tuple(param_specs), constants=tuple(constants),
                          networks=net_outputs)
    equations: dict[str, Expression] = {}
    corrections: dict[str, Expression] = {}
    unparsed = False  # an equation that cannot be read may use any network: none is called unused then
    eq_where = "model.equations" if builtin is None else f"model.builtin ({m.builtin})"
    for s in states:
        if s not in equations_text:
            continue
        where = f"{label}: {eq_where}.{s}" if builtin is None else f"{label}: {eq_where}"
        try:
            expr = parse_expression(equations_text[s], where=where)
        except ExpressionError as exc:
            problems.add(exc)
            unparsed = True
            continue
        for err in expr.check_names(namespace, where=where):
            problems.add(err)
        equations[s] = expr
    for s, text in m.corrections.items():
        where = f"{label}: model.corrections.{s}"
        if s not in states:
            problems.add(ConfigError(f"correction for unknown state '{s}'{did_you_mean(s, states)}; "
                                     f"states are: {', '.join(states)}", where=where))
            continue
        try:
            corr = parse_expression(text, where=where)
        except ExpressionError as exc:
            problems.add(exc)
            unparsed = True
            continue
        for err in corr.check_names(namespace, where=where):
            problems.add(err)
        corrections[s] = corr
        if s in equations:
            equations[s] = add_expressions(equations[s], corr)

    observable_exprs = _parse_observables(config, states, param_specs, constants, networks, label, problems)
    initial_exprs = _parse_initial_formulas(config, states, param_specs, constants, label, problems, networks)
    events = _events(config, states, param_specs, constants, problems, set(networks))

    used = set()
    jumps = [e for event in events for e in event.assignments.values()]
    for expr in [*equations.values(), *initial_exprs.values(), *jumps]:  # a network may set an initial value
        used |= set(expr.names) | {n for n, _ in expr.network_refs}
    for net_spec in networks.values():  # a parameter fed to a network (or in a formula it is fed) is used
        used |= set(net_spec.inputs) | {n for i in net_spec.inputs if not i.isidentifier()
                                        for n in _input_names(i)}
    observed_names = set().union(*[e.names for e, _ in observable_exprs.values()],
                                 *[e.names for e in initial_exprs.values()], _noise_formula_names(config))
    for pname in param_specs:
        if pname not in used and pname not in observed_names and builtin is None:
            warnings.append(f"{label}: model.parameters.{pname}: declared but not used in any equation or observable")
    observed_networks = set().union(*[{n for n, _ in e.network_refs} | (e.names & set(networks))
                                      for e, _ in observable_exprs.values()])
    for net in networks:
        if net not in used and net not in observed_networks and not unparsed:
            problems.add(ConfigError(f"network '{net}' is not used in any equation; use it as {net}[0] "
                                     f"(e.g. in model.corrections) or remove it", where=f"{label}: networks.{net}"))

    parameters: dict[str, Parameter] = {}
    for pname, spec in param_specs.items():
        where = f"{label}: model.parameters.{pname}"
        if spec.init is None:
            problems.add(ConfigError("needs an initial value: write {init: VALUE} (or just the number)",
                                     where=where))
            continue
        lo, hi = spec.bounds if spec.bounds is not None else (None, None)
        positive = bool(spec.positive)
        if positive and spec.init <= 0 and not spec.fixed:
            problems.add(ConfigError(f"init must be > 0 for a positive parameter, got {spec.init:g}; "
                                     f"set positive: false to allow it", where=where))
            continue
        if not spec.fixed and ((lo is not None and spec.init <= lo) or (hi is not None and spec.init >= hi)):
            problems.add(ConfigError(f"init {spec.init:g} must lie strictly inside the bounds "
                                     f"[{_fmt(lo)}, {_fmt(hi)}]", where=where))
            continue
        desc = builtin.parameters[pname].description if builtin and pname in builtin.parameters else ""
        role = "mechanistic" if pname in used or pname not in observed_names else "observation"
        parameters[pname] = Parameter(name=pname, init=float(spec.init), fixed=bool(spec.fixed), lower=lo,
                                      upper=hi, positive=positive, unit=spec.unit, description=desc,
                                      per_experiment=bool(spec.per_experiment), role=role, prior=spec.prior)

    # networks' inputs
    for net, net_spec in networks.items():
        for k, inp in enumerate(net_spec.inputs):
            where = f"{label}: networks.{net}.inputs[{k}]"
            if not inp.isidentifier():  # a formula of states, t, parameters and constants
                try:
                    expr = parse_expression(inp, where=where)
                except ExpressionError as exc:
                    problems.add(exc)
                    continue
                if expr.network_refs:
                    problems.add(ConfigError(f"input {inp!r}: a network's input cannot use a network",
                                             where=where))
                for err in expr.check_names(Namespace(states=tuple(states), parameters=tuple(param_specs),
                                                      constants=tuple(constants), allow_t=True), where=where):
                    problems.add(err)
                names = sorted(expr.names)
            else:
                names = [inp]
            if any(n in parameters and parameters[n].per_experiment for n in names):
                problems.add(ConfigError(f"input '{inp}' has one value per experiment; a network's inputs are "
                                         f"states, t, parameters (shared by the experiments) and constants",
                                         where=where))
            elif not inp.isidentifier():
                continue
            elif inp != "t" and inp not in states and inp not in param_specs and inp not in constants:
                problems.add(ConfigError(f"unknown input '{inp}'{did_you_mean(inp, [*states, 't'])}; inputs are "
                                         f"states ({', '.join(states)}), t, or parameters and constants",
                                         where=where))
        if len(set(net_spec.inputs)) != len(net_spec.inputs):
            problems.add(ConfigError("an input is listed twice", where=f"{label}: networks.{net}.inputs"))

    # data columns and initial states
    d = config.data
    unknown_columns = [s for s in d.columns if s not in states]
    # a misspelt key of data.columns is reported once: not again as its state having no column
    meant = {nearest(s, states) for s in unknown_columns}
    for s in unknown_columns:
        problems.add(ConfigError(f"unknown state '{s}'{did_you_mean(s, states)}; states are: "
                                 f"{', '.join(states)}", where=f"{label}: data.columns.{s}"))
    known_labels = {*states, d.time, *d.columns.values(), *config.observables,
                    *(o.column or n for n, o in config.observables.items())}
    for key in d.labels:
        if key not in known_labels:
            problems.add(ConfigError(f"'{key}' is neither a state, a CSV column the config reads, the time "
                                     f"column nor an observable{did_you_mean(key, sorted(known_labels))}; labels "
                                     f"name one of: {', '.join(sorted(known_labels))}",
                                     where=f"{label}: data.labels.{key}"))
    columns = {s: c for s, c in d.columns.items() if s in states}  # state -> column, direct observations
    for oname, (expr, column) in observable_exprs.items():
        state = _direct_state(expr, states)
        if state is None:
            continue
        if state in columns and columns[state] != column:
            problems.add(ConfigError(f"state '{state}' is already observed in column '{columns[state]}' "
                                     f"(data.columns); observe it once", where=f"{label}: observables.{oname}"))
        columns[state] = column
    if states and not unknown_columns and not columns and not config.observables:
        problems.add(ConfigError("no state is mapped to a CSV column; give at least one as state: column "
                                 "(or an observable under 'observables')", where=f"{label}: data.columns"))
    initial: dict[str, Initial] = {}
    covariates: set[str] = {v for v in constants.values() if isinstance(v, str)}
    for s in m.initial:
        if s not in states:
            problems.add(ConfigError(f"unknown state '{s}'{did_you_mean(s, states)}; states are: "
                                     f"{', '.join(states)}", where=f"{label}: model.initial.{s}"))
    for s in states:
        ispec = m.initial.get(s)
        where = f"{label}: model.initial.{s}"
        if ispec is not None and ispec.formula is not None:
            if s in initial_exprs:
                initial[s] = Initial(s, "formula", expression=initial_exprs[s])
            continue
        if ispec is None or (ispec.value is None and ispec.column is None):
            if s not in columns and s not in meant:
                problems.add(ConfigError(
                    f"state '{s}' has no data column, so its initial value must be given: "
                    f"{{value: NUMBER}} (add learn: true to fit it)", where=where))
                continue
            initial[s] = Initial(s, "observed", learn=bool(ispec and ispec.learn), positive=bool(ispec and ispec.positive))
        elif ispec.column is not None:
            covariates.add(ispec.column)
            initial[s] = Initial(s, "column", column=ispec.column, learn=ispec.learn, positive=ispec.positive)
        else:
            assert ispec.value is not None  # the first branch takes value and column both None
            if ispec.learn and ispec.positive and ispec.value <= 0:
                problems.add(ConfigError(f"a positive initial value must start > 0, got {ispec.value:g}", where=where))
            initial[s] = Initial(s, "value", value=ispec.value, learn=ispec.learn, positive=ispec.positive)

    preequilibration = _preequilibration(config, states, constants, covariates, problems)
    if not states:  # nothing to read the data for
        problems.raise_if_any()

    dataset: Dataset | None = None
    if read_data:
        try:
            dataset = read_dataset(
                d.paths, base_dir=config.base_dir, states=states, columns=columns, time=d.time,
                experiment=d.experiment, covariates=sorted(covariates), delimiter=d.delimiter, decimal=d.decimal,
                units=d.units, where=f"{label}: data", observables=_observable_columns(columns, observable_exprs, states),
                t0=m.t0, records=list(dict.fromkeys(e.column for e in m.events if e.column is not None)))
            if d.validation is not None:
                split_validation(dataset, last_fraction=d.validation.last_fraction, after=d.validation.after,
                                 where=f"{label}: data.validation")
                if all(e.train.all() for e in dataset.experiments):
                    last = max(float(e.t[-1]) for e in dataset.experiments)
                    warnings.append(f"{label}: data.validation: after = {d.validation.after:g} is not before the "
                                    f"last time of any experiment ({last:g}): nothing is held out")
        except UdeError as exc:
            problems.add(exc)
        problems.raise_if_any()
        assert dataset is not None  # read_dataset returned, or its error was raised just above
        _check_against_data(config, dataset, initial, m.t0, problems, label)
        if preequilibration is not None and preequilibration.experiments is not None:
            names = [e.name for e in dataset.experiments]
            for name in preequilibration.experiments:
                if name not in names:
                    problems.add(ConfigError(f"unknown experiment '{name}'{did_you_mean(name, names)}; experiments "
                                             f"are: {', '.join(names)}", where=f"{label}: model.preequilibration."
                                                                               f"experiments"))
        if preequilibration is not None and m.t0 is None and len({float(e.t[0]) for e in dataset.experiments}) > 1 \
                and any("t" in e.names for e in equations.values()):
            problems.add(ConfigError("the equations use t, and the experiments start at different times: give "
                                     "model.t0, the time at which the model settles", where=f"{label}: model.t0"))
        _check_observations(dataset, initial, problems, warnings, label)
        _check_events(events, dataset, m.t0, problems, label)
    problems.raise_if_any()

    observables = _observables(config, columns, observable_exprs, states)
    noise_parameters: dict[str, Parameter] = {}
    noise_formulas: dict[str, Expression] = {}
    if dataset is not None and any(o.noise is not None for o in observables.values()):
        noise_parameters = _noise_parameters(observables, dataset, set(parameters) | set(states) | set(constants),
                                             label, problems, formulas=noise_formulas, parameters=parameters,
                                             constants=constants)
        _check_noise_against_data(observables, dataset, problems, label)
        problems.raise_if_any()
    if dataset is not None and len(dataset.experiments) == 1:
        for p in parameters.values():
            if p.per_experiment:
                warnings.append(f"{label}: model.parameters.{p.name}: per_experiment with one experiment is "
                                f"one value: the same as a shared parameter")

    return Problem(config=config, states=states, parameters=parameters, constants=constants, equations=equations,
                   corrections=corrections, networks=networks, initial=initial, t0=m.t0,
                   # no data only with read_data=False, for callers that read the model alone
                   dataset=cast(Dataset, dataset), builtin=m.builtin, warnings=warnings, observables=observables,
                   noise_parameters=noise_parameters, noise_formulas=noise_formulas, preequilibration=preequilibration,
                   events=events)


def _events(config: Config, states: list[str], param_specs: dict, constants: dict, problems: Problems,
            networks: set[str]) -> list[Event]:
    """model.events, their formulas checked (states, parameters, constants and t; no network), and the training
    that cannot solve jumps (multiple shooting, collocation) refused."""
    events = []
    for i, spec in enumerate(config.model.events):
        where = f"{config.label}: model.events[{i}]"
        record = () if spec.column is None else (spec.column,)
        if spec.column is not None and spec.column in {*states, *param_specs, *constants, *networks, "t"}:
            problems.add(ConfigError(f"the column {spec.column!r} is also the name of a state, parameter, constant "
                                     f"or network: the formulas could not tell them apart", where=f"{where}.column"))
            continue
        namespace = Namespace(states=tuple(states), parameters=tuple(param_specs), constants=(*constants, *record))
        assignments: dict[str, Expression] = {}
        for state, text in spec.set.items():
            if state not in states:
                problems.add(ConfigError(f"unknown state '{state}'{did_you_mean(state, states)}; states are: "
                                         f"{', '.join(states)}", where=f"{where}.set"))
                continue
            try:
                expr = parse_expression(text, where=f"{where}.set.{state}")
            except ExpressionError as exc:
                problems.add(exc)
                continue
            nets = sorted({n for n, _ in expr.network_refs} | (expr.names & networks))
            if nets:
                problems.add(ConfigError(f"{text!r} uses the network {nets[0]}: a jump's value is a formula of the "
                                         f"states, parameters and constants", where=f"{where}.set.{state}"))
                continue
            errors = expr.check_names(namespace, where=f"{where}.set.{state}")
            for err in errors:
                problems.add(err)
            if not errors:
                assignments[state] = expr
        trigger = None
        if spec.when is not None:
            try:
                trigger = parse_trigger(spec.when, where=f"{where}.when")
            except ExpressionError as exc:
                problems.add(exc)
                continue
            nets = sorted({n for n, _ in trigger[0].network_refs} | (trigger[0].names & networks))
            if nets:
                problems.add(ConfigError(f"{spec.when!r} uses the network {nets[0]}: a condition is a formula of the "
                                         f"states, parameters and constants", where=f"{where}.when"))
                continue
            unknown = trigger[0].check_names(namespace, where=f"{where}.when")
            for err in unknown:
                problems.add(err)
            if unknown:
                continue
        times = sorted(set(spec.times()))
        if len(times) < len(spec.at or ()):
            problems.add(ConfigError(f"a time is given twice in {spec.at}", where=f"{where}.at"))
        events.append(Event(tuple(float(t) for t in times), assignments,
                            None if spec.experiments is None else tuple(dict.fromkeys(spec.experiments)), spec.column,
                            spec.observed == "before",
                            "column" if spec.column is not None else "first" if spec.every is not None
                            else "when" if spec.when is not None else "at", trigger))
    training = config.training
    if events and training.strategy == "multiple_shooting":
        problems.add(ConfigError("multiple shooting cannot be used with jumps of states at given times "
                                 "(model.events): a segment's free start would have to know the jumps before it",
                                 where=f"{config.label}: training.strategy",
                                 hint="use single_shooting or curriculum"))
    for i, stage in enumerate(training.stages or []):
        if events and stage.objective in ("multiple_shooting", "collocation"):
            problems.add(ConfigError(f"a {stage.objective} stage cannot be used with jumps of states at given times "
                                     f"(model.events)", where=f"{config.label}: training.stages[{i}].objective",
                                     hint="use objective: trajectory"))
    return events


def _check_events(events: list[Event], dataset: Dataset, t0: float | None, problems: Problems, label: str) -> None:
    """Every event's experiments exist, none starts after a jump it has, no state jumps twice at once, and the
    events at one time agree on what an observation then sees (``observed``)."""
    names = [e.name for e in dataset.experiments]
    for i, event in enumerate(events):
        for name in event.experiments or ():
            if name not in names:
                problems.add(ConfigError(f"unknown experiment '{name}'{did_you_mean(name, names)}; experiments "
                                         f"are: {', '.join(names)}", where=f"{label}: model.events[{i}].experiments"))
    for i, event in enumerate(events):
        if event.column is not None and not any(event.times_in(e) for e in dataset.experiments):
            problems.add(ConfigError(f"the column {event.column!r} has no value in any experiment the event happens "
                                     f"in: no jump", where=f"{label}: model.events[{i}].column"))
    reported: set[tuple[int, int, str]] = set()  # a clash of two events is said once, not at every time it happens
    for e in dataset.experiments:
        start = t0 if t0 is not None else float(e.t[0])
        seen: dict[tuple[float, str], int] = {}
        sees: dict[float, int] = {}  # time -> the first event then, whose ``observed`` the others must share
        for i, event in enumerate(events):
            times = event.times_in(e)
            if not times:
                continue
            clash = next((sees[t] for t in times if t in sees and events[sees[t]].before != event.before), None)
            if clash is not None and (clash, i, "observed") not in reported:
                reported.add((clash, i, "observed"))
                t = next(t for t in times if sees.get(t) == clash)
                problems.add(ConfigError(
                    f"model.events[{clash}] jumps at t = {t:g} too (experiment '{e.name}') and observes "
                    f"{'before' if events[clash].before else 'after'} it: an observation at one time sees one "
                    f"state; give both the same 'observed'", where=f"{label}: model.events[{i}].observed"))
            for t in times:
                sees.setdefault(t, i)
            if times[0] < start:
                problems.add(ConfigError(
                    f"a jump at t = {times[0]:g} is before experiment '{e.name}' starts (t = {start:g}); "
                    + ("give model.t0, the time the model starts from" if t0 is None else "it would never happen"),
                    where=f"{label}: model.events[{i}].{event.field}"))
            for t in times:
                for state in event.assignments:
                    if (t, state) in seen and (seen[t, state], i, state) not in reported:
                        reported.add((seen[t, state], i, state))
                        problems.add(ConfigError(
                            f"'{state}' jumps at t = {t:g} in model.events[{seen[t, state]}] too (experiment "
                            f"'{e.name}'): give both in one event's set", where=f"{label}: model.events[{i}].set"))
                    seen[t, state] = i


def _preequilibration(config: Config, states: list[str], constants: dict[str, float | str], covariates: set[str],
                      problems: Problems) -> Preequilibration | None:
    """model.preequilibration, checked against the states and constants (its columns added to ``covariates``)."""
    spec = config.model.preequilibration
    if spec is None:
        return None
    where = f"{config.label}: model.preequilibration"
    values: dict[str, float | str] = {}
    for name, value in spec.constants.items():
        if name not in constants:
            problems.add(ConfigError(f"'{name}' is not a constant of the model{did_you_mean(name, list(constants))}"
                                     f"; pre-equilibration changes constants (model.constants)",
                                     where=f"{where}.constants.{name}"))
            continue
        if isinstance(value, float | int):
            values[name] = float(value)
        else:
            values[name] = value.column
            covariates.add(value.column)
    for s in spec.reset:
        if s not in states:
            problems.add(ConfigError(f"unknown state '{s}'{did_you_mean(s, states)}; states are: {', '.join(states)}",
                                     where=f"{where}.reset"))
    if len(set(spec.reset)) != len(spec.reset):
        problems.add(ConfigError("a state is listed twice", where=f"{where}.reset"))
    if spec.experiments is not None and len(set(spec.experiments)) != len(spec.experiments):
        problems.add(ConfigError("an experiment is listed twice", where=f"{where}.experiments"))
    return Preequilibration(values, tuple(spec.reset), tuple(spec.experiments) if spec.experiments else None)


# -- observables and noise -------------------------------------------------------------------------------

def _parse_observables(config: Config, states: list[str], param_specs: dict, constants: dict, networks: dict,
                       label: str, problems: Problems) -> dict[str, tuple[Expression, str]]:
    """observable -> (checked formula, CSV column), for the config's ``observables`` section."""
    # a network's output NET[i] may be observed (evaluated on the solved states, as in the equations)
    namespace = Namespace(states=tuple(states), parameters=tuple(param_specs), constants=tuple(constants),
                          networks={n: s.outputs for n, s in networks.items()})
    out: dict[str, tuple[Expression, str]] = {}
    for oname, spec in config.observables.items():
        where = f"{label}: observables.{oname}"
        try:
            expr = parse_expression(spec.formula, where=f"{where}.formula")
        except ExpressionError as exc:
            problems.add(exc)
            continue
        errors = expr.check_names(namespace, where=f"{where}.formula")
        for err in errors:
            if "did you mean" not in err.message:
                err.hint = ("an observation parameter (a scale, an offset, a reporting fraction) is "  # not a network
                            "declared under model.parameters like the others")
            problems.add(err)
        if errors:
            continue
        direct = _direct_state(expr, states)
        if oname in states and direct != oname:
            problems.add(ConfigError(f"'{oname}' is a state, but this observable measures {spec.formula!r}; give "
                                     f"the observable another name (and the CSV column as `column:`)", where=where))
            continue
        if oname in config.data.columns and direct == oname:
            problems.add(ConfigError(f"state '{oname}' is observed twice: in data.columns and here; keep one",
                                     where=where))
            continue
        if oname in param_specs or oname in constants:
            problems.add(ConfigError(f"'{oname}' already names a parameter or constant; give the observable "
                                     f"another name", where=where))
            continue
        out[oname] = (expr, spec.column or oname)
    return out


def _parse_initial_formulas(config: Config, states: list[str], param_specs: dict, constants: dict, label: str,
                            problems: Problems, networks: dict | None = None) -> dict[str, Expression]:
    # a network fed parameters and constants only (no state, no t) may set an initial value: NET[i]
    static = {n: s.outputs for n, s in (networks or {}).items()
              if not any(name in states or name == "t" for i in s.inputs
                         for name in ([i] if i.isidentifier() else _input_names(i)))}
    namespace = Namespace(parameters=tuple(param_specs), constants=(*constants, "t0"), allow_t=False,
                          networks=static)
    out = {}
    for s, spec in config.model.initial.items():
        if spec.formula is None or s not in states:
            continue
        where = f"{label}: model.initial.{s}.formula"
        try:
            expr = parse_expression(spec.formula, where=where)
        except ExpressionError as exc:
            problems.add(exc)
            continue
        fed = sorted({n for n in (*expr.names, *(m for m, _ in expr.network_refs)) if n in (networks or {})} - set(static))
        if fed:
            problems.add(ConfigError(f"network '{fed[0]}' is fed states or t: an initial value may use a network "
                                     f"whose inputs are parameters and constants only", where=where))
            continue
        errors = expr.check_names(namespace, where=where)
        for err in errors:
            problems.add(err)
        if not errors:
            out[s] = expr
    return out


def _direct_state(expr: Expression, states: list[str]) -> str | None:
    """The state a formula observes when it is that state alone (``I``), else None."""
    import ast

    tree = expr.tree
    return tree.id if isinstance(tree, ast.Name) and tree.id in states else None


def _observable_columns(columns: dict[str, str], observable_exprs: dict, states: list[str]) -> dict[str, str]:
    """observable -> CSV column: the directly observed states (named by the state), then the formulas."""
    out = {s: columns[s] for s in states if s in columns}
    for oname, (expr, column) in observable_exprs.items():
        if _direct_state(expr, states) is None:
            out[oname] = column
    return out


def _observables(config: Config, columns: dict[str, str], observable_exprs: dict,
                 states: list[str]) -> dict[str, Observable]:
    """Every observable with its noise model, in the data's observable order."""
    by_state = {_direct_state(e, states): (o, e) for o, (e, _) in observable_exprs.items()}
    default_noise = config.noise if config.noise is not None else (NoiseSpec() if config.uses_likelihood else None)
    out: dict[str, Observable] = {}
    for oname, column in _observable_columns(columns, observable_exprs, states).items():
        if oname in columns and oname in states:  # a state observed directly
            given, expr = by_state.get(oname, (None, None))
            spec = config.observables.get(given) if given is not None else None
            expr = expr if expr is not None else parse_expression(oname, where="")
            state: str | None = oname
        else:
            spec, given = config.observables[oname], None
            expr, state = observable_exprs[oname][0], None
        noise = (spec.noise if spec is not None and spec.noise is not None else default_noise)
        roles: dict[str, str] = {}
        if noise is not None:
            from .likelihood.noise import noise_model

            named = given if state is not None and given is not None else oname  # the name the config uses
            roles = {r: f"{r}_{named}" for r in noise_model(noise.distribution, noise.error).roles}
        unit = (spec.unit if spec is not None and spec.unit else None) or config.data.units.get(column)
        out[oname] = Observable(name=oname, column=column, expression=expr, state=state, noise=noise,
                                noise_parameters=roles, label=spec.label if spec is not None else None, unit=unit)
    return out


def _noise_formula_names(config: Config) -> set[str]:
    """The names the noise formulas of a config use (their errors are reported by :func:`_noise_parameters`)."""
    names: set[str] = set()
    specs = [config.noise, *(o.noise for o in config.observables.values())]
    for spec in specs:
        for role in ("sigma", "sigma_rel", "dispersion"):
            formula = getattr(getattr(spec, role, None), "formula", None) if spec is not None else None
            if formula is not None:
                with contextlib.suppress(ExpressionError):  # reported where the formula is resolved
                    names |= set(parse_expression(formula, where="").names)
    return names


def _noise_formula(text: str, parameters: dict[str, Parameter], constants: dict, where: str,
                   problems: Problems) -> Expression | None:
    """A noise parameter's formula, checked: shared parameters and constants only."""
    try:
        expr = parse_expression(text, where=where)
    except ExpressionError as exc:
        problems.add(exc)
        return None
    namespace = Namespace(parameters=tuple(parameters), constants=tuple(constants), allow_t=False)
    errors = expr.check_names(namespace, where=where)
    for name in sorted(expr.names):
        if name in parameters and parameters[name].per_experiment:
            errors.append(ExpressionError(f"parameter '{name}' has one value per experiment; a noise formula "
                                          f"takes shared parameters", where=where))
        elif isinstance(constants.get(name), str):
            errors.append(ExpressionError(f"constant '{name}' is read per experiment; a noise formula takes "
                                          f"numbers", where=where))
    for err in errors:
        problems.add(err)
    return None if errors else expr


def _noise_parameters(observables: dict[str, Observable], dataset: Dataset, taken: set[str], label: str,
                      problems: Problems, formulas: dict[str, Expression] | None = None,
                      parameters: dict[str, Parameter] | None = None, constants: dict | None = None
                      ) -> dict[str, Parameter]:
    """The noise parameters of every observable, started from the data where not given (those given by a
    formula go into ``formulas`` instead)."""
    from .likelihood.noise import noise_model

    out: dict[str, Parameter] = {}
    for k, o in enumerate(observables.values()):
        if o.noise is None:
            continue
        model = noise_model(o.noise.distribution, o.noise.error)
        y = np.concatenate([e.observations[e.train, k] for e in dataset.experiments])
        y = y[np.isfinite(y)]
        for role, pname in o.noise_parameters.items():
            spec: NoiseParameterSpec = getattr(o.noise, role)
            if spec.formula is not None:
                expr = _noise_formula(spec.formula, parameters or {}, constants or {},
                                      f"{label}: observables.{o.name}.noise.{role}.formula", problems)
                if expr is not None and formulas is not None:
                    formulas[pname] = expr
                continue
            if pname in taken:
                problems.add(ConfigError(f"the noise parameter '{pname}' of observable '{o.name}' has the name of a "
                                         f"parameter, state or constant; rename that one",
                                         where=f"{label}: observables.{o.name}"))
                continue
            lo, hi = spec.bounds if spec.bounds is not None else (None, None)
            lo = lo if lo else None
            init = spec.init if spec.init is not None else model.initial(role, y)
            if not spec.fixed:  # a starting value from the data is moved inside the bounds given
                if lo is not None and init <= lo:
                    init = lo * 2 if hi is None else (math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2)
                if hi is not None and init >= hi:
                    init = hi / 2 if lo is None else (math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2)
            what = {"sigma": "noise standard deviation", "sigma_rel": "relative noise standard deviation",
                    "dispersion": "negative-binomial dispersion"}[role]
            out[pname] = Parameter(name=pname, init=float(init), fixed=spec.fixed, lower=lo, upper=hi, positive=True,
                                   unit=(o.unit or "") if role == "sigma" and o.noise.distribution == "normal"
                                   and o.noise.error != "proportional" else "",
                                   description=f"{what} of {o.name}", role="noise")
    return out


def _check_noise_against_data(observables: dict[str, Observable], dataset: Dataset, problems: Problems,
                              label: str) -> None:
    """Values a noise model cannot describe (a negative or fractional count, a value <= 0 under log-normal)."""
    from .likelihood.noise import noise_model

    for k, o in enumerate(observables.values()):
        if o.noise is None:
            continue
        model = noise_model(o.noise.distribution, o.noise.error)
        for e in dataset.experiments:
            y = e.observations[:, k]
            finite = np.isfinite(y)
            found = model.data_problem(np.where(finite, y, 1.0))
            if found is None:
                continue
            bad, requirement = found
            rows = np.where(bad & finite)[0]
            if rows.size:
                i = int(rows[0])
                more = f" (and {rows.size - 1} more row(s))" if rows.size > 1 else ""
                problems.add(DataError(
                    f"line {e.lines[i]}, column '{o.column}': {y[i]:g} does not fit this column's noise model: "
                    f"{requirement}{more}; leave the cell empty if it was not observed, or choose "
                    f"another noise model", where=e.file))
                break


def initial_label(state: str, experiment: str, n_experiments: int) -> str:
    """How a learned initial value is named in tables: ``x(t0)``, or ``x(t0)[exp]`` with several experiments."""
    return f"{state}(t0)" if n_experiments == 1 else f"{state}(t0)[{experiment}]"


def add_expressions(a: Expression, b: Expression) -> Expression:
    """``a + b`` as one expression (text and tree)."""
    import ast

    tree = ast.BinOp(left=a.tree, op=ast.Add(), right=b.tree)
    ast.fix_missing_locations(tree)
    return Expression(text=f"{a.text} + {b.text}", tree=tree, names=a.names | b.names,
                      network_refs=a.network_refs | b.network_refs)


def _check_state_names(states: list[str], label: str, problems: Problems) -> None:
    seen = set()
    for k, s in enumerate(states):
        where = f"{label}: model.states[{k}]"
        if not isinstance(s, str) or not s.isidentifier() or keyword.iskeyword(s) or s.startswith("_"):
            problems.add(ConfigError(f"state name '{s}' must be an identifier (letters, digits, '_')", where=where))
        elif s in RESERVED or s in FUNCTIONS:
            problems.add(ConfigError(f"'{s}' is reserved; choose another state name", where=where))
        elif s in seen:
            problems.add(ConfigError(f"state '{s}' is listed twice", where=where))
        seen.add(s)


def _check_collisions(taken: dict[str, set[str]], label: str, problems: Problems) -> None:
    kinds = list(taken)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            for name in sorted(taken[a] & taken[b]):
                problems.add(ConfigError(f"'{name}' is used both as one of the {a} and as one of the {b}",
                                         where=f"{label}: model"))
        for name in sorted(taken[a] & (RESERVED | set(FUNCTIONS))):
            if a != "states":
                problems.add(ConfigError(f"'{name}' is reserved and cannot name one of the {a}", where=f"{label}: model"))


def _check_against_data(config: Config, dataset: Dataset, initial: dict[str, Initial], t0: float | None,
                        problems: Problems, label: str) -> None:
    for e in dataset.experiments:
        if t0 is not None and t0 > e.t[0]:
            problems.add(DataError(f"model.t0 = {t0:g} is after the first time {e.t[0]:g} of experiment "
                                   f"'{e.name}'", where=f"{label}: model.t0"))
        for j, s in enumerate(dataset.states):
            init = initial.get(s)
            if init is not None and init.source == "observed" and not np.isfinite(e.values[0, j]):
                if t0 is not None and t0 < e.t[0]:
                    problems.add(ConfigError(
                        f"state '{s}' starts at t0 = {t0:g} before the first observation of experiment "
                        f"'{e.name}', so its initial value must be given (value: NUMBER, learn: true)",
                        where=f"{label}: model.initial.{s}"))
                else:
                    problems.add(DataError(
                        f"line {e.lines[0]}, column '{dataset.columns[s]}': the first value of state '{s}' in "
                        f"experiment '{e.name}' is missing, and it is the default initial value; give "
                        f"model.initial.{s} (value: NUMBER, learn: true)", where=e.file))
            elif init is not None and init.source == "observed" and t0 is not None and t0 < e.t[0]:
                problems.add(ConfigError(
                    f"state '{s}' starts at t0 = {t0:g}, before the first observation ({e.t[0]:g}) of "
                    f"experiment '{e.name}'; give its initial value (value: NUMBER, learn: true)",
                    where=f"{label}: model.initial.{s}"))
    if config.training.loss.log:
        for e in dataset.experiments:
            for j, column in enumerate(dataset.observable_columns.values()):
                col = e.observations[:, j]
                bad = np.where(np.isfinite(col) & (col <= 0))[0]
                if bad.size:
                    k = int(bad[0])
                    problems.add(DataError(
                        f"line {e.lines[k]}, column '{column}': {col[k]:g} is not > 0, but "
                        f"training.loss.log compares logarithms; leave the cell empty (not observed) or use loss 'mse'",
                        where=e.file))
                    break


def check_fittable(problem: Problem) -> None:
    """Raise :class:`ConfigError` when a fit would have nothing to learn (a fixed model can still be
    built and simulated: this is checked by ``fit`` and ``check``, not by :func:`resolve`)."""
    if (not problem.networks and all(p.fixed for p in problem.parameters.values())
            and not any(i.learn for i in problem.initial.values())):
        raise ConfigError(
            "nothing to fit: every parameter is fixed, and there is no network and no learned initial value",
            where=f"{problem.config.label}: model",
            hint="learn a parameter (fixed: false), add a network, or learn an initial value")


def _check_observations(dataset: Dataset, initial: dict[str, Initial], problems: Problems, warnings: list[str],
                        label: str) -> None:
    """Observations that can move the fit: a value that is its experiment's initial state (the first
    observation, the default) matches by construction and tells nothing."""
    informative = []
    for e in dataset.experiments:
        values = e.observations[e.train]
        n = int(np.isfinite(values).sum())
        for j, s in enumerate(dataset.observables):
            init = initial.get(s)  # a directly observed state is an observable of its name
            if init is not None and init.source == "observed" and not init.learn and np.isfinite(values[0, j]):
                n -= 1
        informative.append(n)
        if n == 0 and len(dataset.experiments) > 1:
            warnings.append(f"{label}: data: experiment '{e.name}' has no training observation beyond its initial "
                            f"state: it does not constrain the fit")
    if sum(informative) == 0:
        problems.add(DataError("no training observation beyond the initial states: there is nothing to fit to",
                               where=f"{label}: data"))


def _fmt(x: float | None) -> str:
    return "null" if x is None else f"{x:g}"


def default_step(problem: Problem) -> float:
    """Fixed-step methods: 1/10 of the smallest spacing of the data (at most the span / 100)."""
    spacings = [float(np.min(np.diff(e.t))) for e in problem.dataset.experiments if e.n > 1]
    step = min(spacings) / 10 if spacings else 0.01
    return min(step, problem.dataset.time_span / 100)


def _input_names(text: str) -> frozenset[str]:
    """The names a network input formula uses (none when it does not parse: reported where it is checked)."""
    try:
        return parse_expression(text).names
    except ExpressionError:
        return frozenset()
