"""Structural check, before fitting: can a network imitate a learned parameter's term?

A universal differential equation keeps its parameters' meaning only where no network can do the
parameter's work. For every learned mechanistic or observation parameter ``p`` this module asks, from
the equations alone (no data, no fit): *when p changes by a small amount, can the networks change so
that every equation, observable and initial state stays exactly as it was?* If they can, the data cannot
tell ``p`` from the networks (no amount of training decides it; only structure, a prior, regularisation
or ``ude discover``'s sparsity can). The data are read only where the equations alone cannot answer:
with one experiment (along one trajectory every state is a function of ``t``, and of an input whose data
only rise or fall), and where a network would have to grow like ``1/y`` (the data's range of ``y``).

The question is asked to first order, with every other parameter held. A change ``δ`` of ``p`` (with,
for an observation parameter, the change ``δ·ξ(x)`` of the observed state ``x`` that keeps the
observable as it was) changes the right-hand side of state ``s`` by ``δ·D_s``; each network output
``N`` of that equation contributes ``B = ∂f_s/∂N`` times any function ``η`` of the network's inputs. The
change is imitated when ``D_s = Σ B·η`` can be solved with such functions in every equation at once:

* ``η = D_s / B`` (one output, or term by term) uses only the network's inputs, parameters and
  constants, with no state in a denominator: **imitable**;
* ``D_s`` changes with a variable (state, ``t``, a per-experiment value) that no network of the equation
  sees and no ``B`` contains, or it couples variables that no single network sees together (a non-zero
  mixed derivative), or one network's ``η`` would depend on a variable it does not see: **not imitable**
  by the networks (a proof that the networks alone cannot; not a proof that the data identify ``p``);
* anything else, e.g. ``η = -k/y`` (``x*y*U`` imitating ``-k*x`` with a network unbounded where
  ``y = 0``): **could not decide**.

A parameter that also sets an initial state, or an observable no transformation can keep, is pinned
there: networks change neither. Expressions become sympy through :mod:`ude_cli.expressions` (built from
the checked tree, never from text).
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from ..expressions import parse_expression
from ..problem import Problem

IMITABLE = "imitable"
NOT_IMITABLE = "not_imitable"
UNDECIDED = "undecided"
NOT_IDENTIFIABLE = "not_identifiable"  # a change of it is undone without any network (a symmetry of the model)

#: largest set of variables whose mixed derivatives are tried when looking for a proof
_MAX_SUBSET = 4


@dataclass(frozen=True)
class StructuralFinding:
    """The verdict for one learned parameter.

    ``verdict`` is ``imitable`` (the data cannot tell the parameter from the networks), ``not_imitable``
    (no network can reproduce its effect alone: necessary for identifiability, not sufficient),
    ``undecided``, or ``not_identifiable`` (a change of it is undone without any network: e.g. an
    observable's scale against a learned initial state of linear dynamics). ``line`` is the one line a
    user reads; ``remedies`` say what would identify it.
    """

    parameter: str
    role: str  # "mechanistic" | "observation"
    verdict: str
    where: list[str]  # "dv/dt", "observable y", "x(t0)": where the parameter appears
    terms: list[str]  # the term it multiplies there, as written
    network: str | None  # the network term that can imitate it (or blocks the decision), e.g. "U[1]"
    network_inputs: list[str]
    reason: str
    line: str
    remedies: list[str] = field(default_factory=list)
    per_experiment: bool = False
    networks: list[str] = field(default_factory=list)  # every network term that takes part, e.g. ["U[0]", "U[1]"]

    @property
    def flagged(self) -> bool:
        """Whether a user must be warned: imitable, or not decided."""
        return self.verdict != NOT_IMITABLE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def structural_check(problem: Problem) -> list[StructuralFinding]:
    """One finding per learned mechanistic or observation parameter, in the config's order (none without a
    network: then nothing can imitate a parameter)."""
    if not problem.networks:
        return []
    return _Analysis(problem).run()


def warning_lines(problem: Problem, findings: list[StructuralFinding] | None = None) -> list[str]:
    """The warnings of the flagged findings, one line each (config and field named as other warnings)."""
    findings = structural_check(problem) if findings is None else findings
    label = problem.config.label
    return [f"{label}: model.parameters.{f.parameter}: {f.line}" + (f"; {_remedy_text(f)}" if f.remedies else "")
            for f in findings if f.flagged]


def summary(findings: list[StructuralFinding]) -> dict[str, Any]:
    """metrics.json's ``identifiability.structural``: the method in words and the findings."""
    return {
        "method": ("before fitting, from the equations: a parameter is imitable when the networks feeding its "
                   "equations can undo a small change of it (to first order, every other parameter held); "
                   "docs/identifiability.md"),
        "flagged": [f.parameter for f in findings if f.flagged],
        "findings": [f.to_json() for f in findings],
    }


def _settles_everywhere(problem: Problem) -> bool:
    """Whether every experiment starts at a steady state (model.preequilibration): then no initial value is given
    as such (an experiment that does not settle still starts at its given values, which pin what they pin)."""
    pre = problem.preequilibration
    if pre is None:
        return False
    return pre.experiments is None or problem.dataset is None or \
        {e.name for e in problem.dataset.experiments} <= set(pre.experiments)


def _remedy_text(f: StructuralFinding) -> str:
    return "to identify it: " + "; or ".join(f.remedies)


# -- the analysis ----------------------------------------------------------------------------------

@dataclass
class _Output:
    """One network output as it enters one equation."""

    label: str  # "U[1]" or "U"
    symbol: Any  # sympy Indexed
    network: str
    inputs: list[str]
    factor: Any  # B = d f / d N


@dataclass
class _Verdict:
    status: str  # "zero" | "yes" | "singular" | "no" | "unknown"
    output: _Output | None = None
    eta: Any = None
    reason: str = ""
    outputs: list[_Output] = field(default_factory=list)  # every output it takes (term by term: several)
    along: bool = False  # possible only along the one experiment's trajectory (see _one_trajectory)
    note: str = ""  # how the network does it, where a user would doubt it (a 1/y that stays bounded)

    def __post_init__(self) -> None:
        if not self.outputs and self.output is not None:
            self.outputs = [self.output]


class _Analysis:
    def __init__(self, problem: Problem):
        import sympy

        self.sp = sympy
        self.problem = problem
        n_exp = len(problem.dataset.experiments) if problem.dataset is not None else 1
        self.n_experiments = n_exp
        names = set(problem.states) | set(problem.parameters) | set(problem.constants) | {"t", "t0"}
        self.sym = {n: sympy.Symbol(n, real=True) for n in names}
        self.nets = list(problem.networks)
        self.states = [self.sym[s] for s in problem.states]
        # values that differ between experiments: no network sees them
        self.experiment_level = {self.sym[c] for c, v in problem.constants.items() if isinstance(v, str)}
        if n_exp > 1:
            self.experiment_level |= {self.sym[p.name] for p in problem.parameters.values() if p.per_experiment}
        self.all_variables = set(self.states) | {self.sym["t"]} | self.experiment_level
        self.variables = set(self.all_variables)
        self.rhs = {s: self._sympy(e) for s, e in problem.equations.items()}
        self.along, self.nearly = _one_trajectory(problem) if n_exp == 1 else ({}, {})
        self.ranges = {self.sym[k]: v for k, v in _data_ranges(problem).items()}
        # signs known: parameters declared positive, bounded below by 0 or fixed above 0, and states and t
        # whose data are all above 0
        self.positive = {self.sym[p.name]: sympy.Symbol(p.name, positive=True)
                         for p in problem.parameters.values()
                         if p.positive or (p.lower is not None and p.lower >= 0) or (p.fixed and p.init > 0)}
        self.positive_states = {v: sympy.Symbol(str(v), positive=True) for v, (lo, _) in self.ranges.items() if lo > 0}
        self.outputs_in = {s: self._outputs(f) for s, f in self.rhs.items()}
        uses: dict[Any, int] = {}
        for outs in self.outputs_in.values():
            for o in outs:
                uses[o.symbol] = uses.get(o.symbol, 0) + 1
        self.shared = {sym for sym, n in uses.items() if n > 1}

    def _sympy(self, expr):
        return expr.to_sympy(self.sym, networks=self.nets)

    def _show(self, expr) -> str:
        """An expression as text, a one-output network by its name (U, not U[0]) as the config writes it."""
        sp = self.sp
        bare = {a: sp.Symbol(str(a.base)) for a in expr.atoms(sp.Indexed)
                if self.problem.networks[str(a.base)].outputs == 1}
        return str(expr.subs(bare) if bare else expr)

    def _factor(self, o: _Output) -> str:
        """``B*`` before a network's name in a sentence ("x*y*U(x, y)"), nothing for B = 1."""
        return "" if o.factor == 1 else f"{self._show(o.factor)}*"

    def _outputs(self, f) -> list[_Output]:
        out = []
        for atom in sorted(f.atoms(self.sp.Indexed), key=str):
            net, index = str(atom.base), int(atom.indices[0])
            spec = self.problem.networks[net]
            label = f"{net}[{index}]" if spec.outputs > 1 else net
            # a formula input (S/N) counts as the names it uses: the network sees no more than those
            inputs = list(dict.fromkeys(n for i in spec.inputs for n in
                                        ([i] if i.isidentifier() else sorted(parse_expression(i).names))))
            out.append(_Output(label, atom, net, inputs, self.sp.diff(f, atom)))
        return out

    # -- per parameter ---------------------------------------------------------------------------
    def run(self) -> list[StructuralFinding]:
        out = []
        for p in self.problem.parameters.values():
            if p.fixed:
                continue
            finding = self._parameter(p)
            if finding is not None:
                out.append(finding)
        return out

    def _parameter(self, p) -> StructuralFinding | None:
        sp = self.sp
        ps = self.sym[p.name]
        self.variables = self.all_variables - {ps}  # its own value is a number here, per experiment or not
        where, terms = [], []
        in_equations = [s for s, e in self.problem.equations.items() if p.name in e.names]
        for s in in_equations:
            where.append(f"d{s}/dt")
            terms.append(_term_text(self.problem.equations[s].tree, p.name))
        observables = [o for o in self.problem.observables.values() if p.name in o.expression.names]
        for o in observables:
            where.append(f"observable {o.name}")
            terms.append(_compact(o.expression.text))
        initials = [i for i in self.problem.initial.values()
                    if i.source == "formula" and i.expression is not None and p.name in i.expression.names]
        for i in initials:
            assert i.expression is not None  # chosen above: formulas
            where.append(f"{i.state}(t0)")
            terms.append(_compact(i.expression.text))
        if not where:
            return None

        def finding(verdict, reason, line, output: _Output | None = None, remedies=(), outputs=()):
            return StructuralFinding(
                parameter=p.name, role=p.role, verdict=verdict, where=where, terms=terms,
                network=output.label if output else None, network_inputs=list(output.inputs) if output else [],
                reason=reason, line=line, remedies=list(remedies), per_experiment=p.per_experiment,
                networks=list(dict.fromkeys(o.label for o in outputs)) or ([output.label] if output else []))

        place = "; ".join(f"in {w}: {t}" for w, t in zip(where, terms, strict=True))
        try:
            # the change of the observed state that keeps the observables (observation parameters)
            moved, xi, pinned = self._observed_change(p, ps, observables)
            if pinned is not None:
                status = NOT_IMITABLE if pinned[0] == "no" else UNDECIDED
                return finding(status, pinned[1], _line(p.name, place, status, pinned[1]))
            pre = self.problem.preequilibration
            for i in initials:
                if pre is not None and _settles_everywhere(self.problem) and i.state not in pre.reset:  # settled
                    continue
                change = sp.diff(self._sympy(i.expression), ps)
                if moved is not None and i.state == str(moved):
                    change = change - xi.subs(moved, self._sympy(i.expression))
                if not _is_zero(sp, change):
                    reason = f"it also sets {i.state}(t0) (model.initial.{i.state}.formula), which no network changes"
                    return finding(NOT_IMITABLE, reason, _line(p.name, place, NOT_IMITABLE, reason))
            changes = {}
            for s, f in self.rhs.items():
                x = self.sym[s]
                d = -sp.diff(f, ps)
                if moved is not None:
                    d = d - sp.diff(f, moved) * xi
                    if x == moved:
                        d = d + sp.diff(xi, moved) * f
                changes[s] = _tidy(sp, d, self.variables)
            verdicts: dict[str, _Verdict] = {}
            for s, d in changes.items():
                v = self._equation(s, d, changes)
                if v.status != "zero":
                    verdicts[s] = v
        except (TypeError, ValueError, NotImplementedError, AttributeError, RecursionError,
                sp.PolynomialError) as exc:  # sympy cannot analyse these expressions
            reason = f"sympy could not analyse the expressions ({type(exc).__name__})"
            return finding(UNDECIDED, reason, _line(p.name, place, UNDECIDED, reason))
        if not verdicts:
            if moved is not None:
                reason = (f"the data cannot tell {p.name} from {moved}(t0): moving {moved} with it leaves every "
                          f"equation and observable as they were, no network needed")
            else:
                reason = f"the data cannot tell {p.name}: changing it changes no equation, observable or initial state"
            return finding(NOT_IDENTIFIABLE, f"{reason}", f"{p.name} ({place}) is not identifiable: {reason}",
                           remedies=[f"fix it (model.parameters.{p.name}: {{fixed: true}}) at a value known from "
                                     f"elsewhere"])
        for s, v in verdicts.items():
            if v.status == "no":
                reason = f"in d{s}/dt {v.reason}"
                return finding(NOT_IMITABLE, reason, _line(p.name, place, NOT_IMITABLE, reason), v.output)
        for s, v in verdicts.items():
            if v.status in ("unknown", "singular"):
                reason = f"in d{s}/dt {v.reason}"
                return finding(UNDECIDED, reason, _line(p.name, place, UNDECIDED, reason), v.output,
                               self._remedies(p, verdicts))
        used = [o for v in verdicts.values() for o in v.outputs]
        per_equation = {s: " + ".join(dict.fromkeys(f"{o.label}({', '.join(o.inputs)})" for o in v.outputs))
                        for s, v in verdicts.items()}
        nets = (next(iter(per_equation.values())) if len(per_equation) == 1 else
                " and ".join(f"{text} in d{s}/dt" for s, text in per_equation.items()))
        along = list(dict.fromkeys(f"{o.network} {self._sees_along(o)}" for v in verdicts.values() if v.along
                                   for o in v.outputs if self._sees_along(o)))
        if along:
            nets += f" ({'; '.join(along)}: along one experiment every state is a function of it)"
        common = " (their common level; the differences between experiments are identified)" \
            if p.per_experiment and self.n_experiments > 1 else ""
        reason = (f"the data cannot tell {p.name}{common} from the network" if len(used) == 1 else
                  f"the data cannot tell {p.name}{common} from the networks")
        notes = "; ".join(v.note for v in verdicts.values() if v.note)
        line = f"{p.name} ({place}) can be imitated by {nets}{f' ({notes})' if notes else ''}: {reason}"
        return finding(IMITABLE, reason, line, used[0], self._remedies(p, verdicts), outputs=used)

    # -- observation parameters: the state change that keeps the observables ---------------------
    def _observed_change(self, p, ps, observables):
        """``(state, ξ, None)``: the observables stay as they were when ``state`` moves by ``δ·ξ``;
        ``(None, None, None)``: the parameter is in no observable; ``(None, None, (kind, reason))``: pinned
        (kind "no") or not decided (kind "unknown")."""
        sp = self.sp
        if not observables:
            return None, None, None
        states = {s for o in observables for s in o.expression.names if s in self.problem.states}
        if len(states) != 1 or any(len(o.expression.names & set(self.problem.states)) != 1 for o in observables):
            if not states:
                return None, None, ("no", f"observable {observables[0].name} does not depend on a state, so no "
                                          f"network can change it")
            return None, None, ("unknown", "it enters observables of several states: the check handles an observable "
                                           "of one state")
        (name,) = states
        x = self.sym[name]
        g = self._sympy(observables[0].expression)
        dg = sp.diff(g, x)
        if _is_zero(sp, dg):
            return None, None, ("unknown", f"observable {observables[0].name} does not change with {name}")
        xi = sp.cancel(-sp.diff(g, ps) / dg)
        if (xi.free_symbols & self.variables) - {x}:
            return None, None, ("unknown", f"keeping observable {observables[0].name} would move {name} by an "
                                           f"amount that depends on other variables")
        for o in self.problem.observables.values():
            if name not in o.expression.names:
                continue
            h = self._sympy(o.expression)
            if not _is_zero(sp, sp.diff(h, ps) + sp.diff(h, x) * xi):
                what = (f"{name} is also observed directly (column '{o.column}')" if o.state == name else
                        f"observable {o.name} (column '{o.column}') also measures {name}")
                return None, None, ("no", f"{what}, which pins it")
        init = self.problem.initial.get(name)
        pre = self.problem.preequilibration
        if pre is not None and _settles_everywhere(self.problem) and name not in pre.reset:  # x(t0): where it settles
            return None, None, ("unknown", f"{name}(t0) is a steady state (model.preequilibration), which the "
                                           f"parameters and networks move too: the check reads initial values as given")
        if init is not None and init.source != "formula" and not init.learn:
            given = "observed" if init.source == "observed" else "given"
            return None, None, ("no", f"{name}(t0) is {given} (model.initial.{name}) and no network changes it, so "
                                      f"the observable at t0 pins it")
        if init is not None and init.source == "formula" and init.expression is not None:
            learned = [n for n in init.expression.names if n in self.problem.parameters
                       and not self.problem.parameters[n].fixed and n != p.name]
            if learned:
                return None, None, ("unknown", f"{name}(t0) is a formula of other learned parameters "
                                               f"({', '.join(learned)})")
            if p.name not in init.expression.names:
                return None, None, ("no", f"{name}(t0) is a formula of fixed values (model.initial.{name}.formula), "
                                          f"so the observable at t0 pins it")
        return x, xi, None

    # -- one equation ----------------------------------------------------------------------------
    def _equation(self, s: str, d, changes: dict) -> _Verdict:
        """Whether the networks of ``ds/dt`` can produce ``d`` (as ``Σ B·η(inputs)``); ``changes``: every
        equation's ``d``, for a network output that enters several equations."""
        sp = self.sp
        if _is_zero(sp, d):
            return _Verdict("zero")
        outputs = self.outputs_in.get(s, [])
        if not outputs:
            return _Verdict("no", reason=f"there is no network (changing it changes d{s}/dt, and nothing can undo that)")
        own = [o for o in outputs if o.symbol not in self.shared]
        found = self._produce(d, own) if own else _Verdict("no")
        if found.status in ("yes", "singular"):
            return found
        if len(own) < len(outputs):
            everything = self._produce(d, outputs)
            if everything.status in ("yes", "singular"):
                joint = self._joint(s, d, changes)
                if joint is not None:
                    return joint
                names = ", ".join(o.label for o in outputs if o.symbol in self.shared)
                return _Verdict("unknown", everything.output,
                                reason=f"only {names} could imitate it, and it also enters another equation")
        proof = self._proof(d, outputs)
        nearly = [(o, self.nearly[i]) for o in outputs for i in o.inputs if i in self.nearly]
        if proof.status == "no" and nearly:
            o, how = nearly[0]
            return _Verdict("unknown", o, reason=f"{proof.reason}; but with one experiment, {how}: {o.label} may "
                                                 f"imitate it along that trajectory")
        return proof

    def _joint(self, s: str, d, changes: dict) -> _Verdict | None:
        """The one output of ``ds/dt``, which enters other equations too: its change is forced
        (``η = d/B``); what that change does to each other equation must be undone there by that equation's
        own outputs. A verdict ("yes" or "no"), or None when it stays undecided."""
        sp = self.sp
        outputs = self.outputs_in[s]
        if len(outputs) != 1:
            return None
        (o,) = outputs
        forced = self._eta(d, o)
        if forced.status != "yes" or forced.along:
            return None
        used = [o]
        for s2, outs in self.outputs_in.items():
            here = [x for x in outs if x.symbol == o.symbol]
            if s2 == s or not here:
                continue
            caused = here[0].factor * forced.eta
            rest = _tidy(sp, changes[s2] - caused, self.variables)
            if _is_zero(sp, rest):
                continue
            others = [x for x in outs if x.symbol != o.symbol and x.symbol not in self.shared]
            what = (f"{o.label} would have to change by a multiple of {self._show(forced.eta)}, which changes "
                    f"d{s2}/dt too")
            if not others:
                return _Verdict("no", o, reason=f"(and through {o.label}, d{s2}/dt): {what}, where no other "
                                                f"network can undo it")
            undo = self._produce(rest, others)
            if undo.status == "yes" and not undo.along:
                used += undo.outputs
                continue
            proof = self._proof(rest, others)
            if proof.status == "no":
                return _Verdict("no", o, reason=f"(and through {o.label}, d{s2}/dt): {what}, and there {proof.reason}")
            return None
        return _Verdict("yes", o, forced.eta, outputs=used)

    def _sees_along(self, o: _Output) -> str | None:
        """Why, along the one experiment, the network sees every state (an input that only rises or falls)."""
        for i in o.inputs:
            if i in self.along:
                return self.along[i]
        return None

    def _allowed(self, o: _Output, along: bool = False) -> tuple[set, set]:
        if along and self._sees_along(o):  # along one trajectory every state is a function of a monotone input
            return set(self.all_variables), set(self.problem.networks)
        seen = {self.sym[i] for i in o.inputs}
        nets = {n for n, spec in self.problem.networks.items() if set(spec.inputs) <= set(o.inputs)}
        return seen, nets

    def _eta(self, d, o: _Output) -> _Verdict:
        sp = self.sp
        if _is_zero(sp, o.factor):
            return _Verdict("unknown", o)
        eta = sp.cancel(d / o.factor)
        variables = eta.free_symbols & self.variables
        outputs = {str(a.base) for a in eta.atoms(sp.Indexed)}
        along = False
        seen, nets = self._allowed(o)
        if not variables <= seen or not outputs <= nets:
            seen, nets = self._allowed(o, along=True)
            if not variables <= seen or not outputs <= nets:
                return _Verdict("no", o, eta)
            along = True
        _, den = sp.fraction(sp.together(eta))
        if den.free_symbols & self.variables:
            away = self._away_from_zero(den)
            if away is None:
                return _Verdict("singular", o, eta, along=along)
            return _Verdict("yes", o, eta, along=along, note=(
                f"{o.label} changes by a multiple of {self._show(eta)}, which is bounded where the data lie "
                f"({away})") if away else "")
        return _Verdict("yes", o, eta, along=along)

    def _nonvanishing(self, factor) -> bool:
        """Whether sympy proves a factor of one sign and away from 0: for every real value, or for positive
        parameters and states (those whose data are all above 0), including those states at 0."""
        if factor.is_positive or factor.is_negative:
            return True
        f = factor.subs({**self.positive, **self.positive_states})
        at0 = f.subs({v: 0 for v in self.positive_states.values()})
        return bool((f.is_positive and at0.is_positive) or (f.is_negative and at0.is_negative))

    def _away_from_zero(self, den) -> str | None:
        """Whether every factor of a denominator stays away from 0: proved so (see _nonvanishing), or a
        variable whose data stay above 10 % of their largest magnitude, without a change of sign. The
        data's ranges in words ("" when none was needed); None when a factor may come near 0."""
        sp = self.sp
        out = []
        for f in sp.Mul.make_args(sp.factor(den)):
            if not f.free_symbols & self.variables:
                continue
            base = f.base if f.is_Pow else f
            if self._nonvanishing(base):
                continue
            if base not in self.ranges:
                return None
            lo, hi = self.ranges[base]
            if lo * hi <= 0 or min(abs(lo), abs(hi)) <= 0.1 * max(abs(lo), abs(hi)):
                return None
            out.append(f"{base} in [{lo:.3g}, {hi:.3g}]")
        return ", ".join(out)

    def _produce(self, d, outputs: list[_Output]) -> _Verdict:
        sp = self.sp
        singular = None
        for o in outputs:
            v = self._eta(d, o)
            if v.status == "yes":
                return v
            if v.status == "singular" and singular is None:
                singular = v
        if len(outputs) > 1:  # term by term
            chosen: list[_Verdict] | None = []
            any_singular = False
            for term in sp.Add.make_args(d):
                best = None
                for o in outputs:
                    v = self._eta(term, o)
                    if v.status == "yes":
                        best = v
                        break
                    if v.status == "singular" and best is None:
                        best = v
                if best is None:
                    chosen = None
                    break
                any_singular |= best.status == "singular"
                assert chosen is not None  # set to None only on the way out of the loop
                chosen.append(best)
            if chosen and not any_singular:
                used = list({id(v.output): v.output for v in chosen if v.output is not None}.values())
                return _Verdict("yes", used[0], d, outputs=used, along=any(v.along for v in chosen),
                                note="; ".join(v.note for v in chosen if v.note))
            if chosen and singular is None:
                singular = next(v for v in chosen if v.status == "singular")
        if singular is not None and singular.output is not None:
            o = singular.output
            singular.reason = (f"{self._factor(o)}{o.label}({', '.join(o.inputs)}) could imitate it only by adding "
                               f"a multiple of {self._show(singular.eta)} to {o.label}, unbounded where "
                               f"{_den_text(sp, singular.eta, self.variables)} = 0: whether the data tell it from "
                               f"the network depends on how near 0 the trajectories come")
        return singular or _Verdict("no")

    def _proof(self, d, outputs: list[_Output]) -> _Verdict:
        """A reason no combination of the outputs can produce ``d``, or "unknown"."""
        sp = self.sp
        seen_by = [self._allowed(o)[0] for o in outputs]
        seen_any = set().union(*seen_by)
        variables = sorted(d.free_symbols & self.variables, key=str)
        term = self._show(d)
        for u in variables:
            if u in seen_any or any(o.factor.has(u) for o in outputs):
                continue
            if not _is_zero(sp, sp.diff(d, u)):
                what = "the experiment's value of" if u in self.experiment_level else ""
                of_t = [o.label for o in outputs if "t" in o.inputs and u not in self.experiment_level]
                differ = (f", as far as the experiments' trajectories differ at the same times ({', '.join(of_t)} "
                          f"sees t)") if of_t else ""
                return _Verdict("no", outputs[0], reason=(
                    f"its term changes with {what + ' ' if what else ''}{u}, which no network there sees "
                    f"({_outputs_text(outputs)}){differ}"))
        additive = all(not (o.factor.free_symbols & self.variables) and not o.factor.atoms(sp.Indexed)
                       for o in outputs)
        if additive and not d.atoms(sp.Indexed):
            for size in range(2, min(len(variables), _MAX_SUBSET) + 1):
                for subset in itertools.combinations(variables, size):
                    if any(set(subset) <= s for s in seen_by):
                        continue
                    if not _is_zero(sp, sp.diff(d, *subset)):
                        return _Verdict("no", outputs[0], reason=(
                            f"its term {term} couples {', '.join(map(str, subset))}, which no single network there "
                            f"sees together ({_outputs_text(outputs)})"))
        if len(outputs) == 1:
            v = self._eta(d, outputs[0])
            o = outputs[0]
            seen, _ = self._allowed(o)
            for u in sorted(v.eta.free_symbols & self.variables - seen, key=str) if v.eta is not None else []:
                if not _is_zero(sp, sp.diff(v.eta, u)):
                    return _Verdict("no", o, reason=(
                        f"{self._factor(o)}{o.label}({', '.join(o.inputs)}) would have to change by a multiple of "
                        f"{self._show(v.eta)}, which depends on {u}: the network does not see it"))
        return _Verdict("unknown", outputs[0],
                        reason=f"the check could not decide whether {_outputs_text(outputs)} can produce {term}")

    # -- remedies --------------------------------------------------------------------------------
    def _remedies(self, p, verdicts: dict[str, _Verdict]) -> list[str]:
        out = [f"fix it (model.parameters.{p.name}: {{fixed: true}}) at a value known from elsewhere"]
        for s, v in verdicts.items():
            o = v.output
            if o is None or v.eta is None:
                continue
            if v.along:
                out.append("experiments that start elsewhere (their different trajectories can pin it)")
            needed = sorted({str(u) for u in v.eta.free_symbols & self.variables} & set(o.inputs))
            rest = [i for i in o.inputs if i not in needed]
            if needed and rest:
                out.append(f"a network for d{s}/dt that does not see {' or '.join(needed)} "
                           f"(e.g. {o.network} without {needed[0]} in networks.{o.network}.inputs)")
            elif needed and self.n_experiments > 1:
                out.append(f"a network of t alone (networks.{o.network}.inputs: [t]): the experiments' different "
                           f"trajectories then tell it from the network")
            # a factor the term lacks helps only where the trajectories come near its zero
            others = [i for i in o.inputs if i not in needed and i != "t"
                      and self._away_from_zero(self.sym[i]) is None]
            if others and needed and v.status == "yes":
                factor = "*".join(i for i in o.inputs if i in needed or i == others[0])
                z = others[0]
                lo, hi = self.ranges.get(self.sym[z], (None, None))
                near = (f"it helps only as far as the trajectories come near {z} = 0" if lo is None else
                        f"its data span [{lo:.3g}, {hi:.3g}]")
                out.append(f"a correction that cannot produce that term, e.g. {factor}*{o.label} (it could still "
                           f"imitate it as a network unbounded where {z} = 0: {near})")
            break
        out.append("estimate it from the model that `ude discover` recovers (its refit)")
        return out


def _data_ranges(problem: Problem) -> dict[str, tuple[float, float]]:
    """The smallest and largest value in the data of each directly observed state, and of t."""
    import numpy as np

    if problem.dataset is None:
        return {}
    experiments = problem.dataset.experiments
    times = np.concatenate([e.t for e in experiments] + ([np.array([problem.t0])] if problem.t0 is not None else []))
    out = {"t": (float(times.min()), float(times.max()))}
    for k, o in enumerate(problem.observables.values()):
        if o.state is None:
            continue
        y = np.concatenate([e.observations[:, k] for e in experiments])
        y = y[np.isfinite(y)]
        if y.size:
            out[o.state] = (float(y.min()), float(y.max()))
    return out


def _one_trajectory(problem: Problem) -> tuple[dict[str, str], dict[str, str]]:
    """With one experiment: the network inputs along which every state is a function of that input
    (``t``, and a directly observed state whose data only rise or only fall), and those whose data
    nearly do (Spearman |rho| >= 0.95): name -> how, in words."""
    import numpy as np

    inputs = {i for spec in problem.networks.values() for i in spec.inputs}
    along = {"t": "sees t"} if "t" in inputs else {}
    nearly: dict[str, str] = {}
    if problem.dataset is None:
        return along, nearly
    (experiment,) = problem.dataset.experiments
    observed = {o.state for o in problem.observables.values() if o.state is not None}
    for s in problem.states:
        if s in inputs and s not in observed:
            nearly[s] = (f"{s} is not observed, and if it only rises or only falls, every state is a function of it "
                         f"along the trajectory")
    for k, o in enumerate(problem.observables.values()):
        if o.state is None or o.state not in inputs:
            continue
        y = experiment.observations[:, k]
        y = y[np.isfinite(y)]
        if y.size < 3:
            continue
        steps = np.diff(y)
        if (steps > 0).all() or (steps < 0).all():
            along[o.state] = f"sees {o.state}, which only {'rises' if steps[0] > 0 else 'falls'} in the data"
            continue
        ranks = np.argsort(np.argsort(y, kind="stable"), kind="stable")  # Spearman: Pearson of the ranks
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = float(np.corrcoef(np.arange(y.size), ranks)[0, 1])
        if np.isfinite(rho) and abs(rho) >= 0.95:
            nearly[o.state] = (f"{o.state} {'rises' if rho > 0 else 'falls'} almost monotonically in the data (Spearman "
                               f"{rho:.2f}), so every state is nearly a function of it along the trajectory")
    return along, nearly


# -- text ------------------------------------------------------------------------------------------

def _line(name: str, place: str, verdict: str, reason: str) -> str:
    if verdict == NOT_IMITABLE:
        return (f"{name} ({place}) cannot be imitated by a network: {reason} (necessary for identifiability, not "
                f"sufficient: see its profile after fitting)")
    return f"{name} ({place}): could not decide whether a network can imitate it: {reason}"


def _compact(text: str) -> str:
    return text.replace(" * ", "*").replace(" / ", "/").replace(" ** ", "**")


def _term_text(tree: ast.expr, name: str) -> str:
    """The additive terms of a right-hand side that contain ``name``, as written (``-k*x``)."""
    terms: list[tuple[int, ast.expr]] = []

    def walk(node: ast.expr, sign: int) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            walk(node.left, sign)
            walk(node.right, sign if isinstance(node.op, ast.Add) else -sign)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            walk(node.operand, -sign)
        else:
            terms.append((sign, node))

    walk(tree, 1)
    picked = [(s, n) for s, n in terms if any(isinstance(a, ast.Name) and a.id == name for a in ast.walk(n))]
    text = ""
    for k, (sign, node) in enumerate(picked):
        body = _compact(ast.unparse(node))
        text += ("-" if sign < 0 else "") + body if k == 0 else (" - " if sign < 0 else " + ") + body
    return text


def _den_text(sp, expr, variables) -> str:
    _, den = sp.fraction(sp.together(expr))
    factors = [f for f in sp.Mul.make_args(sp.factor(den)) if f.free_symbols & variables]
    return " or ".join(str(f.base if f.is_Pow else f) for f in factors) or str(den)


def _outputs_text(outputs: list[_Output]) -> str:
    return ", ".join(f"{o.label}({', '.join(o.inputs)})" for o in outputs)


def _tidy(sp, d, variables):
    """``d`` expanded into its terms (with variables or networks), or simplified (a number)."""
    return sp.expand(sp.cancel(d)) if d.has(*variables) or d.atoms(sp.Indexed) else sp.simplify(d)


def _is_zero(sp, expr) -> bool:
    if expr == 0:
        return True
    try:
        return bool(sp.simplify(expr) == 0)
    except (TypeError, ValueError, NotImplementedError):
        return False
