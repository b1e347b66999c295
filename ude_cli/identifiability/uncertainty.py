"""Intervals after a fit: which values get them, which method made each, and what is not identifiable.

:func:`assess` runs after every fit (``uncertainty:`` in the config): Wald intervals from the curvature
(:mod:`.hessian`) when they are cheap, profile likelihoods (:mod:`.profile`) when asked for. Each value's
reported interval is the best one computed: a profile, else a Wald interval with the network profiled out,
else one with the network held fixed (then marked as a lower bound on the uncertainty); ``ci_method`` says
which. A value is *not identifiable* when its profile stays below the threshold on a side, or its Wald
variance is unbounded or grows more than :data:`~.hessian.INFLATION_LIMIT`-fold when the network is
re-fitted; the reason is kept with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..fitting.multistart import single_start
from ..problem import Problem, initial_label
from .function import LikelihoodFunction, Target, final_weight_decay, targets
from .hessian import DEFAULT_BUDGET, INFLATION_LIMIT, HessianResult, wald_intervals
from .profile import Profile, ProfileSettings, edge_targets, profile_target


def learned_names(problem: Problem) -> dict[str, str]:
    """params.csv name -> kind of every value an interval can be computed for."""
    ds = problem.dataset
    out: dict[str, str] = {}
    for name, p in problem.parameters.items():
        if p.fixed:
            continue
        kind = "parameter" if p.role == "mechanistic" else "observation"
        if p.per_experiment:
            out.update({f"{name}[{e.name}]": kind for e in ds.experiments})
        else:
            out[name] = kind
    out.update({n: "noise" for n, p in problem.noise_parameters.items() if not p.fixed})
    for s in problem.states:
        if problem.initial[s].learn:
            out.update({initial_label(s, e.name, len(ds.experiments)): "initial" for e in ds.experiments})
    return out


def profile_request(problem: Problem, where: str | None = None) -> list[str]:
    """The names ``uncertainty.profile`` asks for (every learned value for ``true``), checked: a fixed or unknown
    name, or a profile of a fit that learns no such value, is a :class:`ConfigError`."""
    spec = problem.config.uncertainty.profile
    if spec is False:
        return []
    where = where or f"{problem.config.label}: uncertainty.profile"
    names = learned_names(problem)
    if not names:
        raise ConfigError("nothing to profile: this fit learns no mechanistic, observation, noise or initial value "
                          "(only network weights)", where=where)
    if spec is True:
        return list(names)
    out = []
    fixed = {n for n, p in {**problem.parameters, **problem.noise_parameters}.items() if p.fixed}
    for name in spec:
        if name in names:
            out.append(name)
        elif name in fixed:
            raise ConfigError(f"'{name}' is fixed (fixed: true): a fixed value has no profile", where=where)
        elif any(n.startswith(f"{name}[") for n in names):
            out.extend(n for n in names if n.startswith(f"{name}["))
        else:
            raise ConfigError(f"no learned value '{name}'{did_you_mean(name, list(names))}; learned: "
                              f"{', '.join(names)}", where=where)
    return list(dict.fromkeys(out))


def derived_request(problem: Problem) -> dict:
    """``uncertainty.derived`` parsed and checked: name -> :class:`~ude_cli.expressions.Expression` of parameters
    (not per-experiment ones), noise parameters and numeric constants; a bad one is a :class:`ConfigError`."""
    from ..errors import Problems
    from ..expressions import parse_expression

    out = {}
    problems = Problems()
    allowed = {n for n, p in problem.parameters.items() if not p.per_experiment} | set(problem.noise_parameters)
    allowed |= {n for n, v in problem.constants.items() if not isinstance(v, str)}
    for name, text in problem.config.uncertainty.derived.items():
        where = f"{problem.config.label}: uncertainty.derived.{name}"
        if not name.isidentifier():
            problems.add(ConfigError(f"'{name}' must be an identifier", where=where))
            continue
        try:
            expr = parse_expression(text, where=where)
        except ConfigError as exc:
            problems.add(exc)
            continue
        unknown = sorted(n for n in expr.names if n not in allowed)
        if unknown or expr.network_refs:
            problems.add(ConfigError(f"{text!r} may use parameters (not per-experiment ones), noise parameters and "
                                     f"numeric constants; unknown here: {', '.join(unknown) or 'a network'}"
                                     f"{did_you_mean(unknown[0], allowed) if unknown else ''}", where=where))
            continue
        out[name] = expr
    problems.raise_if_any()
    return out


@dataclass
class Interval:
    name: str
    value: float
    lower: float
    upper: float
    method: str
    se: float = math.nan
    identifiable: bool | None = None
    reason: str = ""


@dataclass
class Uncertainty:
    """What :func:`assess` computed (``metrics.json``'s ``uncertainty``)."""

    level: float
    intervals: dict[str, Interval]
    wald: HessianResult | None = None
    profiles: list[Profile] = field(default_factory=list)
    derived: dict[str, Interval] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: what a reader must not miss (the starts reached distinct, equally good optima)
    warnings: list[str] = field(default_factory=list)
    #: the starts' distinct, equally good optima (:func:`~ude_cli.fitting.multistart.distinct_optima`), or None
    optima: dict | None = None
    seconds: float = 0.0
    #: what a Wald sample of the learned values needs (:mod:`.bands`): the single-start model, the targets and
    #: their covariance on the unconstrained scale
    sampler: object | None = None

    def not_identifiable(self) -> list[Interval]:
        return [i for i in self.intervals.values() if i.identifiable is False]

    def to_json(self) -> dict:
        def num(x):
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "level": self.level,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
            "warnings": self.warnings,
            "distinct_optima": self.optima,
            "intervals": {n: {"value": i.value, "lower": num(i.lower), "upper": num(i.upper), "se": num(i.se),
                              "method": i.method, "identifiable": i.identifiable, "reason": i.reason or None}
                          for n, i in self.intervals.items()},
            "not_identifiable": [{"name": i.name, "reason": i.reason} for i in self.not_identifiable()],
            "derived": {n: {"value": i.value, "lower": num(i.lower), "upper": num(i.upper), "se": num(i.se),
                            "method": i.method, "formula": i.reason} for n, i in self.derived.items()},
            "wald": self.wald.to_json() if self.wald is not None else None,
            "profiles": [p.to_json() for p in self.profiles],
        }


def assess(problem: Problem, model, start: int = 0, *, monitor=None, profile: list[str] | None = None,
           fit_seconds: float = 0.0, start_nll=None) -> Uncertainty:
    """Intervals of the fitted ``model``'s start ``start`` (see the module docstring). The network is profiled
    out of the Wald intervals when that takes at most :data:`~.hessian.DEFAULT_BUDGET` seconds or half the fit's
    ``fit_seconds``, whichever is more (``uncertainty.hessian: profiled`` always). ``start_nll``: every start's
    negative log-likelihood (a multistart fit), to find starts at other, equally good optima (:func:`_optima`)."""
    spec = problem.config.uncertainty
    started = time.perf_counter()
    level = spec.level
    out = Uncertainty(level, {})
    names = learned_names(problem)
    if not names:
        return out
    profile = profile if profile is not None else profile_request(problem)
    if spec.hessian == "off" and not profile:
        out.notes.append("uncertainty.hessian: off: no intervals computed")
        if start_nll is not None and model.n_starts > 1:
            one = single_start(model, start)
            f0 = LikelihoodFunction(one, final_weight_decay(problem))
            _optima(out, problem, model, start, start_nll, f0, targets(one, problem, f0.objective))
        return out
    one = single_start(model, start)
    f = LikelihoodFunction(one, final_weight_decay(problem))
    ts = targets(one, problem, f.objective)
    if spec.hessian != "off":
        network = {"auto": "auto", "profiled": "profiled", "fixed": "fixed"}[spec.hessian]
        try:
            out.wald = wald_intervals(f, ts, level, network=network, budget=max(DEFAULT_BUDGET, 0.5 * fit_seconds))
        except Exception as exc:  # a solver failure at a perturbed point: say so, the fit stands
            out.notes.append(f"no Wald intervals: {type(exc).__name__}: {exc}")
        if out.wald is not None:
            h = out.wald
            scale = (f"variance times n/(n - k) = {h.variance_factor:.4g} (the noise scale is estimated from the "
                     "residuals), " if h.variance_factor != 1 else "")
            out.notes.append(f"wald intervals: value +- q * se ({scale}q from the {h.distribution} distribution; on log "
                             "scale for a value kept positive)")
            out.notes.extend(h.notes)
            for w in h.intervals:
                out.intervals[w.name] = Interval(w.name, w.value, w.lower, w.upper, w.method, w.se, w.identifiable,
                                                 w.reason)
            out.sampler = (one, ts, out.wald)
            out.derived = _derived(problem, one, out.wald, f)
    if profile:
        k: float = out.wald.parameters_counted if out.wald is not None else float(sum(t.kind != "noise" for t in ts))
        threshold, how = f.threshold(level, k)
        settings = ProfileSettings(max_steps=spec.profile_steps, iterations=spec.profile_iterations)
        by_name = {t.name: t for t in ts}
        out.notes.append(f"profile intervals: where 2 (PL - L_min) < {threshold:.4g}, {how}")
        for name in profile:
            t = by_name[name]
            step = _initial_step(t, out.intervals.get(name))
            p = profile_target(f, t, threshold=threshold, threshold_method=how, settings=settings, step=step,
                               monitor=monitor, edges=edge_targets(ts))
            out.profiles.append(p)
            wald = out.intervals.get(name)
            identifiable = p.identifiable
            reason = "" if p.identifiable else f"profile likelihood: {p.reason}"
            inflation = next((w.inflation for w in out.wald.intervals if w.name == name), None) if out.wald else None
            if p.identifiable and f.weight_decay > 0 and inflation is not None and inflation > INFLATION_LIMIT:
                # closed by the penalty alone: the likelihood itself does not decide between it and the network
                identifiable = False
                reason = (f"the network compensates it (its variance grows {inflation:.3g}-fold when the network is "
                          f"re-fitted); the profile's interval holds with the weight penalty in the objective "
                          f"(weight_decay {f.weight_decay:g}, a prior on the weights), not from the data alone")
            if p.better:
                out.notes.append(f"the profile of {name} found a point {p.better:.3g} log-likelihood units better "
                                 "than the fit: the fit had not converged; intervals are relative to that point")
            out.intervals[name] = Interval(name, t.value, p.lower, p.upper, "profile likelihood",
                                           wald.se if wald is not None else math.nan, identifiable, reason)
    _structural(out, problem)
    _edges(out, ts)
    if start_nll is not None and model.n_starts > 1:
        _optima(out, problem, model, start, start_nll, f, ts)
    out.seconds = time.perf_counter() - started
    return out


def _optima(out: Uncertainty, problem: Problem, model, best: int, start_nll, f: LikelihoodFunction,
            ts: list[Target]) -> None:
    """Starts that reached another optimum as good as the reported one (flip-flop kinetics: ka and ke swapped, V
    times ke/ka): a warning naming it, metrics.json's ``distinct_optima``, and each value outside its interval
    there flagged. "As good": a negative log-likelihood within half the profile intervals' threshold of the best's,
    where a correct interval must contain that start's values (:func:`~ude_cli.fitting.multistart.distinct_optima`)."""
    from ..fitting.multistart import distinct_optima, optima_line, start_values

    k = out.wald.parameters_counted if out.wald is not None else float(sum(t.kind != "noise" for t in ts))
    threshold, how = f.threshold(out.level, k)
    tolerance = threshold / 2
    values = start_values(problem, model)
    intervals = {n: (i.lower, i.upper) for n, i in out.intervals.items() if n in values}
    found = distinct_optima(values, np.asarray(start_nll, dtype=float), best, intervals, tolerance)
    if not found:
        return
    best_values = {n: float(v[best]) for n, v in values.items()}
    out.warnings.append(optima_line(found, best, best_values, tolerance, out.level))
    out.optima = {"tolerance": tolerance,
                  "method": f"starts whose negative log-likelihood is within half the {out.level * 100:g} % "
                            f"likelihood-ratio threshold ({how}) of the best's, at values outside its intervals",
                  "best": best, "optima": found}
    for name in dict.fromkeys(n for o in found for n in o["outside"]):
        i = out.intervals.get(name)
        if i is None:
            continue
        alt = ", ".join(f"{o['values'][name]:.4g}" for o in found if name in o["outside"])
        i.identifiable = False
        i.reason = "; ".join(r for r in (f"another start reached an optimum as good with {name} = {alt}, outside this "
                                         "interval: the data do not decide between them (the interval describes the "
                                         "reported one)", i.reason) if r)


def _edges(out: Uncertainty, ts: list[Target]) -> None:
    """A value kept positive that the fit drove towards 0 (far below its start) is at the edge of its log scale,
    where its gradient vanishes: the re-optimisations of the other values' profiles cannot move it back, so their
    intervals hold only with it there. Say so (found fitting Michaelis-Menten data that never reach Km)."""
    edge = edge_targets(ts)
    if not edge:
        return
    names = ", ".join(f"{t.name} = {t.value:.3g} (start {t.spec.init:g})" for t in edge if t.spec is not None)
    out.notes.append(f"at the edge of its range (driven towards 0, where its log-scale gradient vanishes): {names}; "
                     "the other values' Wald intervals hold only with it there, and may be too narrow if the data "
                     "allow it elsewhere (profile intervals restart it from its start at every point: ude fit "
                     "--profile); or fix it, or bound it away from 0, and fit again")
    for t in edge:
        i = out.intervals.get(t.name)
        if i is not None:
            i.identifiable = False
            i.reason = "; ".join(r for r in (f"driven towards 0 ({t.value:.3g}, its start {t.spec.init:g})"
                                             if t.spec is not None else "", i.reason) if r)


def _structural(out: Uncertainty, problem: Problem) -> None:
    """The structural check's verdicts (:mod:`.structural`, before fitting) joined with the intervals: a value a
    network can imitate (or that is not identifiable at all) is not identifiable whatever its interval; an
    undecided check is said beside the interval's own verdict."""
    from .structural import IMITABLE, NOT_IDENTIFIABLE, UNDECIDED

    for finding in problem.structural or []:
        if finding.verdict not in (IMITABLE, NOT_IDENTIFIABLE, UNDECIDED):
            continue
        text = "structural: " + finding.line.split("; to identify it", 1)[0]
        names = [n for n in out.intervals if n == finding.parameter or n.startswith(f"{finding.parameter}[")]
        if not names:  # no interval computed (uncertainty.hessian: off): the structural verdict alone
            out.intervals[finding.parameter] = Interval(finding.parameter, math.nan, math.nan, math.nan, "",
                                                        identifiable=None if finding.verdict == UNDECIDED else False,
                                                        reason=text)
            continue
        for name in names:
            i = out.intervals[name]
            if finding.verdict == UNDECIDED:
                i.reason = "; ".join(r for r in (i.reason, text) if r)
                continue
            i.reason = "; ".join(r for r in (text, i.reason) if r)
            i.identifiable = False


def _derived(problem: Problem, model, wald: HessianResult, f: LikelihoodFunction) -> dict[str, Interval]:
    """Delta-method intervals of ``uncertainty.derived``: ``se^2 = g' Cov g`` with ``g`` the formula's gradient
    in the learned values (central differences) and ``Cov`` their Wald covariance on their own scale."""
    formulas = derived_request(problem)
    if not formulas or wald.cov_u is None:
        return {}
    values = {n: float(v[0]) for n, v in model.parameters_.numpy().items() if v.ndim == 1}
    values |= {n: float(v[0]) for n, v in model.noise.numpy().items()}
    values |= {n: float(v) for n, v in problem.constants.items() if not isinstance(v, str)}
    ts = wald.targets
    D = np.array([t.derivative() for t in ts])
    cov = wald.cov_u * np.outer(D, D)  # on the values' own scale (the pseudo-inverse: 0 along undetermined directions)
    # onto the directions the data determine, on the unconstrained scale (where the information was inverted)
    projection = wald.cov_u @ np.linalg.pinv(wald.cov_u, rcond=1e-12, hermitian=True)
    q, dist = f.quantile(wald.level, wald.parameters_counted)
    out = {}
    for name, expr in formulas.items():
        fn = expr.compile("numpy")
        value = float(fn(values))
        g = np.zeros(len(ts))
        for i, t in enumerate(ts):
            if t.name not in expr.names:
                continue
            h = 1e-6 * max(abs(values[t.name]), 1e-8)
            up, down = dict(values), dict(values)
            up[t.name] += h
            down[t.name] -= h
            g[i] = (float(fn(up)) - float(fn(down))) / (2 * h)
        var = float(g @ cov @ g)
        se = math.sqrt(var) if var >= 0 else math.nan
        method = f"wald (delta method; q from the {dist} distribution)"
        g_u = g * D  # d formula / d u
        if np.linalg.norm(g_u - projection @ g_u) > 1e-6 * max(float(np.linalg.norm(g_u)), 1e-300):
            # it moves along a direction the data do not determine (a alone where only a*b is): unbounded
            se = math.inf
            method += "; it changes along a direction the data do not determine: not identifiable"
        out[name] = Interval(name, value, value - q * se, value + q * se, method, se, None, expr.text)
    return out


def _initial_step(t: Target, wald: Interval | None) -> float | None:
    """A first profile step of about a third of a standard error, on the stepping scale."""
    if wald is None or not np.isfinite(wald.se) or wald.se <= 0:
        return None
    step = wald.se / 3
    if t.log_scale:
        step = step / max(abs(wald.value), 1e-300)
    return min(step, 1.0) if t.log_scale else step


def table_columns(frame, uncertainty: Uncertainty | None):
    """params.csv with the interval columns: se, ci_lower, ci_upper, ci_level, ci_method, identifiable and
    identifiability (the reason), empty where no interval was computed (fixed values)."""
    frame = frame.copy()
    cols: dict[str, list] = {"se": [], "ci_lower": [], "ci_upper": [], "ci_level": [], "ci_method": [], "identifiable": [],
            "identifiability": []}
    for name in frame["name"]:
        i = uncertainty.intervals.get(name) if uncertainty is not None else None
        if i is None or uncertainty is None:
            for c, v in zip(cols, (math.nan, math.nan, math.nan, math.nan, "", None, ""), strict=True):
                cols[c].append(v)
            continue
        cols["se"].append(i.se)
        cols["ci_lower"].append(i.lower)
        cols["ci_upper"].append(i.upper)
        cols["ci_level"].append(uncertainty.level)
        cols["ci_method"].append(i.method)
        cols["identifiable"].append(i.identifiable)
        cols["identifiability"].append(i.reason)
    for c, values in cols.items():
        frame[c] = values
    return frame
