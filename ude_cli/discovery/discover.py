"""``ude discover``: recover equations for the learned terms, refit them to the data, and check.

The network proposes, the data decide:

1. Each learned term (``NN[i]``) is sampled along the fitted trajectories and regressed on a
   library of candidates with pysindy, sweeping the sparsity threshold (:mod:`ude_cli.discovery.symbolic`).
   This is reported, and its best model becomes one candidate.
2. A forward selection builds the recovered model: at each step the network *proposes* the
   library terms that best explain what the current model still misses of it, each proposal is
   refitted to the *data* by ODE least squares (:mod:`ude_cli.discovery.refit`) together with every other
   coefficient and the learned mechanistic parameters, and the candidate with the lowest BIC is
   kept while it lowers the BIC by more than ``min_improvement``. A network fitted to noisy data
   is often too far from the true term near the data for a regression on its outputs alone to
   isolate the right terms; a refit to the data does not have that problem.
3. The chosen model is scored beside the UDE and the mechanistic-only model on the training and
   validation windows, simulated far beyond the data, and given a verdict that never presents a
   diverging or clearly worse model as a success.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..problem import Parameter, Problem
from .extrapolate import Extrapolation, default_horizon, extrapolate_model, extrapolate_system
from .refit import (
    DataObjective,
    OdeSystem,
    Refit,
    TermModel,
    coefficient_name,
    fitted_values,
    observe_extrapolations,
    refit,
    replace_terms,
    runs_test,
    unsupported,
)
from .symbolic import (
    Fidelity,
    Library,
    SparseFit,
    TermSamples,
    best_on_path,
    build_library,
    fidelity,
    sample_terms,
    sparsity_path,
)

#: Verdicts, from best to worst, with what each means.
VERDICTS = {
    "recovered": "the recovered equations explain the data and stay bounded beyond them",
    "approximation": "the recovered equations approximate the learned terms: the library lacks their form",
    "none": "no library term is supported by the data: the mechanistic model alone explains them",
    "worse": "the recovered equations fit the data clearly worse than the UDE",
    "failed": "the recovered model fails to solve or diverges",
}
#: Verdicts that must never be presented as a success.
FAILURES = ("worse", "failed")


@dataclass(frozen=True)
class DiscoverSettings:
    """Settings of a discovery (the config's ``discover:`` section; see its field descriptions)."""

    degree: int = 2
    functions: tuple[str, ...] = ()
    include_bias: bool = True
    samples: int = 200
    propose: int = 6
    max_terms: int = 4
    min_improvement: float = 2.0
    horizon: float | None = None
    worse_ratio: float = 3.0
    structure_p: float = 0.01
    resamples: int = 100
    level: float = 0.95

    @classmethod
    def from_spec(cls, spec, **overrides) -> DiscoverSettings:
        """From a :class:`~ude_cli.config.DiscoverSpec` (or None), with non-None ``overrides``."""
        base = {} if spec is None else spec.model_dump()
        base.update({k: v for k, v in overrides.items() if v is not None})
        if "functions" in base:
            base["functions"] = tuple(base["functions"])
        return cls(**base)


@dataclass
class TermReport:
    """What was found for one learned term.

    Attributes:
        term: ``(network, output)``.
        label: ``"U[0]"``.
        states: the states whose equations use it.
        library: its candidate library (functions of the network's inputs).
        path: pysindy's sparsity path on the network's outputs.
        proposal: the best model of the path (by BIC against the network).
        model: the recovered term (features and coefficient names).
        coefficients: the refitted coefficient of each feature, by name.
        fidelity: how well the recovered term (refitted coefficients) reproduces the network.
        proposal_fidelity: the same for pysindy's proposal.
        saturated: the data ask for more library terms than the selection may give it (it uses its
            whole library, or has ``max_terms`` and one more would still lower the BIC).
        exact: reported as the learned term's form (not an approximation): the verdict is
            ``recovered``.
    """

    term: tuple[str, int]
    label: str
    states: list[str]
    library: Library
    path: list[SparseFit]
    proposal: SparseFit
    model: TermModel
    coefficients: dict[str, float]
    fidelity: Fidelity
    proposal_fidelity: Fidelity
    saturated: bool = False
    exact: bool = False
    intervals: dict = field(default_factory=dict)
    degenerate: str | None = None

    def expression(self, digits: int = 4) -> str:
        """The term with its coefficients as numbers: ``"-0.9023*x*y"``."""
        from .symbolic import format_terms

        return format_terms([self.coefficients[n] for n in self.model.names], [f.text for f in self.model.features],
                            digits)


@dataclass
class Candidate:
    """One candidate model refitted to the data.

    Attributes:
        source: how it was proposed ("mechanistic only", "forward step 2", "pysindy on the network").
        term_models: what stands in for each learned term.
        equations: state -> equation text (with parameter names).
        parameters: the parameters (mechanistic and coefficients).
        refit: its fit to the data.
    """

    source: str
    term_models: dict[tuple[str, int], TermModel]
    equations: dict[str, str]
    parameters: dict[str, Parameter]
    refit: Refit

    @property
    def n_terms(self) -> int:
        return sum(len(tm.features) for tm in self.term_models.values())

    def describe(self) -> str:
        parts = [f"{_label(t)} = {tm.text()}" for t, tm in self.term_models.items()]
        return "; ".join(parts)


@dataclass
class Discovery:
    """Everything ``ude discover`` found and measured (see :func:`discover`)."""

    problem: Problem
    settings: DiscoverSettings
    terms: list[TermReport]
    candidates: list[Candidate]
    chosen: Candidate
    mechanistic: Candidate
    ude: dict
    extrapolations: dict[str, Extrapolation]
    verdict: str
    messages: list[str]
    seconds: float
    system: OdeSystem | None = field(repr=False, default=None)
    samples: TermSamples | None = field(repr=False, default=None)
    selection: StableSelection | None = None
    log: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    #: the recovered model's own intervals (profile likelihoods of every value it fits, by ``ude fit``'s
    #: machinery on recovered.yaml; :func:`ude_cli.discovery.files.recovered_intervals`)
    recovered_intervals: dict = field(default_factory=dict)
    #: the noise parameters the refits hold (the fit's estimates, ``metrics.json``), by name
    noise: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.verdict not in FAILURES

    def headline(self) -> str:
        return f"{self.verdict.upper()}: {self.messages[0]}"


def _label(term: tuple[str, int]) -> str:
    return f"{term[0]}[{term[1]}]"


# -- the pipeline ---------------------------------------------------------------------------------

def discover(problem: Problem, model, metrics: Mapping, settings: DiscoverSettings | None = None, *,
             predictions=None, start: int = 0, log: Callable[[str], None] | None = None) -> Discovery:
    """Recover equations for the learned terms of a fitted model and check them against the data.

    Arguments:
        problem: the resolved problem of the fit.
        model: the fitted model (:class:`~ude_cli.fitting.model.UDEModel`, or anything with its ``dense``
            and ``terms_along``).
        metrics: the fit's ``metrics.json`` (``loss``, ``validation_loss``, ``train_mse``, ...).
        settings: the discovery settings (defaults: degree-2 polynomial library).
        predictions: the fit's ``predictions.csv`` as a DataFrame (for the UDE's residual check).
        start: which start of a multistart to use.
        log: receives one line per step (progress).

    Returns:
        The :class:`Discovery`, verdict included; a failed or diverging recovered model is a
        verdict, not an exception.

    Raises:
        ConfigError: the model has no learned terms, or a library function is invalid.
    """
    settings = settings or DiscoverSettings()
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        if log is not None:
            log(text)

    began = time.perf_counter()
    terms = problem.learned_terms
    if not terms:
        raise ConfigError("the model has no neural network terms: there is nothing to discover",
                          where=problem.config.label, hint="discover works on runs of configs with 'networks'")
    reason = unsupported(problem)
    if reason is not None:
        raise ConfigError(f"discovery's refits do not handle {reason} yet", where=problem.config.label,
                          hint="the fit itself is complete; discover replaces the networks of the equations")
    samples = sample_terms(problem, model, settings.samples, start=start)
    noise = dict((metrics.get("likelihood") or {}).get("noise") or {})
    objective = DataObjective(problem, noise=noise)
    libraries = {t: build_library(problem.networks[t[0]].inputs, settings.degree, settings.functions,
                                  settings.include_bias) for t in terms}
    thetas = {t: libraries[t].matrix(samples.variables) for t in terms}
    usable = {t: np.all(np.isfinite(thetas[t]), axis=0) & (np.linalg.norm(thetas[t], axis=0) > 0) for t in terms}

    paths = {}
    for t in terms:
        paths[t] = sparsity_path(thetas[t], samples.targets[t], libraries[t].names)
        path_best = best_on_path(paths[t])
        say(f"pysindy on {_label(t)}: {len(paths[t])} sparse models on the threshold path; best by BIC: "
            f"{_format(path_best.coefficients, libraries[t].names)} (R² {path_best.fidelity.r2:.4g} against the network)")

    selector = _Selector(problem, objective, libraries, thetas, samples, usable, ude_start(problem, model, start))
    mechanistic = selector.evaluate({t: () for t in terms}, {}, "mechanistic only")
    say(f"mechanistic only: train loss {mechanistic.refit.train_loss:.4g}, BIC {mechanistic.refit.bic:.2f}")
    chosen = _propose(selector, mechanistic, paths, settings, say)
    # bagging over the UDE's starts: each other good start's network proposes its own candidates (into the same
    # cache of refits), and is a member of the stability vote with them
    members = [(start, selector, chosen)]
    good, note = good_starts(model, metrics, start)
    say(note)
    for s_k in good[1:]:
        samples_k = sample_terms(problem, model, settings.samples, start=s_k)
        thetas_k = {t: libraries[t].matrix(samples_k.variables) for t in terms}
        usable_k = {t: usable[t] & np.all(np.isfinite(thetas_k[t]), axis=0) for t in terms}
        paths_k = {t: sparsity_path(thetas_k[t], samples_k.targets[t], libraries[t].names) for t in terms}
        selector_k = selector.for_start(samples_k, thetas_k, usable_k)
        selector_k.seen.add(selector._key({t: () for t in terms}))
        chosen_k = _propose(selector_k, mechanistic, paths_k, settings, _prefixed(say, f"start {s_k}: "))
        say(f"start {s_k}: its network proposes {chosen_k.describe()} (BIC {chosen_k.refit.bic:.2f})")
        members.append((s_k, selector_k, chosen_k))
    chosen, stable = _stable_selection(selector, chosen, settings, say, members)
    stable.starts["note"] = note
    _calibrate_runs(objective, chosen, say, selector.system_of(chosen))
    saturated = _saturated(selector, chosen, terms, usable, settings, say)
    reports = []
    for t in terms:
        tm = chosen.term_models[t]
        coefs = {n: chosen.refit.values[n] for n in tm.names}
        pred = _term_values(tm, coefs, thetas[t], libraries[t])
        prop = best_on_path(paths[t])
        reports.append(TermReport(
            term=t, label=problem.term_label(*t), states=_states_using(problem, t), library=libraries[t],
            path=paths[t], proposal=prop, model=tm, coefficients=coefs, fidelity=fidelity(pred, samples.targets[t]),
            proposal_fidelity=prop.fidelity, saturated=t in saturated,
            degenerate=degenerate_term(problem, problem.term_label(*t), samples.targets[t], _states_using(problem, t)),
            intervals={n: stable.intervals[n] for n in tm.names if n in stable.intervals}))

    system = selector.system_of(chosen)
    horizon = settings.horizon if settings.horizon is not None else default_horizon(problem)
    extrapolations = {
        "recovered": extrapolate_system(system, chosen.refit.values, chosen.refit.initial, horizon, "recovered"),
        "mechanistic only": extrapolate_system(selector.system_of(mechanistic), mechanistic.refit.values,
                                               mechanistic.refit.initial, horizon, "mechanistic only"),
    }
    if model is not None:
        extrapolations["UDE"] = extrapolate_model(problem, model, horizon, start=start)
    observe_extrapolations(objective, extrapolations, {"recovered": chosen.refit.values, "UDE": fitted_values(model, start),
                                                       "mechanistic only": mechanistic.refit.values})
    ude = _ude_scores(problem, objective, metrics, predictions)
    evidence = _evidence(objective, chosen, mechanistic, ude, settings, bool(saturated))
    # terms dropped although they lower the BIC: their coefficients cannot be told apart (a missing form)
    evidence["dropped"] = [{"term": c["term"], "feature": c["feature"], "bic_gain": c["bic_gain"]}
                           for c in stable.dropped
                           if c["bic_gain"] is None or c["bic_gain"] > settings.min_improvement]
    verdict, messages = judge(chosen, mechanistic, ude, extrapolations["recovered"], settings, reports, evidence)
    for r in reports:
        r.exact = verdict == "recovered"
    return Discovery(problem=problem, settings=settings, terms=reports, candidates=selector.candidates, chosen=chosen,
                     mechanistic=mechanistic, ude=ude, extrapolations=extrapolations, verdict=verdict,
                     messages=messages, seconds=time.perf_counter() - began, system=system,
                     samples=samples, selection=stable, log=lines, evidence=evidence, noise=noise)


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    """``say`` with every line prefixed (another start's steps in the log)."""
    def prefixed(text: str) -> None:
        say(prefix + text)

    return prefixed


def _propose(selector: _Selector, mechanistic: Candidate, paths: Mapping, settings: DiscoverSettings,
             say: Callable[[str], None]) -> Candidate:
    """The forward selection from the mechanistic-only model, then pysindy's own models refitted as wholes (the
    proposals of one start's network, ``selector``'s samples): the model of lowest BIC."""
    terms = list(paths)
    current = mechanistic
    step = 0
    while True:
        step += 1
        trials = selector.forward_candidates(current, settings.propose, settings.max_terms, f"forward step {step}")
        if not trials:
            say(f"forward step {step}: no candidate left (every term has max_terms = {settings.max_terms} terms or "
                "uses its whole library)")
            break
        fitted = [c for c in trials if c.refit.success]  # a refit that did not converge proves nothing
        if not fitted:
            say(f"forward step {step}: none of the {len(trials)} candidates could be fitted to the data")
            break
        best = min(fitted, key=lambda c: c.refit.bic)
        gain = current.refit.bic - best.refit.bic
        kept = gain > settings.min_improvement
        say(f"forward step {step}: {len(trials)} candidates refitted; best {best.describe()} "
            f"(BIC {best.refit.bic:.2f}, was {current.refit.bic:.2f}): "
            + ("kept" if kept else "not kept, the selection stops here: " + (
                "it does not lower the BIC" if gain <= 0 else
                f"it lowers the BIC by only {gain:.2f}, not by more than discover.min_improvement = "
                f"{settings.min_improvement:g}")))
        if not kept:
            break
        current = best
    # pysindy's own models, refitted to the data as a whole: its best one, and the best with at most n
    # terms per learned term along its path. Forward selection adds one term at a time, so it misses
    # terms that only help together (the same x*y/(1+x) in both equations of a predator-prey pair).
    chosen = current
    levels: list[tuple[str, dict[tuple[str, int], SparseFit | None]]] = [
        ("pysindy on the network", {t: best_on_path(paths[t]) for t in terms})]
    levels += [(f"pysindy's path, at most {n} term(s) each", {t: _best_with_at_most(paths[t], n) for t in terms})
               for n in range(1, settings.max_terms + 1)]
    for source, fits in levels:
        supports = {t: (f.support if f is not None else ()) for t, f in fits.items()}
        if not any(supports.values()) or any(len(sup) > settings.max_terms for sup in supports.values()):
            continue
        if selector.is_known(supports):
            continue
        start_values = {(t, k): float(f.coefficients[k]) for t, f in fits.items() if f is not None for k in f.support}
        alternative = selector.evaluate(supports, start_values, source, base=mechanistic)
        better = _better(alternative, chosen, settings.min_improvement)
        say(f"{source}, refitted to the data: {alternative.describe()} (BIC {alternative.refit.bic:.2f}): "
            + ("chosen instead" if better else "not chosen" + (
                ", its refit did not converge" if not alternative.refit.success else
                f", not better than the BIC {chosen.refit.bic:.2f} chosen by more than discover.min_improvement = "
                f"{settings.min_improvement:g} per extra term")))
        if better:
            chosen = alternative

    return chosen


#: A UDE start joins the stability vote when its training loss is at most this many times the best start's.
GOOD_STARTS = 2.0


def good_starts(model, metrics: Mapping, best: int) -> tuple[list[int], str]:
    """The UDE starts whose networks join the stability vote (the best first, then the others whose training loss
    is at most :data:`GOOD_STARTS` times the best's, by loss), and a sentence saying which and why."""
    n = int(getattr(model, "n_starts", 1) or 1)
    losses = metrics.get("loss_per_start")
    if n <= 1:
        return [best], ("the run has one UDE start: the stability vote is over halves of the data only; fit several "
                        "(ude fit --starts N, or training.starts in the config) and the networks of the good ones "
                        f"(training loss within {GOOD_STARTS:g} times the best's) each propose candidates and vote")
    if not losses or len(losses) != n:
        return [best], (f"the run has {n} UDE starts but no loss per start in metrics.json: only the best start "
                        f"({best}) proposes candidates")
    ref = losses[best]
    ok = [k for k in range(n) if k != best and losses[k] is not None and math.isfinite(losses[k])
          and ref is not None and losses[k] <= GOOD_STARTS * ref]
    ok.sort(key=lambda k: losses[k])
    left = [k for k in range(n) if k != best and k not in ok]
    note = (f"{1 + len(ok)} of the run's {n} UDE starts propose candidates and vote: start {best} (the best, training "
            f"loss {ref:.4g})" + "".join(f", start {k} ({losses[k]:.4g})" for k in ok)
            + (f"; left out, training loss above {GOOD_STARTS:g} times the best's: "
               + ", ".join(f"start {k} ({_g(losses[k])})" for k in left) if left else ""))
    return [best, *ok], note


def _best_with_at_most(path: list[SparseFit], n: int) -> SparseFit | None:
    """The path's model of lowest BIC (against the network) with 1 to ``n`` terms, if any."""
    fits = [f for f in path if 0 < len(f.support) <= n]
    return min(fits, key=lambda f: f.bic) if fits else None


def _better_refit(a: Refit, b: Refit) -> bool:
    """Whether refit ``a`` of a model is better than refit ``b`` of the same model from another start: it
    converged where ``b`` did not, or both did (or neither) and its training loss is lower."""
    if a.success != b.success:
        return a.success
    la, lb = a.train_loss, b.train_loss
    if not math.isfinite(la):
        return False
    return not math.isfinite(lb) or la < lb


def _better(a: Candidate, b: Candidate, min_improvement: float) -> bool:
    """Whether ``a`` should replace ``b``: a lower BIC, by more than ``min_improvement`` for each term
    ``a`` has beyond ``b``'s (as if each had been a forward step)."""
    if not a.refit.success:
        return False
    return a.refit.bic < b.refit.bic - min_improvement * max(0, a.n_terms - b.n_terms)


def _saturated(selector: _Selector, chosen: Candidate, terms, usable, settings: DiscoverSettings,
               say: Callable[[str], None]) -> list[tuple[str, int]]:
    """Terms for which the data ask for more than the selection could give: terms that use their
    whole library, and terms at ``max_terms`` for which one more library term (refitted) would
    still lower the BIC by more than ``min_improvement``."""
    out = []
    for t in terms:
        n = len(chosen.term_models[t].features)
        if n == 0:
            continue
        if n >= int(usable[t].sum()):
            out.append(t)
        elif n >= settings.max_terms:
            extra = [c for c in selector.forward_candidates(chosen, settings.propose, None, "check beyond max_terms",
                                                            only=t) if c.refit.success]
            best = min(extra, key=lambda c: c.refit.bic) if extra else None
            if best is not None and best.refit.bic < chosen.refit.bic - settings.min_improvement:
                say(f"{_label(t)} has max_terms = {settings.max_terms} terms and the data ask for more: "
                    f"{best.describe()} (BIC {best.refit.bic:.2f}, chosen {chosen.refit.bic:.2f})")
                out.append(t)
    return out


def _format(coefficients, names) -> str:
    from .symbolic import format_terms

    return format_terms(coefficients, names, 4)


def _states_using(problem: Problem, term: tuple[str, int]) -> list[str]:
    net, idx = term
    return [s for s, e in problem.equations.items()
            if term in e.network_refs or (idx == 0 and net in e.names)]


def _term_values(tm: TermModel, coefs: Mapping[str, float], theta: np.ndarray, library: Library) -> np.ndarray:
    index = {f.text: k for k, f in enumerate(library.features)}
    out = np.zeros(theta.shape[0])
    for name, f in zip(tm.names, tm.features, strict=True):
        out = out + coefs[name] * theta[:, index[f.text]]
    return out


def ude_start(problem: Problem, model, start: int = 0) -> tuple[dict, np.ndarray] | None:
    """The UDE's fitted values as a starting point of the refits: every parameter's value (a per-experiment one
    ``(B,)``) and the initial states ``(B, n)`` (the learned ones the UDE's, the others as the refits compute
    them); None when the model does not give them (a stand-in without its values)."""
    values = fitted_values(model, start)
    if not values:
        return None
    values = {n: v for n, v in values.items() if n in problem.parameters}
    system = OdeSystem(problem)
    initial = np.array(system.initial, dtype=float)
    learned = [j for j, s in enumerate(problem.states) if problem.initial[s].learn]
    if learned:
        try:
            dense = model.dense(2)
        except (AttributeError, TypeError):
            return None
        for b, (t, y) in enumerate(dense):
            for j in learned:  # the state at the refit's start time (a group's grid may start earlier)
                initial[b, j] = float(np.interp(system.t0[b], np.asarray(t, dtype=float), y[:, start, j]))
    return values, initial


def used_names(problem: Problem, equations: Mapping) -> set[str]:
    """The names a candidate with these equations (state -> Expression) reads: its equations', the observables',
    the initial formulas' and the noise formulas'. A parameter outside them has no effect on its fit: it is not
    refitted, counted or written (the mechanistic-only model of ``e*F*P`` has no ``e``)."""
    out: set[str] = set()
    for e in equations.values():  # as sympy reads them: e*(0)*P uses no e
        out |= {str(x) for x in e.to_sympy().free_symbols}
    for o in problem.observables.values():
        out |= set(o.expression.names)
    for spec in problem.initial.values():
        if spec.expression is not None:
            out |= set(spec.expression.names)
    for f in problem.noise_formulas.values():
        out |= set(f.names)
    return out


class _Selector:
    """Builds, refits and remembers candidate models (supports: term -> feature indices)."""

    def __init__(self, problem: Problem, objective: DataObjective, libraries: Mapping[tuple[str, int], Library],
                 thetas, samples: TermSamples, usable, ude: tuple[dict, np.ndarray] | None = None):
        self.problem = problem
        #: the UDE's fitted values and initial states (:func:`ude_start`): every refit also starts there
        self.ude = ude
        self.objective = objective
        self.libraries = libraries
        self.thetas = thetas
        self.samples = samples
        self.usable = usable
        self.candidates: list[Candidate] = []
        self._cache: dict[tuple, Candidate] = {}
        #: the keys this start's selection refitted or looked up (its proposals, for the stability vote)
        self.seen: set[tuple] = set()
        self._single = {n for n, spec in problem.networks.items() if spec.outputs == 1}
        taken = set(problem.states) | set(problem.parameters) | set(problem.constants) | set(problem.networks)
        self.names: dict[tuple[tuple[str, int], int], str] = {}
        for t, lib in libraries.items():
            for k, f in enumerate(lib.features):
                name = coefficient_name(t, f, taken)
                taken.add(name)
                self.names[(t, k)] = name

    @staticmethod
    def _key(supports) -> tuple:
        return tuple(sorted((t, tuple(sorted(s))) for t, s in supports.items()))

    def is_known(self, supports) -> bool:
        """Whether this start's selection has looked at a model with these supports already."""
        return self._key(supports) in self.seen

    def for_start(self, samples: TermSamples, thetas, usable) -> _Selector:
        """The selector of another start's network (its samples of the learned terms), sharing this one's refits:
        a structure two starts propose is refitted once."""
        import copy

        other = copy.copy(self)
        other.samples, other.thetas, other.usable = samples, thetas, usable
        other.seen = set()
        return other

    def supports_of(self, candidate: Candidate) -> dict:
        out = {}
        for t, tm in candidate.term_models.items():
            index = {f.text: k for k, f in enumerate(self.libraries[t].features)}
            out[t] = tuple(sorted(index[f.text] for f in tm.features))
        return out

    def term_models(self, supports) -> dict[tuple[str, int], TermModel]:
        out = {}
        for t, support in supports.items():
            ks = sorted(support)
            feats = tuple(self.libraries[t].features[k] for k in ks)
            out[t] = TermModel(t, feats, tuple(self.names[(t, k)] for k in ks))
        return out

    def system_of(self, candidate: Candidate) -> OdeSystem:
        from ..expressions import parse_expression

        return OdeSystem(self.problem, {s: parse_expression(text) for s, text in candidate.equations.items()},
                         candidate.parameters)

    def evaluate(self, supports, start: Mapping, source: str, base: Candidate | None = None) -> Candidate:
        """Refit the model with these supports, starting from ``base``'s values and ``start``
        (``(term, feature index) -> coefficient``)."""
        key = self._key(supports)
        self.seen.add(key)
        if key in self._cache:
            return self._cache[key]
        tms = self.term_models(supports)
        equations = {s: replace_terms(e, tms, self._single) for s, e in self.problem.equations.items()}
        used = used_names(self.problem, equations)
        # a parameter the candidate does not use (e in e*(0)*P) is held, not refitted or counted: its gradient is 0,
        # and a free one drifts anywhere (e = 452 in the mechanistic-only model of a predator-prey UDE)
        ude_values = self.ude[0] if self.ude is not None else {}
        params = {n: (p if n in used or p.fixed else dataclasses.replace(
            p, fixed=True, init=float(np.median(ude_values.get(n, p.init)))))
            for n, p in self.problem.parameters.items()}
        values = dict(base.refit.values) if base is not None else {}
        for t, support in supports.items():
            for k in support:
                name = self.names[(t, k)]
                init = start.get((t, k), values.get(name, 0.0))
                params[name] = Parameter(name=name, init=float(init), fixed=False, lower=None, upper=None,
                                         positive=False, description=f"coefficient of {self.libraries[t].features[k].text} "
                                                                     f"in {_label(t)}")
        system = OdeSystem(self.problem, equations, params)
        start_values = {n: v for n, v in values.items() if n in params}
        for t, support in supports.items():
            for k in support:
                start_values[self.names[(t, k)]] = params[self.names[(t, k)]].init
        initial = base.refit.initial if base is not None else None
        fitted = refit(system, self.objective, start_values, initial)
        other = self._ude_start(supports, params)
        if other is not None:
            # the refit also starts from the UDE's own values, each coefficient regressed on the network: the model
            # of a good candidate is close to the UDE there, while the base's values can be far from any good fit
            # (the mechanistic-only model's, fitted without the term). The better converged fit is kept.
            alternative = refit(system, self.objective, *other)
            if _better_refit(alternative, fitted):
                alternative.extra["start"] = "the UDE's values"
                fitted = alternative
            else:
                fitted.extra["start"] = "the base model's values" if base is not None else "the config's values"
        cand = Candidate(source=source, term_models=tms, equations={s: e.text for s, e in equations.items()},
                         parameters=params, refit=fitted)
        self._cache[key] = cand
        self.candidates.append(cand)
        return cand

    def _ude_start(self, supports, params: Mapping[str, Parameter]) -> tuple[dict, np.ndarray] | None:
        """The starting values from the UDE (:attr:`ude`) for a candidate with these supports and parameters:
        the UDE's values of the parameters, each term's coefficients the least-squares fit of its features to the
        network's samples; and the UDE's initial states. None without the UDE's values."""
        if self.ude is None:
            return None
        values, initial = self.ude
        out = {n: v for n, v in values.items() if n in params}
        for t, support in supports.items():
            ks = sorted(support)
            if not ks:
                continue
            theta = self.thetas[t][:, ks]
            target = self.samples.targets[t]
            ok = np.all(np.isfinite(theta), axis=1) & np.isfinite(target)
            if not ok.any():
                return None
            coefs = np.linalg.lstsq(theta[ok], target[ok], rcond=None)[0]
            for k, c in zip(ks, coefs, strict=True):
                out[self.names[(t, k)]] = float(c)
        return out, initial

    def forward_candidates(self, current: Candidate, propose: int, max_terms: int | None, source: str,
                           only: tuple[str, int] | None = None) -> list[Candidate]:
        """Each term's (or only term ``only``'s) ``propose`` best unused features (by how much of
        the network's residual each explains) added one at a time to ``current`` and refitted; and,
        with several terms, the ``propose`` features that explain most of all terms' residuals
        together, each added to every term at once: terms that only help together (x*y in both
        equations of a batch culture, where x*y in one equation alone makes the model blow up)."""
        supports = self.supports_of(current)
        trials = []
        joint: dict[int, float] = {}  # feature -> summed share of the residuals it explains
        for t, support in supports.items():
            if (only is not None and t != only) or (max_terms is not None and len(support) >= max_terms):
                continue
            theta = self.thetas[t]
            coefs = {n: current.refit.values[n] for n in current.term_models[t].names}
            residual = self.samples.targets[t] - _term_values(current.term_models[t], coefs, theta, self.libraries[t])
            scores = []
            for k in range(theta.shape[1]):
                if k in support or not self.usable[t][k]:
                    continue
                col = theta[:, k]
                norm = float(col @ col)
                score = abs(float(col @ residual)) / np.sqrt(norm)
                scores.append((score, k, float(col @ residual) / norm))
                joint[k] = joint.get(k, 0.0) + score / max(float(np.linalg.norm(residual)), 1e-300)
            scores.sort(reverse=True)
            for _, k, c0 in scores[:propose]:  # (evaluate returns a model already refitted from its cache)
                new = {**supports, t: tuple(sorted((*support, k)))}
                trials.append(self.evaluate(new, {(t, k): c0}, source, base=current))
        if only is None and len(supports) > 1:
            for k in sorted(joint, key=lambda k: joint[k], reverse=True)[:propose]:
                new = {t: (tuple(sorted((*sup, k))) if self._can_add(t, sup, k, max_terms) else sup)
                       for t, sup in supports.items()}
                if sum(new[t] != supports[t] for t in supports) < 2:
                    continue  # one term only: a single-term proposal above
                trials.append(self.evaluate(new, {}, f"{source} (together)", base=current))
        return trials

    def _can_add(self, term, support, k: int, max_terms: int | None) -> bool:
        return (k not in support and bool(self.usable[term][k])
                and (max_terms is None or len(support) < max_terms))


# -- scores and verdict ------------------------------------------------------------------------

def _ude_scores(problem: Problem, objective: DataObjective, metrics: Mapping, predictions) -> dict:
    counts = metrics.get("n_parameters") or {}
    fitted = (int(counts["total"]) - int(counts.get("noise", 0))) if "total" in counts else None
    out = {"train_loss": metrics.get("loss"), "validation_loss": metrics.get("validation_loss"),
           "train_mse": metrics.get("train_mse"), "validation_mse": metrics.get("validation_mse"),
           "runs_z": None, "runs_p": None, "fitted_values": fitted}
    if predictions is not None:
        sequences = []
        for e in problem.dataset.experiments:
            rows = predictions[(predictions["experiment"].astype(str) == str(e.name)) & (predictions["split"] == "train")]
            rows = rows.sort_values("time")
            for j, o in enumerate(objective.names):  # every observable (a state observed directly by its name)
                obs = rows[f"{o}_observed"].to_numpy(dtype=float)
                pred = rows[f"{o}_predicted"].to_numpy(dtype=float)
                ok = np.isfinite(obs)
                if ok.any():
                    sequences.append(objective.transform(pred[ok], j) - objective.transform(obs[ok], j))
        if sequences:
            out["runs_z"], out["runs_p"] = runs_test(sequences)
    return out


def judge(chosen: Candidate, mechanistic: Candidate, ude: Mapping, extrapolation: Extrapolation,
          settings: DiscoverSettings, terms: Sequence[TermReport] = (), evidence: Mapping | None = None
          ) -> tuple[str, list[str]]:
    """The verdict on a recovered model and the sentences that explain it (the first is the headline).

    ``failed``: a solve failed, or the model leaves the bound before the horizon. ``none``: the
    best model has no library term. ``worse``: the training loss is more than ``worse_ratio``
    times the UDE's, and the UDE's lower loss is real: with a validation window the UDE forecasts it
    better too; without one, when the UDE's training loss is below the (trusted) noise level, the UDE fits
    the noise (overfitting), and the recovered model is compared with the noise level instead.
    ``approximation``: the selection gave some term every library term it could and still wanted
    more (the library lacks the term's form), or the training residuals are systematic (runs test
    p < ``structure_p``) while the UDE's are not. ``recovered``: none of these.

    ``evidence`` (from :func:`discover`): ``noise_level`` (``loss``, ``trusted``, ``how``), ``cross_validation``
    (``recovered``, ``mechanistic only``, ``blocks``), ``ude_fitted``, ``n_train``.
    """
    evidence = evidence or {}
    r = chosen.refit
    ude_train, ude_val = ude.get("train_loss"), ude.get("validation_loss")
    constants = evidence.get("constants") or {}
    c_train, c_val = constants.get("train", 0.0), constants.get("validation", 0.0)
    ratio = _times(r.train_loss, ude_train, c_train) if ude_train is not None else None
    val_ratio = (_times(r.validation_loss, ude_val, c_val)
                 if (ude_val is not None and r.validation_loss is not None) else None)
    mech = mechanistic.refit
    scores = (f"training loss {r.train_loss:.4g} (UDE {_g(ude_train)}, mechanistic only "
              f"{mech.train_loss:.4g})")
    if r.validation_loss is not None:
        scores += f", validation loss {r.validation_loss:.4g} (UDE {_g(ude_val)}, mechanistic only " \
                  f"{_g(mech.validation_loss)})"
    details = [f"Scores of the recovered model: {scores}."]
    if constants.get("likelihood"):
        details.append(f"Losses are NLLs per observation; 'times' compares their excess over the data's smallest NLL "
                       f"per observation ({c_train:.4g} for the training data): the deviance ratio, which for normal "
                       "noise is the ratio of the squared errors.")
    if val_ratio is not None:
        assert ude_val is not None and r.validation_loss is not None  # val_ratio is computed from them
        details.append(_validation_sentence(r.validation_loss, ude_val, mech.validation_loss))
    cv = evidence.get("cross_validation")
    if cv and cv.get("recovered") is not None:
        details.append(_cv_sentence(cv))
    noise = evidence.get("noise_level") or {}
    level = noise.get("loss")
    above = level is not None and level > c_train  # a noise level with an excess to compare against
    overfit = (val_ratio is None and noise.get("trusted", False) and above
               and ude_train is not None and ude_train < noise.get("below", -math.inf))
    if overfit:
        assert ude_train is not None and level is not None  # both are tested in overfit
        details.append(_overfit_sentence(ude_train, r.train_loss, evidence))
        ratio = _times(r.train_loss, level, c_train)  # the reference is the noise level, not a network that fits the noise
    elif above:
        assert level is not None  # tested in above
        details.append(f"Noise level: {level:.4g} in loss units ({noise['how']}); the recovered model's training "
                       f"loss is {_times(r.train_loss, level, c_train):.3g} times it.")
    degenerate = [t.degenerate for t in terms if t.degenerate]
    errors = [f"{t.label} = {t.expression()} reproduces the network with R² {t.fidelity.r2:.4g}, max error "
              f"{t.fidelity.max_error:.3g} ({100 * t.fidelity.relative_rmse:.1f} % RMS of the term's spread)."
              for t in terms if t.model.features and not t.degenerate]
    notes = [*degenerate, *details]
    if not r.success:
        return "failed", [f"the recovered model could not be fitted to the data: {r.message}. Do not use it.", *notes]
    if not extrapolation.bounded:
        return "failed", [f"the recovered model diverges when simulated to t = {extrapolation.horizon:g}: "
                          f"{extrapolation.message}. Do not use it beyond the data.", *notes]
    worse = ratio is not None and ratio > settings.worse_ratio and (val_ratio is None or val_ratio > 1)
    if chosen.n_terms == 0 and not worse:
        return "none", [f"no library term lowers the BIC by more than {settings.min_improvement:g}: the data are "
                        "explained by the mechanistic model alone as well as by any recovered term.", *notes]
    saturated = [t for t in terms if t.saturated]
    if worse:
        assert ratio is not None  # worse tests it
        against = "the noise level (the UDE fits below it)" if overfit else "the UDE"
        if chosen.n_terms == 0:
            # no library term lowers the BIC, yet the mechanism alone is far from the UDE's fit: the network learned
            # something the library cannot express (or no refit reached it); that is not "the mechanism explains it"
            return "worse", [
                f"no library term lowers the BIC by more than {settings.min_improvement:g}, and the mechanistic model "
                f"alone fits the training data {ratio:.3g} times worse than {against} (more than "
                f"{settings.worse_ratio:g}): the learned term is real, and no candidate reaches the UDE's fit; the "
                "library most likely lacks its form: try candidate functions of that form (--function).",
                *notes, *errors]
        lacking = ""
        if saturated:
            lacking = (f" The data ask for more library terms in {_term_counts(saturated)} than the selection may give (max_terms = "
                       f"{settings.max_terms}): the library most likely lacks the learned term's form, and this is "
                       "a poor approximation; try candidate functions of that form (--function) or a larger "
                       "--max-terms.")
        unidentified = ", ".join(f"{c['term']} {c['feature']}" for c in (evidence.get("dropped") or []))
        if unidentified and not saturated:
            lacking += (" Terms that lower the BIC were dropped because their coefficients cannot be told apart "
                        f"({unidentified}: intervals that include 0): "
                        "the library most likely lacks the learned term's form; try candidate functions of that form "
                        "(--function).")
        return "worse", [f"the recovered model fits the training data {ratio:.2f} times worse than {against} "
                         f"(more than {settings.worse_ratio:g}): it does not replace the network.{lacking}",
                         *notes, *errors]
    if saturated:
        return "approximation", [
            f"the data ask for more library terms in {_term_counts(saturated)} than the selection may give (max_terms = "
            f"{settings.max_terms}, or the whole library): the library most likely lacks the learned term's form, "
            "and the recovered equation is an approximation, not the law; try other candidate functions.",
            *errors, *notes]
    ude_p = ude.get("runs_p")
    runs_p = r.extra.get("runs_p_calibrated", r.runs_p)
    calibrated = " calibrated for the fit" if "runs_p_calibrated" in r.extra else ""
    if runs_p < settings.structure_p and (ude_p is None or ude_p >= settings.structure_p):
        return "approximation", [
            f"the recovered model leaves systematic residuals (runs test p = {runs_p:.2g}{calibrated}) where the UDE does "
            f"not{'' if ude_p is None else f' (p = {ude_p:.2g})'}: the library does not contain the learned "
            "terms' form, and the equations are an approximation.", *errors, *notes]
    bounded = f"stays bounded to t = {extrapolation.horizon:g}"
    if overfit:
        assert ratio is not None  # the recovered loss over the noise level
        fit = (f"fits the data {'at' if ratio <= 1.5 else f'{ratio:.2f} times'} the noise level (its training loss "
               f"is {ratio:.3g} times it; the UDE fits below it: overfitting)")
    elif ratio is None or ratio <= 1.5:
        fit = "fits the data as well as the UDE" if ratio is None or ratio >= 1 / 1.5 else \
            f"fits the training data better than the UDE (its loss is {ratio:.2f} times the UDE's)"
    else:
        fit = f"fits the training data {ratio:.2f} times worse than the UDE (which has far more parameters)"
    return "recovered", [f"the recovered model {fit}, leaves residuals that look like noise (runs test "
                         f"p = {runs_p:.2g}{calibrated}) and {bounded}.", *notes, *errors]


def _compare(a: float, b: float) -> str:
    """``"lower than"``, ``"higher than"`` or ``"equal to"`` (within 0.5 %, the precision the sentences print)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return "lower than" if a < b else ("higher than" if a > b else "equal to")
    if abs(a - b) <= 0.005 * max(abs(a), abs(b)):
        return "equal to"
    return "lower than" if a < b else "higher than"


def _validation_sentence(rec: float, ude: float, mech: float | None) -> str:
    """Who forecasts the validation window best, said from the numbers it prints."""
    text = f"On the validation window the recovered model's loss {rec:.4g} is {_compare(rec, ude)} the UDE's {ude:.4g}"
    text += {"lower than": ": it forecasts the held-out data better.",
             "higher than": ": the UDE forecasts the held-out data better.",
             "equal to": ": they forecast the held-out data equally well."}[_compare(rec, ude)]
    if mech is not None and math.isfinite(mech) and _compare(mech, min(rec, ude)) == "lower than":
        text += (f" The mechanistic-only model forecasts them better than both (validation loss {mech:.4g}): the "
                 "learned terms do not help beyond the training data.")
    return text


def _cv_sentence(cv: Mapping) -> str:
    rec, mech = cv["recovered"], cv.get("mechanistic only")
    text = (f"Held out by time blocks ({cv['blocks']} blocks of consecutive observation times, each predicted by the "
            f"model refitted to the others, one Gauss-Newton step): the recovered model's loss {rec:.4g}")
    if mech is not None:
        text += f", the mechanistic-only model's {mech:.4g}"
        if _compare(mech, rec) == "lower than":
            text += ": the mechanistic-only model predicts the held-out blocks better"
    return text + " (the UDE is not cross-validated: that would refit its network)."


def _times(a: float, b: float, constant: float = 0.0) -> float | None:
    """How many times ``a`` is ``b``: their ratio for squared-error losses; for NLLs per observation, the ratio of
    their excesses over the data's smallest NLL per observation (``constant``): the deviance ratio, which for normal
    noise with sigma held at the fit's estimate (as the refits hold it) is the ratio of the squared errors. A ratio
    of NLLs themselves means nothing (they can be negative). None when ``b`` is not above ``constant``."""
    d = b - constant
    return (a - constant) / d if d > 0 else None


def _overfit_sentence(ude_train: float, rec_train: float, evidence: Mapping) -> str:
    noise = evidence["noise_level"]
    level, p, n = noise["loss"], evidence.get("ude_fitted"), evidence.get("n_train")
    c = (evidence.get("constants") or {}).get("train", 0.0)
    values = f"with {p} fitted values for {n} observations, " if p is not None else ""
    return (f"The UDE's training loss {ude_train:.4g} is below the noise level {level:.4g} ({_times(ude_train, level, c):.2g} "
            f"times it; {noise['how']}), and below {noise['below']:.4g}, where chance would put a correct model "
            f"only once in 20 times: {values}it fits the noise (overfitting). The recovered model is compared "
            f"with the noise level instead of the UDE: its training loss {rec_train:.4g} is {_times(rec_train, level, c):.3g} "
            "times it.")


def _term_counts(terms: list[TermReport]) -> str:
    """``"U[0] (4 terms), U[1] (4 terms)"``."""
    return ", ".join(f"{t.label} ({len(t.model.features)} terms)" for t in terms)


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


# -- stable selection -------------------------------------------------------------------------------

@dataclass
class StableSelection:
    """What the resampling and the backward check decided (``discovery.json`` ``selection``).

    Attributes:
        resamples: halves of the observation times drawn (complementary pairs).
        won: the share of halves won by the candidate the resampling chose (None without resampling).
        frequency: ``(term label, feature)`` -> the share of halves whose best candidate has it.
        checks: per term of the final model: its interval, the criterion's gain from keeping it, kept or not, why.
        intervals: the final model's coefficients' intervals, by name.
        ranking: the candidates by criterion on all the data (best first): model, BIC, share of halves won.
        dropped: the checks of the terms the backward check dropped, in order.
    """

    resamples: int
    won: float | None
    frequency: dict[tuple[str, str], float]
    checks: list[dict]
    intervals: dict
    ranking: list[dict]
    dropped: list[dict] = field(default_factory=list)
    #: the UDE starts in the vote: ``note`` (which joined and why), ``members`` (start, its network's proposal)
    starts: dict = field(default_factory=dict)


#: Candidates not nested in the chosen model take part in the stability vote only within this BIC of the best.
VOTE_BIC = 10.0


def _features_of(candidate: Candidate) -> list[tuple[tuple[str, int], str]]:
    return [(t, f.text) for t, tm in candidate.term_models.items() for f in tm.features]


def _stable_selection(selector: _Selector, chosen: Candidate, settings: DiscoverSettings,
                      say: Callable[[str], None], members: Sequence[tuple[int, _Selector, Candidate]] = ()
                      ) -> tuple[Candidate, StableSelection]:
    """Keep the terms the data support, not the noise: among the chosen model, every candidate refitted so
    far that is nested in it (its sub-models with one term dropped included) and the others within ``VOTE_BIC``
    of the best BIC, the one that wins the most halves of the observation times (complementary pairs,
    each half's candidates refitted by one Gauss-Newton step and ranked by BIC + ``min_improvement`` per
    term); then a backward check of each of its terms: its profile interval at the Bonferroni-adjusted level must
    exclude zero (:func:`~ude_cli.discovery.stability.zero_test`: the profile at 0 is the model refitted without
    the term) and keeping it must lower the information criterion on all the data by more than
    ``min_improvement``; the kept model's profile intervals are then computed
    (:func:`~ude_cli.discovery.stability.profile_interval`). Every decision
    is logged.

    Why the structure that wins most halves and not each term's selection frequency: library terms are
    often near substitutes along one trajectory (x*y and y**2 on a predator-prey cycle), and split the
    halves between them; a threshold on each term's frequency would then drop both."""
    from .stability import (
        local_fit,
        profile_interval,
        robust_adjustment,
        stability_selection,
        wald_intervals,
        zero_test,
    )

    objective = selector.objective
    likelihood = bool(objective.likelihood)
    members = list(members) or [(0, selector, chosen)]
    for _, sel_k, chosen_k in members:
        _submodels(sel_k, chosen_k)  # the backward check and the resampling compare with them
    # the vote is among the chosen model, the models nested in it, and the others the whole data do not reject
    # (BIC within VOTE_BIC of the best: less than "very strong" evidence against them, Kass & Raftery 1995):
    # resampling may take terms out or pick among near-equals, it does not swap in a structure the whole data
    # reject (with a missing form many rich models split the halves)
    chosen_supports = [selector.supports_of(c) for _, _, c in members]
    finite = [c.refit.bic for c in selector._cache.values() if c.refit.success and np.isfinite(c.refit.bic)]
    best_bic = min(finite) if finite else float("inf")
    pool: dict[tuple, Candidate] = {}
    fits = {}
    for key, cand in selector._cache.items():
        support = selector.supports_of(cand)
        nested = any(all(set(support[t]) <= set(cs[t]) for t in cs) for cs in chosen_supports)
        if not nested and not cand.refit.bic <= best_bic + VOTE_BIC:
            continue
        fit = local_fit(cand.refit)
        if fit is not None and np.isfinite(cand.refit.bic):
            pool[key], fits[key] = cand, fit
    groups, constants = objective.cell_groups("train"), objective.cell_constants("train")
    if not fits or len(np.unique(groups)) < 4:
        intervals = wald_intervals(chosen.refit, [n for tm in chosen.term_models.values() for n in tm.names],
                                   likelihood, settings.level)
        return chosen, StableSelection(0, None, {}, [], intervals, [], [])
    stab = stability_selection(fits, {k: c.n_terms for k, c in pool.items()},
                               {k: _features_of(c) for k, c in pool.items()}, groups, constants, likelihood,
                               settings.min_improvement, settings.resamples,
                               members=[sel_k.seen for _, sel_k, _ in members] if len(members) > 1 else None)
    frequency = {(_label(t), f): v for (t, f), v in stab.frequency.items()}
    if len(members) > 1:
        say(f"stability selection: {stab.members} members (UDE starts {', '.join(str(k) for k, _, _ in members)}), "
            f"each voting on {stab.resamples} halves among the candidates its own network proposed: a share is of "
            f"{stab.members * stab.resamples} votes")
    for f in sorted(stab.frequency, key=lambda f: (-stab.frequency[f], _label(f[0]), f[1])):
        say(f"stability selection: {_label(f[0])} {f[1]} is in the best candidate of "
            f"{100 * stab.frequency[f]:.0f} % of {stab.resamples} halves of the observation times"
            + (f" times {stab.members} UDE starts" if stab.members > 1 else ""))
    top = sorted(pool, key=lambda k: (-stab.wins[k], pool[k].refit.bic))
    say("stability selection: the candidates that win most halves: "
        + "; ".join(f"{pool[k].describe()} ({100 * stab.wins[k]:.0f} %)" for k in top[:3] if stab.wins[k] > 0))
    mode = top[0]
    current = pool[mode]
    chosen_key = selector._key(selector.supports_of(chosen))
    if mode != chosen_key:
        say(f"stability selection: {current.describe()} (BIC {current.refit.bic:.2f}) wins the most halves "
            f"({100 * stab.wins[mode]:.0f} %) and replaces {chosen.describe()} (BIC {chosen.refit.bic:.2f}, "
            f"{100 * stab.wins.get(chosen_key, 0.0):.0f} %): the whole data prefer the latter, most halves of them "
            "the former")
    else:
        say(f"stability selection: the chosen model wins the most halves ({100 * stab.wins[mode]:.0f} %)")
    # the keep test is adjusted for the number of library terms the selection could have taken (Bonferroni):
    # the forward selection picks the best of them, so one at 95 % would let a spurious term through every
    # 1 / (0.05 m) discoveries
    m = max(1, sum(int(u.sum()) for u in selector.usable.values()))
    keep_level = 1.0 - (1.0 - settings.level) / m
    adjusted = f"{100 * keep_level:.4g} % ({100 * settings.level:g} % adjusted for the {m} library terms the selection could take)"
    checks: list[dict] = []
    dropped: list[dict] = []
    while True:
        names = [n for tm in current.term_models.values() for n in tm.names]
        wald = wald_intervals(current.refit, names, likelihood, settings.level)
        factor = robust_adjustment(current.refit, names, likelihood)
        thr_keep = _threshold(current.refit, keep_level, likelihood)
        failing = []
        checks = []
        subs = {}
        zeros: dict[str, float] = {}  # the statistic at 0 of each coefficient (the profile's, where that is lower)
        for t, tm in current.term_models.items():
            for k_name, feat in zip(tm.names, tm.features, strict=True):
                sup = selector.supports_of(current)
                k = next(i for i, f in enumerate(selector.libraries[t].features) if f.text == feat.text)
                without = {**sup, t: tuple(i for i in sup[t] if i != k)}
                sub = selector.evaluate(without, {}, "backward check", base=current)
                subs[k_name] = sub
                # the profile at 0 is the model refitted without the term: 0 is in the profile interval exactly
                # when that statistic is below the interval's threshold (no more refits than the BIC gain needs).
                # A refit without the term that failed or stopped early proves nothing: where it would keep the term,
                # the term is also held at 0 from the optimum (the profile's own refit), and the better is the
                # model without it (:func:`_settle_without`)
                value = float(current.refit.values[k_name])
                statistic = _lr_statistic(sub.refit, current.refit, likelihood)
                note = ""
                if not factor[k_name] * statistic <= thr_keep:
                    statistic, note = _settle_without(selector, current, sub, k_name, likelihood, statistic)
                zeros[k_name] = statistic
                gain = (sub.refit.bic - current.refit.bic) if sub.refit.success else float("inf")
                zero = zero_test(k_name, value, wald[k_name].se, keep_level, thr_keep, factor[k_name], statistic)
                if not math.isfinite(statistic):
                    # no refit without the term succeeds: its keep test is the profile walked from the optimum, and
                    # the BIC gain is not known (never "more than any finite amount" on a failed refit's word)
                    walked = profile_interval(k_name, value, wald[k_name].se,
                                              _profile_statistic(selector, current, k_name, likelihood),
                                              [(keep_level, thr_keep)], factor[k_name])[keep_level]
                    zero = walked
                    desc = ("no refit without it succeeds (" + (sub.refit.message or "it fails") + "): decided by "
                            f"its profile walked from the optimum, {walked.text()}")
                else:
                    desc = _zero_text(zero) + note
                reasons = []
                if not zero.excludes_zero:
                    reasons.append(f"its profile interval at {adjusted} includes 0: {desc}")
                if math.isfinite(gain) and not gain > settings.min_improvement:
                    reasons.append(f"keeping it lowers the BIC by {gain:.2f}, not by more than "
                                   f"discover.min_improvement = {settings.min_improvement:g}")
                if reasons and not sub.refit.success:
                    reasons.append("but without it the model cannot be fitted to the data: kept, not supported")
                checks.append({"term": _label(t), "feature": feat.text, "coefficient": k_name,
                               "wald_interval": wald[k_name].as_dict(), "zero_test": zero.as_dict(),
                               "bic_gain": _finite_or_none(gain), "kept": not reasons or not sub.refit.success,
                               "why": "; ".join(reasons) if reasons else
                               (f"its profile interval at {adjusted}<ends> excludes 0 ({desc}) and " + (
                                   "the model cannot be fitted without it (no BIC to compare)" if not np.isfinite(gain)
                                   else f"keeping it lowers the BIC by {gain:.2f}"))})
                if reasons and sub.refit.success:
                    failing.append((gain, sub, checks[-1]))
        if not failing:
            break
        gain, sub, check = min(failing, key=lambda item: item[0])
        say(f"check: {check['term']} {check['feature']} dropped: {check['why']}")
        dropped.append(check)
        current = sub
    # the kept model's profile intervals, at the level asked for and at the adjusted level of the keep test
    intervals = {}
    thr_level = _threshold(current.refit, settings.level, likelihood)
    for c in checks:
        name = c["coefficient"]
        profiles = profile_interval(name, float(current.refit.values[name]), wald[name].se,
                                    _profile_statistic(selector, current, name, likelihood),
                                    [(settings.level, thr_level), (keep_level, thr_keep)], factor[name],
                                    known=[(0.0, zeros[name])])
        intervals[name] = profiles[settings.level]
        c["interval"], c["adjusted_interval"] = profiles[settings.level].as_dict(), profiles[keep_level].as_dict()
        wide = profiles[keep_level]
        if not wide.excludes_zero:  # a profile that is not monotone: the ends say what the value at 0 did not
            c["why"] += f"; note: the profile interval {wide.text()} at {adjusted} reaches 0 (a profile that is not monotone)"
        c["why"] = c["why"].replace("<ends>", f", {wide.text()},")
        say(f"check: {c['term']} {c['feature']} kept: {c['why']}")
    ranking = []
    ranked = [k for k, c in selector._cache.items() if c.refit.success and np.isfinite(c.refit.bic)]
    for key in sorted(ranked, key=lambda k: selector._cache[k].refit.bic)[:8]:
        cand = selector._cache[key]
        ranking.append({"model": cand.describe(), "source": cand.source, "n_terms": cand.n_terms,
                        "bic": float(cand.refit.bic), "train_loss": cand.refit.train_loss,
                        "halves_won": stab.wins.get(key)})  # None: not in the vote
    starts = {"members": [{"start": k, "proposed": c.describe(), "bic": _finite_or_none(c.refit.bic)}
                          for k, _, c in members]}
    return current, StableSelection(stab.resamples, stab.wins[mode], frequency, checks, intervals, ranking, dropped,
                                    starts)


def _settle_without(selector: _Selector, current: Candidate, sub: Candidate, name: str, likelihood: bool,
                    statistic: float) -> tuple[float, str]:
    """The profile at 0 of ``current``'s coefficient ``name`` when the model refitted without it (``sub``, whose
    statistic is ``statistic``) would keep the term: ``current`` refitted with the coefficient held at 0 from its
    optimum (the profile's own continuation) as well, and where that fits better, ``sub`` refitted again from there
    (in place: the cached model without the term is the better fit from now on). The profile at 0 is the lower of
    the two: a refit that failed or stopped at a worse optimum only bounds it from above (a spurious term kept on a
    statistic of 1.4e4 at 0 whose profile, walked from the optimum, reached 0 well inside its interval). Returns the
    statistic and a note for the check's sentence (empty when the refit without the term stands)."""
    warm: dict = {}
    held = _profile_statistic(selector, current, name, likelihood, warm)(0.0)
    if not (math.isfinite(held) and held < statistic) or 0.0 not in warm:
        return statistic, ""
    values, initial = warm[0.0]
    params = sub.parameters
    again = refit(selector.system_of(sub), selector.objective,
                  {k: v for k, v in values.items() if k in params and not params[k].fixed and k != name}, initial)
    before = "failed" if not sub.refit.success else f"stopped at {statistic:.4g}"
    if _better_refit(again, sub.refit):
        again.extra["start"] = f"the optimum with {name} held at 0 (the refit without it {before})"
        sub.refit = again
        statistic = _lr_statistic(again, current.refit, likelihood)
    statistic = min(statistic, held)
    return statistic, (f"; the refit without it {before}, the profile's refit from the optimum with it held at 0 "
                       f"reaches {statistic:.4g} (before any robust factor)")


def _threshold(fit: Refit, level: float, likelihood: bool) -> float:
    """The profile threshold of one coefficient of ``fit`` at ``level``
    (:func:`~ude_cli.identifiability.function.lr_threshold`): F-calibrated for a squared-error loss, whose noise
    scale is estimated from the residuals; chi-square(1) with a noise model."""
    from ..identifiability.function import lr_threshold

    n = max(fit.n_train, 1)
    return lr_threshold(level, n, max(n - fit.n_free, 1), not likelihood)[0]


def _lr_statistic(sub: Refit, fit: Refit, likelihood: bool) -> float:
    """``2 (L_sub - L_fit)``: the likelihood-ratio statistic of ``sub`` (the same model with values held) against
    ``fit`` (``L = n/2 log RSS`` for a squared-error loss, the noise scale profiled out; the NLL with a noise model,
    ``rss/2`` of the deviance residuals plus a constant); ``inf`` when ``sub`` could not be fitted."""
    if not sub.success or sub.residuals is None or fit.residuals is None or not np.all(np.isfinite(sub.residuals)):
        return float("inf")
    rs, r0 = float(sub.residuals @ sub.residuals), float(fit.residuals @ fit.residuals)
    if likelihood:
        return rs - r0
    return fit.n_train * math.log(max(rs, 1e-300) / max(r0, 1e-300))


def _profile_statistic(selector: _Selector, candidate: Candidate, name: str, likelihood: bool,
                       warm: dict | None = None) -> Callable[[float], float]:
    """``c -> 2 (PL(c) - L)`` of ``candidate``'s coefficient ``name``: the candidate refitted (:func:`refit`, every
    other fitted value free) with ``name`` held at ``c``, warm-started from the profile's nearest point (``warm``,
    filled: ``c -> (values, initial states)`` of every refit that succeeded)."""
    from ..expressions import parse_expression

    equations = {s: parse_expression(text) for s, text in candidate.equations.items()}
    warm = {} if warm is None else warm
    warm[float(candidate.refit.values[name])] = (dict(candidate.refit.values), candidate.refit.initial)

    def statistic(c: float) -> float:
        params = {**candidate.parameters, name: dataclasses.replace(candidate.parameters[name], init=float(c), fixed=True)}
        near = min(warm, key=lambda v: abs(v - c))
        values, initial = warm[near]
        fit = refit(OdeSystem(selector.problem, equations, params), selector.objective,
                    {k: v for k, v in values.items() if k in params and k != name} | {name: float(c)}, initial)
        if fit.success:
            warm[float(c)] = (dict(fit.values), fit.initial)
        return _lr_statistic(fit, candidate.refit, likelihood)

    return statistic


def _zero_text(zero) -> str:
    """``"the profile at 0 (the model refitted without it) is 161 times a = 0.85, threshold 8.9"``."""
    at = zero.at_zero
    value = "infinite: the refit without it fails" if at is None or not math.isfinite(at) else f"{at:.4g}"
    scaled = "" if zero.adjustment == 1 else f", scaled by the robust factor {zero.adjustment:.3g}"
    return f"the statistic at 0, the model refitted without it{scaled}, is {value}; threshold {zero.threshold:.4g}"


def _calibrate_runs(objective: DataObjective, chosen: Candidate, say: Callable[[str], None],
                    system: OdeSystem | None = None) -> None:
    """The chosen model's runs test, calibrated for the fit (:func:`~ude_cli.discovery.stability.calibrated_runs_p`,
    its noise's scale a power of ``system``'s fitted values), into ``chosen.refit.extra["runs_p_calibrated"]``: the
    verdict reads it."""
    from .refit import predict_all
    from .stability import calibrated_runs_p, local_fit

    fit = local_fit(chosen.refit)
    if fit is None:
        return
    fitted = None
    if system is not None:
        preds, failure = predict_all(system, chosen.refit.values, chosen.refit.initial)
        if not failure:
            observed = objective.observed(preds, chosen.refit.values)  # the observables, as the residuals' cells
            fitted = np.concatenate([o[objective.mask(b, "train")] for b, o in enumerate(observed)])
    p = calibrated_runs_p(fit, objective.cell_groups("train"), objective.cell_states("train"),
                          objective.cell_experiments("train"), fitted=fitted)
    chosen.refit.extra["runs_p_calibrated"] = p
    say(f"runs test of the recovered model's residuals: p = {chosen.refit.runs_p:.2g} against independent signs, "
        f"{p:.2g} calibrated for the fit (residuals of a fitted model change sign less often than noise does; the "
        "null drawn from noise whose variance is a power of the fitted values, projected off the refit's Jacobian)")


def _submodels(selector: _Selector, candidate: Candidate) -> list[Candidate]:
    """``candidate`` with each of its library terms dropped in turn, refitted."""
    out = []
    sup = selector.supports_of(candidate)
    for t, ks in sup.items():
        for k in ks:
            out.append(selector.evaluate({**sup, t: tuple(i for i in ks if i != k)}, {}, "backward check",
                                         base=candidate))
    return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# -- the evidence against the noise ---------------------------------------------------------------

#: Time blocks of the cross-validation when there is no validation window.
CV_BLOCKS = 5


def _evidence(objective: DataObjective, chosen: Candidate, mechanistic: Candidate, ude: Mapping,
              settings: DiscoverSettings, saturated: bool) -> dict:
    """What the verdict weighs besides the training losses: the noise level, and a cross-validation over
    time blocks (when there is no validation window).

    The noise level is estimated from the recovered model's residuals (``RSS/(n - k)``, the unbiased
    estimate of the variance of its noise model; with a noise model, that variance's NLL per observation),
    not from the UDE, which can fit the noise. It is trusted (``trusted``) only when those residuals look like
    noise (runs test p >= ``structure_p``) and no term asks for more library terms than it may have: a model
    missing a term's form leaves more than noise."""
    from .stability import CV_METHOD, block_cross_validation, local_fit

    likelihood = bool(objective.likelihood)
    r = chosen.refit
    n, k = r.n_train, r.n_free
    out: dict = {"n_train": n, "ude_fitted": ude.get("fitted_values")}
    # with a noise model, each split's smallest NLL per observation (the saturated model's): losses compare by their
    # excess over it (:func:`_times`)
    out["constants"] = {"likelihood": likelihood, **{
        split: (float(objective.cell_constants(split).sum()) / objective.count(split)
                if likelihood and objective.count(split) else 0.0) for split in ("train", "validation")}}
    level = None
    if r.residuals is not None and n > k:
        rss = float(r.residuals @ r.residuals)
        if likelihood:
            level = float((0.5 * rss * n / (n - k) + objective.cell_constants("train").sum()) / n)
        else:
            level = rss / (n - k)
    if level is not None:
        from scipy import stats

        trusted = r.extra.get("runs_p_calibrated", r.runs_p) >= settings.structure_p and not saturated
        # a loss below this is below the noise level beyond chance: the 5 % quantile of chi2(n - k) / (n - k)
        # (with a noise model, of the excess over each cell's smallest NLL)
        q = float(stats.chi2.ppf(0.05, n - k) / (n - k))
        constant = float(objective.cell_constants("train").sum()) / n if likelihood else 0.0
        below = constant + q * (level - constant)
        out["noise_level"] = {
            "loss": level, "trusted": trusted, "below": below,
            "how": (f"from the recovered model's residuals, RSS/(n - k) with n = {n} observations and k = "
                    f"{k} fitted values" + (", as an NLL per observation of the noise model" if likelihood else "")
                    + ("" if trusted else "; not used: those residuals are systematic or a term asks for more "
                       "library terms"))}
    else:
        out["noise_level"] = None
    if objective.count("validation") == 0:
        groups, constants = objective.cell_groups("train"), objective.cell_constants("train")
        cv: dict = {"blocks": CV_BLOCKS, "method": CV_METHOD}
        for name, cand in (("recovered", chosen), ("mechanistic only", mechanistic)):
            fit = local_fit(cand.refit)
            cv[name] = block_cross_validation(fit, groups, constants, likelihood, CV_BLOCKS) if fit else None
        out["cross_validation"] = cv
    return out


#: A learned term whose spread along the data is below this share of its mean is constant; one whose
#: largest value is below this share of its states' typical rate of change is zero.
DEGENERATE = 0.01


def degenerate_term(problem: Problem, label: str, values: np.ndarray, states: Sequence[str]) -> str | None:
    """The sentence for a learned term that is nearly constant or nearly zero along the visited states
    (None when it varies): no regression on it can say anything, and no R² or percentage of its spread
    means anything either.

    The scale of "nearly zero" is the typical rate of change of the states whose equations use it: each
    one's range in the data over the data's time span."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    mean, spread, largest = float(v.mean()), float(v.std()), float(np.max(np.abs(v)))
    rates = []
    for e in problem.dataset.experiments:
        span = float(np.ptp(e.t)) if len(e.t) > 1 else 0.0
        for s in states:
            if s in problem.dataset.observed and span > 0:
                col = e.values[:, problem.states.index(s)]
                col = col[np.isfinite(col)]
                if col.size > 1:
                    rates.append(float(np.ptp(col)) / span)
    rate = max(rates) if rates else None
    if rate is not None and rate > 0 and largest <= DEGENERATE * rate:
        return (f"{label} is nearly zero along the data (largest |{label}| {largest:.2g}, "
                f"{100 * largest / rate:.2g} % of the typical rate of change of "
                f"{', '.join(states)}): nothing to discover; the mechanistic model needs no correction there.")
    if spread <= DEGENERATE * abs(mean):
        return (f"{label} is constant ({mean:.2g} ± {spread:.1g}) along the data: nothing to discover; the "
                "correction is an offset.")
    return None
