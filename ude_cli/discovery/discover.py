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
    objective = DataObjective(problem, noise=(metrics.get("likelihood") or {}).get("noise"))
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

    selector = _Selector(problem, objective, libraries, thetas, samples, usable)
    mechanistic = selector.evaluate({t: () for t in terms}, {}, "mechanistic only")
    say(f"mechanistic only: train loss {mechanistic.refit.train_loss:.4g}, BIC {mechanistic.refit.bic:.2f}")
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

    chosen, stable = _stable_selection(selector, chosen, settings, say)
    _calibrate_runs(objective, chosen, say)
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
                     samples=samples, selection=stable, log=lines, evidence=evidence)


def _best_with_at_most(path: list[SparseFit], n: int) -> SparseFit | None:
    """The path's model of lowest BIC (against the network) with 1 to ``n`` terms, if any."""
    fits = [f for f in path if 0 < len(f.support) <= n]
    return min(fits, key=lambda f: f.bic) if fits else None


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


class _Selector:
    """Builds, refits and remembers candidate models (supports: term -> feature indices)."""

    def __init__(self, problem: Problem, objective: DataObjective, libraries: Mapping[tuple[str, int], Library],
                 thetas, samples: TermSamples, usable):
        self.problem = problem
        self.objective = objective
        self.libraries = libraries
        self.thetas = thetas
        self.samples = samples
        self.usable = usable
        self.candidates: list[Candidate] = []
        self._cache: dict[tuple, Candidate] = {}
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
        """Whether a model with these supports was refitted already."""
        return self._key(supports) in self._cache

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
        if key in self._cache:
            return self._cache[key]
        tms = self.term_models(supports)
        params = dict(self.problem.parameters)
        values = dict(base.refit.values) if base is not None else {}
        for t, support in supports.items():
            for k in support:
                name = self.names[(t, k)]
                init = start.get((t, k), values.get(name, 0.0))
                params[name] = Parameter(name=name, init=float(init), fixed=False, lower=None, upper=None,
                                         positive=False, description=f"coefficient of {self.libraries[t].features[k].text} "
                                                                     f"in {_label(t)}")
        equations = {s: replace_terms(e, tms, self._single) for s, e in self.problem.equations.items()}
        system = OdeSystem(self.problem, equations, params)
        start_values = {n: v for n, v in values.items() if n in params}
        for t, support in supports.items():
            for k in support:
                start_values[self.names[(t, k)]] = params[self.names[(t, k)]].init
        initial = base.refit.initial if base is not None else None
        fitted = refit(system, self.objective, start_values, initial)
        cand = Candidate(source=source, term_models=tms, equations={s: e.text for s, e in equations.items()},
                         parameters=params, refit=fitted)
        self._cache[key] = cand
        self.candidates.append(cand)
        return cand

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
    ratio = r.train_loss / ude_train if ude_train else None
    val_ratio = (r.validation_loss / ude_val) if (ude_val and r.validation_loss is not None) else None
    mech = mechanistic.refit
    scores = (f"training loss {r.train_loss:.4g} (UDE {_g(ude_train)}, mechanistic only "
              f"{mech.train_loss:.4g})")
    if r.validation_loss is not None:
        scores += f", validation loss {r.validation_loss:.4g} (UDE {_g(ude_val)}, mechanistic only " \
                  f"{_g(mech.validation_loss)})"
    details = [f"Scores of the recovered model: {scores}."]
    if val_ratio is not None:
        assert ude_val is not None and r.validation_loss is not None  # val_ratio is computed from them
        details.append(_validation_sentence(r.validation_loss, ude_val, mech.validation_loss))
    cv = evidence.get("cross_validation")
    if cv and cv.get("recovered") is not None:
        details.append(_cv_sentence(cv))
    noise = evidence.get("noise_level") or {}
    level = noise.get("loss")
    overfit = (val_ratio is None and noise.get("trusted", False) and level is not None and level > 0
               and ude_train is not None and ude_train < noise.get("below", 0.0))
    if overfit:
        assert ude_train is not None and level is not None  # both are tested in overfit
        details.append(_overfit_sentence(ude_train, r.train_loss, evidence))
        ratio = r.train_loss / level  # the reference is the noise level, not a network that fits the noise
    elif level is not None and level > 0:
        details.append(f"Noise level: {level:.4g} in loss units ({noise['how']}); the recovered model's training "
                       f"loss is {r.train_loss / level:.3g} times it.")
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
    if chosen.n_terms == 0:
        return "none", [f"no library term lowers the BIC by more than {settings.min_improvement:g}: the data are "
                        "explained by the mechanistic model alone as well as by any recovered term.", *notes]
    saturated = [t for t in terms if t.saturated]
    if ratio is not None and ratio > settings.worse_ratio and (val_ratio is None or val_ratio > 1):
        lacking = ""
        if saturated:
            lacking = (f" The data ask for more library terms in {_term_counts(saturated)} than the selection may give (max_terms = "
                       f"{settings.max_terms}): the library most likely lacks the learned term's form, and this is "
                       "a poor approximation; try candidate functions of that form (--function) or a larger "
                       "--max-terms.")
        against = "the noise level (the UDE fits below it)" if overfit else "the UDE"
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


def _overfit_sentence(ude_train: float, rec_train: float, evidence: Mapping) -> str:
    noise = evidence["noise_level"]
    level, p, n = noise["loss"], evidence.get("ude_fitted"), evidence.get("n_train")
    values = f"with {p} fitted values for {n} observations, " if p is not None else ""
    return (f"The UDE's training loss {ude_train:.4g} is below the noise level {level:.4g} ({ude_train / level:.2g} "
            f"times it; {noise['how']}), and below {noise['below']:.4g}, where chance would put a correct model "
            f"only once in 20 times: {values}it fits the noise (overfitting). The recovered model is compared "
            f"with the noise level instead of the UDE: its training loss {rec_train:.4g} is {rec_train / level:.3g} "
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


#: Candidates not nested in the chosen model take part in the stability vote only within this BIC of the best.
VOTE_BIC = 10.0


def _features_of(candidate: Candidate) -> list[tuple[tuple[str, int], str]]:
    return [(t, f.text) for t, tm in candidate.term_models.items() for f in tm.features]


def _stable_selection(selector: _Selector, chosen: Candidate, settings: DiscoverSettings,
                      say: Callable[[str], None]) -> tuple[Candidate, StableSelection]:
    """Keep the terms the data support, not the noise: among the chosen model, every candidate refitted so
    far that is nested in it (its sub-models with one term dropped included) and the others within ``VOTE_BIC``
    of the best BIC, the one that wins the most halves of the observation times (complementary pairs,
    each half's candidates refitted by one Gauss-Newton step and ranked by BIC + ``min_improvement`` per
    term); then a backward check of each of its terms: its Wald interval must exclude zero and keeping it
    must lower the information criterion on all the data by more than ``min_improvement``. Every decision
    is logged.

    Why the structure that wins most halves and not each term's selection frequency: library terms are
    often near substitutes along one trajectory (x*y and y**2 on a predator-prey cycle), and split the
    halves between them; a threshold on each term's frequency would then drop both."""
    from .stability import local_fit, stability_selection, wald_intervals

    objective = selector.objective
    likelihood = bool(objective.likelihood)
    _submodels(selector, chosen)  # the backward check and the resampling compare with them
    # the vote is among the chosen model, the models nested in it, and the others the whole data do not reject
    # (BIC within VOTE_BIC of the best: less than "very strong" evidence against them, Kass & Raftery 1995):
    # resampling may take terms out or pick among near-equals, it does not swap in a structure the whole data
    # reject (with a missing form many rich models split the halves)
    chosen_support = selector.supports_of(chosen)
    finite = [c.refit.bic for c in selector._cache.values() if c.refit.success and np.isfinite(c.refit.bic)]
    best_bic = min(finite) if finite else float("inf")
    pool: dict[tuple, Candidate] = {}
    fits = {}
    for key, cand in selector._cache.items():
        support = selector.supports_of(cand)
        nested = all(set(support[t]) <= set(chosen_support[t]) for t in chosen_support)
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
                               settings.min_improvement, settings.resamples)
    frequency = {(_label(t), f): v for (t, f), v in stab.frequency.items()}
    for f in sorted(stab.frequency, key=lambda f: (-stab.frequency[f], _label(f[0]), f[1])):
        say(f"stability selection: {_label(f[0])} {f[1]} is in the best candidate of "
            f"{100 * stab.frequency[f]:.0f} % of {stab.resamples} halves of the observation times")
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
    checks: list[dict] = []
    dropped: list[dict] = []
    while True:
        names = [n for tm in current.term_models.values() for n in tm.names]
        intervals = wald_intervals(current.refit, names, likelihood, settings.level)
        strict = wald_intervals(current.refit, names, likelihood, keep_level)
        failing = []
        checks = []
        for t, tm in current.term_models.items():
            for k_name, feat in zip(tm.names, tm.features, strict=True):
                sup = selector.supports_of(current)
                k = next(i for i, f in enumerate(selector.libraries[t].features) if f.text == feat.text)
                without = {**sup, t: tuple(i for i in sup[t] if i != k)}
                sub = selector.evaluate(without, {}, "backward check", base=current)
                gain = (sub.refit.bic - current.refit.bic) if sub.refit.success else float("inf")
                iv, wide = intervals[k_name], strict[k_name]
                reasons = []
                if not wide.excludes_zero:
                    reasons.append(f"its interval {wide.text()} includes 0 at {100 * keep_level:.4g} % ({100 * settings.level:g} % "
                                   f"adjusted for the {m} library terms the selection could take)")
                if not gain > settings.min_improvement:
                    reasons.append(f"keeping it lowers the BIC by {gain:.2f}, not by more than "
                                   f"discover.min_improvement = {settings.min_improvement:g}")
                checks.append({"term": _label(t), "feature": feat.text, "coefficient": k_name,
                               "interval": iv.as_dict(), "adjusted_interval": wide.as_dict(),
                               "bic_gain": _finite_or_none(gain), "kept": not reasons,
                               "why": "; ".join(reasons) if reasons else
                               (f"its interval {wide.text()} at {100 * keep_level:.4g} % ({100 * settings.level:g} % "
                                f"adjusted for the {m} library terms) excludes 0 and keeping it lowers the BIC by "
                                + ("more than any finite amount (without it the refit fails)"
                                   if not np.isfinite(gain) else f"{gain:.2f}"))})
                if reasons:
                    failing.append((gain, sub, checks[-1]))
        if not failing:
            for c in checks:
                say(f"check: {c['term']} {c['feature']} kept: {c['why']}")
            break
        gain, sub, check = min(failing, key=lambda item: item[0])
        say(f"check: {check['term']} {check['feature']} dropped: {check['why']}")
        dropped.append(check)
        current = sub
    ranking = []
    ranked = [k for k, c in selector._cache.items() if c.refit.success and np.isfinite(c.refit.bic)]
    for key in sorted(ranked, key=lambda k: selector._cache[k].refit.bic)[:8]:
        cand = selector._cache[key]
        ranking.append({"model": cand.describe(), "source": cand.source, "n_terms": cand.n_terms,
                        "bic": float(cand.refit.bic), "train_loss": cand.refit.train_loss,
                        "halves_won": stab.wins.get(key)})  # None: not in the vote
    return current, StableSelection(stab.resamples, stab.wins[mode], frequency, checks, intervals, ranking, dropped)


def _calibrate_runs(objective: DataObjective, chosen: Candidate, say: Callable[[str], None]) -> None:
    """The chosen model's runs test, calibrated for the fit (:func:`~ude_cli.discovery.stability.calibrated_runs_p`),
    into ``chosen.refit.extra["runs_p_calibrated"]``: the verdict reads it."""
    from .stability import calibrated_runs_p, local_fit

    fit = local_fit(chosen.refit)
    if fit is None:
        return
    p = calibrated_runs_p(fit, objective.cell_groups("train"), objective.cell_states("train"),
                          objective.cell_experiments("train"))
    chosen.refit.extra["runs_p_calibrated"] = p
    say(f"runs test of the recovered model's residuals: p = {chosen.refit.runs_p:.2g} against independent signs, "
        f"{p:.2g} calibrated for the fit (residuals of a fitted model change sign less often than noise does)")


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
