"""An SBML model as sympy: its states with their right-hand sides and initial values, and its constants.

Read with python-libsbml; math through sbmlmath (MathML -> sympy, with floats kept as floats, the time
csymbol replaced by :data:`TIME`). Reactions (kinetic laws with local parameters; a species in concentration
units changes by rate/compartment size), rate rules, assignment rules (substituted) and initial assignments
are supported, and events triggered at a time (``time >= t_ins``, without a delay: :class:`SbmlEvent`). Other
events, delays, algebraic rules, non-constant compartments and fast reactions raise
:class:`~ude_cli.errors.ConfigError` naming the file and the feature.

libsbml frees a model with its document: the document is kept referenced on :class:`SbmlModel` for as long
as any libsbml object of it is used (its garbage collection while a model is in use segfaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from ..errors import ConfigError

#: The time of SBML's csymbol (and PEtab's ``time``) in every expression this package builds.
TIME = sp.Symbol("__time__")
#: Most rounds of substituting assignment rules into each other (a cycle is an error).
MAX_RULE_DEPTH = 100


@dataclass(frozen=True)
class SbmlEvent:
    """An SBML event triggered when the time reaches a value: ``time >= time_value`` (or ``>``), or when one
    comparison of states (and parameters, time) becomes true (``trigger``), without a delay."""

    id: str
    time: sp.Expr | None  # of constants and parameters (the condition table may set them); None with ``trigger``
    assignments: dict[str, sp.Expr]  # variable -> its value after, from the values before (assignment rules in)
    #: the trigger's value before the start (SBML L3 ``initialValue``; L2 has none: true): an event whose time is
    #: at or before the start happens at the start only when it is false
    initial_value: bool = True
    #: a trigger on the states: the comparison (sympy relational, assignment rules in), model.events' ``when``
    trigger: sp.Expr | None = None


@dataclass
class SbmlModel:
    """States (species and parameters with rate rules) and values of one SBML model, as sympy."""

    path: Path
    #: state -> d(state)/dt
    rhs: dict[str, sp.Expr] = field(default_factory=dict)
    #: state -> initial value (a number or an expression of constants, parameters and other states' initials)
    initial: dict[str, sp.Expr] = field(default_factory=dict)
    #: constant parameters, compartments and constant species -> value (SBML's)
    values: dict[str, float] = field(default_factory=dict)
    #: symbol -> its assignment rule, substituted into everything already
    assignments: dict[str, sp.Expr] = field(default_factory=dict)
    #: what the ids mean: "species", "parameter", "compartment"
    kinds: dict[str, str] = field(default_factory=dict)
    events: list[SbmlEvent] = field(default_factory=list)
    #: species in concentration units that reactions change -> their compartment (a change of its size would
    #: change their concentrations, amounts kept)
    concentrations: dict[str, str] = field(default_factory=dict)
    document: object = None  # the libsbml document, kept alive (see the module docstring)
    #: constant parameters (and compartments) with an initial assignment -> it (assignment rules in): their value
    #: unless PEtab's condition table sets them (``overridden``: the condition's value wins, as in AMICI)
    parameter_initials: dict[str, sp.Expr] = field(default_factory=dict)
    #: the parameters of ``parameter_initials`` that the condition table sets (left as symbols by ``substitute``)
    overridden: set[str] = field(default_factory=set)

    def substitute(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with assignment-rule targets replaced by their rules, and the parameters of
        :attr:`parameter_initials` by their initial assignments, except those in :attr:`overridden`."""
        given = {sp.Symbol(k): v for k, v in self.assignments.items()}
        given.update({sp.Symbol(k): v for k, v in self.parameter_initials.items() if k not in self.overridden})
        return expr.xreplace(given) if given else expr


def _event(event, k: int, math, model: SbmlModel, path: Path) -> SbmlEvent:
    """One SBML event, triggered when the time reaches a value; anything else raises naming the event."""
    eid = event.getId() or f"number {k + 1}"
    if event.isSetDelay():
        raise _fail(path, f"SBML event {eid}: a delay is not supported")
    trigger = event.getTrigger()
    if trigger is None or trigger.getMath() is None:
        raise _fail(path, f"SBML event {eid}: no trigger")
    condition = math(trigger, f"the trigger of event {eid}")
    time = None
    if isinstance(condition, sp.GreaterThan | sp.StrictGreaterThan) and condition.lhs == TIME:
        time = condition.rhs
    elif isinstance(condition, sp.LessThan | sp.StrictLessThan) and condition.rhs == TIME:
        time = condition.lhs
    assignments = {}
    for a in event.getListOfEventAssignments():
        assignments[a.getVariable()] = model.substitute(math(a, f"the assignment of {a.getVariable()} in event {eid}"))
    initial = trigger.getInitialValue() if trigger.isSetInitialValue() else True
    if time is None or TIME in time.free_symbols or set(map(str, time.free_symbols)) & set(model.rhs):
        if not isinstance(condition, sp.LessThan | sp.StrictLessThan | sp.GreaterThan | sp.StrictGreaterThan):
            raise _fail(path, f"SBML event {eid}: a trigger other than one comparison ({condition}) is not "
                              f"supported (ude's jumps are at given times or when a comparison becomes true)")
        if not initial:
            raise _fail(path, f"SBML event {eid}: a trigger ({condition}) with initialValue false is not supported "
                              f"(model.events' when needs its condition false before it becomes true: initialValue "
                              f"true)")
        return SbmlEvent(eid, None, assignments, True, trigger=model.substitute(condition))
    return SbmlEvent(eid, model.substitute(time), assignments, bool(initial))


def _into_each_other(exprs: dict[str, sp.Expr], path: Path, what: str) -> dict[str, sp.Expr]:
    """``exprs`` (name -> expression) substituted into each other until nothing changes; a cycle raises."""
    for _ in range(MAX_RULE_DEPTH):
        given = {sp.Symbol(k): v for k, v in exprs.items()}
        changed = {k: v.xreplace(given) for k, v in exprs.items()}
        if changed == exprs:
            return exprs
        exprs = changed
    raise _fail(path, f"{what} refer to each other in a cycle")


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(message, where=str(path))


def read_sbml(path: Path) -> SbmlModel:
    """Read ``path`` into an :class:`SbmlModel`."""
    import libsbml
    import sbmlmath

    document = libsbml.readSBMLFromFile(str(path))
    errors = [document.getError(i) for i in range(document.getNumErrors())]
    fatal = [e for e in errors if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    if fatal:
        raise _fail(path, f"not a readable SBML file: line {fatal[0].getLine()}: "
                          f"{fatal[0].getShortMessage().strip() or fatal[0].getMessage().strip().splitlines()[0]}")
    model = document.getModel()
    if model is None:
        raise _fail(path, "the SBML file has no model")
    out = SbmlModel(path=path, document=document)
    if model.getNumConstraints():
        raise _fail(path, "SBML constraints are not supported")
    if model.getNumFunctionDefinitions():
        props = libsbml.ConversionProperties()
        props.addOption("expandFunctionDefinitions", True)
        if document.convert(props) != libsbml.LIBSBML_OPERATION_SUCCESS:
            raise _fail(path, "its function definitions could not be expanded")
        model = document.getModel()
    kw = {"floats_as_rationals": False, "evaluate": True, "ignore_units": True}

    def math(obj, what: str) -> sp.Expr:
        if obj.getMath() is None:
            raise _fail(path, f"{what}: no math")
        expr = sbmlmath.sbml_math_to_sympy(obj, **kw)
        replace = {}
        for s in expr.atoms(sp.Symbol, sp.Dummy):
            if isinstance(s, sbmlmath.TimeSymbol):
                replace[s] = TIME
            elif isinstance(s, sp.Dummy):
                raise _fail(path, f"{what}: the symbol {s} (an SBML csymbol other than time) is not supported")
        if replace:
            expr = expr.xreplace(replace)
        for f in expr.atoms(sp.Function):
            name = type(f).__name__
            if "delay" in name.lower():
                raise _fail(path, f"{what}: delay() is not supported")
            if isinstance(f, sbmlmath.CFunction) or "rateOf" in name:
                raise _fail(path, f"{what}: the function {name} is not supported")
        return sp.sympify(expr)

    sizes = {}
    for c in model.getListOfCompartments():
        cid = c.getId()
        out.kinds[cid] = "compartment"
        if not c.getConstant():
            raise _fail(path, f"compartment {cid}: a compartment whose size changes is not supported")
        sizes[cid] = c.getSize() if c.isSetSize() else 1.0
        out.values[cid] = sizes[cid]
    rate_rules, assignment_rules = {}, {}
    for rule in model.getListOfRules():
        var = rule.getVariable() if not rule.isAlgebraic() else ""
        if rule.isAlgebraic():
            raise _fail(path, "algebraic rules are not supported")
        if rule.isRate():
            rate_rules[var] = math(rule, f"rate rule for {var}")
        else:
            assignment_rules[var] = math(rule, f"assignment rule for {var}")
    for p in model.getListOfParameters():
        pid = p.getId()
        out.kinds[pid] = "parameter"
        if pid in assignment_rules:
            continue
        value = p.getValue() if p.isSetValue() else float("nan")
        if pid in rate_rules:
            out.rhs[pid] = rate_rules[pid]
            out.initial[pid] = sp.Float(value)
        else:  # without events, a parameter marked non-constant that no rule changes keeps its value
            out.values[pid] = value
    species = {}
    for s in model.getListOfSpecies():
        sid = s.getId()
        out.kinds[sid] = "species"
        species[sid] = s
        if sid in assignment_rules:
            continue
        comp = s.getCompartment()
        size = sizes.get(comp, 1.0)
        amount_units = s.getHasOnlySubstanceUnits()
        if s.isSetInitialConcentration():
            value = s.getInitialConcentration() * (size if amount_units else 1.0)
        elif s.isSetInitialAmount():
            value = s.getInitialAmount() / (1.0 if amount_units else size)
        else:
            value = float("nan")
        if s.getConstant() and sid not in rate_rules:
            out.values[sid] = value
            continue
        out.initial[sid] = sp.Float(value)
        out.rhs[sid] = rate_rules.get(sid, sp.Integer(0))
    for r in model.getListOfReactions():
        rid = r.getId()
        if r.isSetFast() and r.getFast():
            raise _fail(path, f"reaction {rid}: fast reactions are not supported")
        law = r.getKineticLaw()
        if law is None:
            raise _fail(path, f"reaction {rid}: no kinetic law")
        rate = math(law, f"kinetic law of reaction {rid}")
        local = {sp.Symbol(lp.getId()): sp.Float(lp.getValue())
                 for lp in (*law.getListOfParameters(), *law.getListOfLocalParameters())}
        if local:
            rate = rate.xreplace(local)
        for refs, sign in ((r.getListOfReactants(), -1), (r.getListOfProducts(), 1)):
            for ref in refs:
                sid = ref.getSpecies()
                s = species[sid]
                if s.getBoundaryCondition() or s.getConstant() or sid in rate_rules or sid in assignment_rules:
                    continue
                if ref.isSetStoichiometryMath() if hasattr(ref, "isSetStoichiometryMath") else False:
                    raise _fail(path, f"reaction {rid}: stoichiometryMath is not supported")
                if ref.isSetId() and model.getRule(ref.getId()) is not None:
                    raise _fail(path, f"reaction {rid}: a stoichiometry changed by a rule is not supported")
                stoich = ref.getStoichiometry() if ref.isSetStoichiometry() else 1.0
                size = 1.0 if s.getHasOnlySubstanceUnits() else sp.Symbol(s.getCompartment())
                if size != 1.0:
                    out.concentrations[sid] = s.getCompartment()
                term = sign * sp.Float(stoich) * rate
                out.rhs[sid] = out.rhs[sid] + (term if size == 1.0 else term / size)
    # assignment rules into each other, then into everything else
    out.assignments = _into_each_other(assignment_rules, path, "the assignment rules")
    parameter_initials: dict[str, sp.Expr] = {}  # (set on the model at the end: substitute reads rules alone here)
    for ia in model.getListOfInitialAssignments():
        sym = ia.getSymbol()
        expr = out.substitute(math(ia, f"initial assignment of {sym}"))
        if sym in out.initial:
            out.initial[sym] = expr
        elif sym in out.values:
            out.values.pop(sym)
            parameter_initials[sym] = expr  # a constant computed from others, unless a condition sets it
        else:
            raise _fail(path, f"initial assignment of {sym}: not a species, parameter or compartment of the model")
    # initial assignments of parameters that use other such parameters
    parameter_initials = _into_each_other(parameter_initials, path, "the initial assignments of parameters")
    out.rhs = {k: out.substitute(v) for k, v in out.rhs.items()}
    for k, event in enumerate(model.getListOfEvents()):
        out.events.append(_event(event, k, math, out, path))
    # initial values may use other states' initial values (species ids inside initial assignments)
    out.initial = _into_each_other(out.initial, path, "the initial assignments")
    for sid, v in out.initial.items():
        if v.is_number and not v.is_finite:
            raise _fail(path, f"species or parameter {sid}: no initial value")
    out.parameter_initials = parameter_initials
    return out
