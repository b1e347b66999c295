"""What ``ude discover RUN`` writes, and reading it back.

``RUN/discovery/`` (every file written atomically):

=======================  ==========================================================================
``equations.md``         the recovered equations as plain text and LaTeX, coefficients, verdict
``recovered.yaml``       a config in which each network is replaced by its recovered expression;
                         ``ude fit recovered.yaml`` fits it as a purely mechanistic model
``discovery.json``       settings, pysindy's threshold path per term, every candidate refitted to
                         the data with its scores, the chosen model, extrapolation checks, verdict
``terms.csv``            each learned term along the fitted trajectories: network, recovered,
                         pysindy's proposal
``extrapolation.csv``    recovered, mechanistic-only and UDE models simulated to the horizon
``figures/``             terms, refit and extrapolation figures (PNG and PDF)
=======================  ==========================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RunDirError
from ..runs.rundir import Staging, atomic_write_json, atomic_write_text, write_failure_safe
from .discover import DiscoverSettings, Discovery, discover

#: The sub-directory of a run that ``ude discover`` writes.
DISCOVERY_DIR = "discovery"


def discover_run(run_dir: str | Path, *, out: str | Path | None = None, log: Callable[[str], None] | None = None,
                 plots: bool = True, **overrides) -> tuple[Discovery, Path]:
    """Run :func:`ude_cli.discovery.discover.discover` on a saved run and write its files.

    Arguments:
        run_dir: the run directory of a finished ``ude fit``.
        out: where to write (default: ``RUN/discovery``).
        log: receives progress lines.
        plots: write the figures.
        overrides: settings that replace the config's ``discover:`` section (None = keep).

    Returns:
        The discovery and the directory written.

    Raises:
        RunDirError: not a complete run directory, or the output cannot be written.
        ConfigError: the run has no networks, or a setting is invalid.
    """
    from ..runs.load import load_run

    run = load_run(run_dir)
    settings = DiscoverSettings.from_spec(run.config.discover, **overrides)
    target = Path(out) if out is not None else Path(run_dir) / DISCOVERY_DIR
    discovery = discover(run.problem, run.model, run.metrics, settings, predictions=run.predictions,
                         start=run.best_start, log=log)
    discovery.recovered_intervals = recovered_intervals(discovery, target, log=log)
    write_failure_safe(write_discovery, discovery, target, plots=plots, dpi=run.config.output.dpi, where=str(target))
    return discovery, target


# -- equations -----------------------------------------------------------------------------------

def equation_forms(discovery: Discovery) -> dict[str, dict[str, str]]:
    """Per state: ``text`` (with parameter names, our equation language), ``numeric`` (values in),
    ``latex`` (values in) and ``latex_symbolic``."""
    from ..expressions import parse_expression
    from .typeset import derivative_latex, to_latex, to_text, with_values

    # a per-experiment parameter keeps its name: it has one value per experiment (the parameter table lists them)
    values = {n: float(v) for n, v in discovery.chosen.refit.values.items() if np.ndim(v) == 0}
    out = {}
    for s, text in discovery.chosen.equations.items():
        sym = parse_expression(text).to_sympy()
        pretty = to_text(sym)
        try:
            parse_expression(pretty)
        except Exception:  # sympy printed something outside our language: keep the plain text
            pretty = text
        numeric = with_values(sym, values)
        out[s] = {"text": pretty, "numeric": to_text(numeric),
                  "latex": f"{derivative_latex(s)} = {to_latex(numeric)}",
                  "latex_symbolic": f"{derivative_latex(s)} = {to_latex(sym)}"}
    return out


def equations_markdown(discovery: Discovery) -> str:
    """``equations.md``: the recovered equations, coefficients, scores and verdict."""
    problem = discovery.problem
    forms = equation_forms(discovery)
    r = discovery.chosen.refit
    lines = [f"# Recovered equations: {problem.config.run_name}", "",
             f"**Verdict: {discovery.verdict.upper()}** — {discovery.messages[0]}", ""]
    lines += [m for m in discovery.messages[1:]] + [""]
    lines += ["## Equations (plain text)", "", "```"]
    lines += [f"d{s}/dt = {f['numeric']}" for s, f in forms.items()]
    lines += ["```", "", "With parameter names (as in `recovered.yaml`):", "", "```"]
    lines += [f"d{s}/dt = {f['text']}" for s, f in forms.items()]
    lines += ["```", "", "## Equations (LaTeX)", "", "```latex", "\\begin{aligned}"]
    lines += [" \\\\\n".join(f"  {f['latex'].replace(' = ', ' &= ', 1)}" for f in forms.values())]
    lines += ["\\end{aligned}", "```", "", "## Learned terms", "",
              "| term | in | recovered | R² vs network | max error | pysindy on the network |",
              "|---|---|---|---|---|---|"]
    for tr in discovery.terms:
        prop = _format_support(tr.proposal.coefficients, tr.library.names)
        r2 = "n/a (degenerate term)" if tr.degenerate else f"{tr.fidelity.r2:.4g}"
        lines.append(f"| `{tr.label}` | {', '.join(f'd{s}/dt' for s in tr.states)} | `{tr.expression()}` | "
                     f"{r2} | {tr.fidelity.max_error:.4g} | `{prop}` |")
    lines += [f"- {tr.degenerate}" for tr in discovery.terms if tr.degenerate]
    intervals = {n: iv for tr in discovery.terms for n, iv in tr.intervals.items()}
    level = f"{100 * discovery.settings.level:g} %"
    lines += ["", "## Parameters (refitted to the data)", "",
              f"| name | value | {level} interval | fitted | meaning |", "|---|---|---|---|---|"]
    from ..expressions import parse_expression
    from .discover import used_names

    used = used_names(problem, {s: parse_expression(f["text"]) for s, f in forms.items()})
    for name, p in discovery.chosen.parameters.items():
        if name not in used:  # e in e*F*P when F is 0: not in the equations, nor in recovered.yaml
            continue
        iv = intervals.get(name)
        band = "" if iv is None else ("unbounded" if not iv.bounded else f"[{iv.lower:.4g}, {iv.upper:.4g}]")
        for label, value in _parameter_values(discovery, name):  # one row per experiment for a per-experiment one
            lines.append(f"| `{label}` | {value:.6g} | {band} | {'no (fixed)' if p.fixed else 'yes'} | "
                         f"{p.description} |")
    if intervals:
        methods = sorted({iv.method for iv in intervals.values()})
        lines += ["", f"Intervals of the recovered coefficients: {'; '.join(methods)}."]
    for label in r.free:
        if "(t0)" in label:
            lines.append(f"| `{label}` | {_initial_value(discovery, label):.6g} | yes | initial state |")
    lines += ["", "## Scores", "", "| model | training loss | validation loss | BIC | fitted values |",
              "|---|---|---|---|---|"]
    ude = discovery.ude
    lines.append(f"| UDE | {_g(ude.get('train_loss'))} | {_g(ude.get('validation_loss'))} | | |")
    for name, cand in (("recovered", discovery.chosen), ("mechanistic only", discovery.mechanistic)):
        rr = cand.refit
        lines.append(f"| {name} | {_g(rr.train_loss)} | {_g(rr.validation_loss)} | {rr.bic:.2f} | {rr.n_free} |")
    lines += ["", f"Loss: {_loss_kind(problem)} over the observed cells, as in the fit's `metrics.json`.", ""]
    sel = discovery.selection
    if sel is not None and sel.ranking:
        lines += ["## Selection", "",
                  f"Stability selection over {sel.resamples} halves of the observation times: the candidate that "
                  f"wins the most halves is taken (it won {100 * (sel.won or 0):.0f} %); each of its terms is kept if its "
                  f"interval at {level} adjusted for the number of library terms (Bonferroni) excludes 0 and keeping "
                  f"it lowers the BIC by more than {discovery.settings.min_improvement:g}.", "",
                  "| term | feature | in the best candidate of | in the recovered model |", "|---|---|---|---|"]
        final = {(tr.label, f.text) for tr in discovery.terms for f in tr.model.features}
        for (t, f), v in sorted(sel.frequency.items(), key=lambda kv: -kv[1]):
            lines.append(f"| `{t}` | `{f}` | {100 * v:.0f} % of the halves | {'yes' if (t, f) in final else 'no'} |")
        lines += ["", "| check | kept | why |", "|---|---|---|"]
        lines += [f"| `{c['term']}` `{c['feature']}` | {'yes' if c['kept'] else 'no'} | {c['why']} |" for c in sel.checks]
        lines += ["", "Runner-up structures (all the data):", "", "| model | terms | BIC | training loss | halves won |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{c['model']}` | {c['n_terms']} | {c['bic']:.2f} | {c['train_loss']:.4g} | "
                  + ("not in the vote (not nested in the chosen model, BIC more than 10 above the best)" if c["halves_won"] is None
                     else f"{100 * c['halves_won']:.0f} %") + " |" for c in sel.ranking]
        lines.append("")
    lines += ["## Beyond the data", ""]
    for name, ext in discovery.extrapolations.items():
        state = f"stays bounded to t = {ext.horizon:g}" if ext.bounded else \
            f"**diverges before t = {ext.horizon:g}**: {ext.message}"
        lines.append(f"- {name}: {state}" + _oscillation_text(ext, problem.states))
    lines += ["", f"Found in {discovery.seconds:.1f} s. Candidates refitted to the data: "
              f"{len(discovery.candidates)} (see `discovery.json`).", ""]
    return "\n".join(lines)


def _oscillation_text(ext, states) -> str:
    if not ext.bounded or not ext.oscillations:
        return ""
    from .extrapolate import late_time_text

    text = late_time_text({s: ext.oscillations[0][s].as_dict() for s in states})
    return f"; late time: {text}" if text else ""


def _parameter_values(discovery: Discovery, name: str) -> list[tuple[str, float]]:
    """``(label, value)`` of a refitted parameter: itself, or ``name[experiment]`` for each experiment (as
    ``params.csv`` lists a per-experiment parameter)."""
    value = discovery.chosen.refit.values[name]
    if np.ndim(value) == 0:
        return [(name, float(value))]
    return [(f"{name}[{e.name}]", float(v)) for e, v in zip(discovery.problem.dataset.experiments,
                                                           np.asarray(value), strict=True)]


def _initial_value(discovery: Discovery, label: str) -> float:
    r = discovery.chosen.refit
    state = label.split("(t0)")[0]
    j = discovery.problem.states.index(state)
    names = [e.name for e in discovery.problem.dataset.experiments]
    b = 0 if "[" not in label else names.index(label.split("[", 1)[1].rstrip("]"))
    return float(r.initial[b, j])


def _format_support(coefficients, names) -> str:
    from .symbolic import format_terms

    return format_terms(coefficients, names, 4)


def _loss_kind(problem) -> str:
    if problem.likelihood:
        return ("negative log-likelihood per observation (the noise model's parameters held at the fit's "
                "estimates)")
    loss = problem.config.training.loss
    return "mean squared error of logarithms" if loss.log else (
        "mean squared error divided by each state's spread" if loss.scale == "std" else "mean squared error")


def _g(x) -> str:
    return "" if x is None else f"{x:.4g}"


# -- recovered.yaml ------------------------------------------------------------------------------

def recovered_config(discovery: Discovery, directory: Path) -> dict:
    """A config (as a dict) of the recovered model, with data paths relative to ``directory``.

    Each network is replaced by its recovered expression; every parameter starts at its refitted
    value (coefficients are learned, fixed parameters stay fixed), and a learned initial state
    starts at its refitted value. Training is a short LBFGS run: there is no network to train.
    """
    problem = discovery.problem
    cfg = problem.config
    raw = cfg.resolved()
    forms = equation_forms(discovery)
    values = discovery.chosen.refit.values
    raw["name"] = f"{cfg.run_name}_recovered"
    raw["description"] = (f"Recovered by `ude discover` from the UDE {cfg.run_name}: the networks replaced by "
                          f"their recovered expressions (verdict: {discovery.verdict})")
    files = [os.path.relpath(Path(f).resolve(), Path(directory).resolve()) for f in problem.dataset.files]
    if raw["data"].get("files") is not None:
        raw["data"]["files"] = files
    else:
        raw["data"]["file"] = files[0]
    m = raw["model"]
    m.update(builtin=None, states=list(problem.states), equations={s: f["text"] for s, f in forms.items()},
             corrections={})
    # a per-experiment parameter stays one (a config gives it one starting value: the experiments' median); one that
    # the recovered equations do not use (e in e*F*P when F is 0) is not written
    from ..expressions import parse_expression
    from .discover import used_names

    used = used_names(problem, {s: parse_expression(f["text"]) for s, f in forms.items()})
    m["parameters"] = {
        name: {"init": float(np.median(values[name])), "fixed": p.fixed,
               "bounds": [p.lower, p.upper] if (p.lower, p.upper) != (None, None) else None,
               "positive": p.positive, "unit": p.unit, **({"per_experiment": True} if p.per_experiment else {})}
        for name, p in discovery.chosen.parameters.items() if name in used}
    m["constants"] = {c: ({"column": v} if isinstance(v, str) else v) for c, v in problem.constants.items()}
    initial = dict(m.get("initial") or {})
    if len(problem.dataset.experiments) == 1:
        for j, s in enumerate(problem.states):
            spec = problem.initial[s]
            if spec.learn:
                initial[s] = {**(initial.get(s) or {}), "value": float(discovery.chosen.refit.initial[0, j]),
                              "column": None, "learn": True}
    m["initial"] = initial
    raw["networks"] = {}
    raw["training"]["stages"] = [{"optimizer": "lbfgs", "iterations": 200}]
    raw["training"]["weight_decay"] = 0.0
    raw["training"]["warm_start"] = "none"  # it starts from the refitted values already
    raw.pop("discover", None)
    return raw


def recovered_yaml(discovery: Discovery, path: Path) -> str:
    """The text of ``recovered.yaml``, checked by loading and resolving it as ``ude fit`` would."""
    import yaml

    from ..config import config_from_dict
    from ..problem import resolve

    raw = recovered_config(discovery, path.parent)
    config = config_from_dict(raw, label=str(path), path=path)
    resolve(config)  # raises if the recovered model is not a valid config (a bug)
    header = [f"# The recovered model of run {discovery.problem.config.run_name} (ude discover).",
              f"# Verdict: {discovery.verdict.upper()} - {discovery.messages[0]}",
              "# Each network is replaced by its recovered expression; `ude fit` on this file fits it as a",
              "# purely mechanistic model, starting from the coefficients refitted by ude discover.",
              "# Coefficients:"]
    for tr in discovery.terms:
        for name, f in zip(tr.model.names, tr.model.features, strict=True):
            header.append(f"#   {name}: coefficient of {f.text} in {tr.label} = {tr.coefficients[name]:.6g}")
    if not any(tr.model.names for tr in discovery.terms):
        header.append("#   (none: no library term was kept)")
    return "\n".join(header) + "\n" + yaml.safe_dump(raw, sort_keys=False)


def recovered_intervals(discovery: Discovery, directory: Path, log: Callable[[str], None] | None = None) -> dict:
    """Profile-likelihood intervals of every value the recovered model fits (its coefficients, the mechanistic
    parameters refitted with them, noise and initial values), computed as ``ude fit --profile`` would on
    ``recovered.yaml`` at the refitted values; empty, with the reason, when there is no model to profile."""
    from ..config import config_from_dict
    from ..engines.torchdiffeq import SolverError
    from ..errors import UdeError
    from ..fitting.model import UDEModel
    from ..identifiability.uncertainty import assess, learned_names
    from ..problem import resolve

    if discovery.verdict == "failed":
        return {"note": "no intervals: the recovered model failed"}
    try:
        # in memory, with the data paths relative to a folder that exists (the discovery folder may not yet:
        # the system resolves "discovery/../inputs" only through an existing folder)
        base = next(p for p in (directory, *directory.parents) if p.is_dir())
        raw = recovered_config(discovery, base)
        problem = resolve(config_from_dict(raw, label=str(directory / "recovered.yaml"), path=base / "recovered.yaml"))
        names = list(learned_names(problem))
        if not names:
            return {"note": "no intervals: the recovered model fits no value"}
        model = UDEModel(problem)
        fit, noise, how = _joint_fit(discovery)
        _set_values(model, fit.values, fit.initial, noise)  # a config gives a per-experiment one one start only
        unc = assess(problem, model, 0, profile=names)
    except (UdeError, SolverError) as exc:
        return {"note": f"no intervals: {exc}"}
    out = unc.to_json()
    if log is not None:
        log(f"intervals of the recovered model: profile likelihoods of {len(names)} values in {unc.seconds:.1f} s")
    return {"level": out["level"], "intervals": out["intervals"], "notes": out["notes"],
            "not_identifiable": out["not_identifiable"], "noise": noise or None,
            "method": f"profile likelihood on recovered.yaml at the refitted values{how} (ude fit --profile's machinery)"}


def _joint_fit(discovery: Discovery) -> tuple:
    """The recovered model's refit and noise parameters where its profiles start: with learned noise parameters,
    both estimated jointly (:func:`~ude_cli.discovery.refit.refit_with_noise`: the selection holds them at the UDE's
    estimates, and a profile must start at the maximum); ``(refit, noise by name, what the method says)``."""
    from .refit import refit_with_noise

    chosen = discovery.chosen.refit
    learned = [n for n, p in discovery.problem.noise_parameters.items() if not p.fixed]
    if not learned or discovery.system is None:
        return chosen, {}, ""
    joint = refit_with_noise(discovery.system, discovery.problem, discovery.noise, chosen)
    if joint is None:  # a solve failed: the UDE's estimates are the nearest to the maximum known
        noise = {n: float(discovery.noise[n]) for n in learned if n in discovery.noise}
        return chosen, noise, ", the noise parameters at the UDE's estimates (their joint estimate failed to solve)"
    fit, noise = joint
    values = ", ".join(f"{n} = {noise[n]:.4g}" for n in learned if n in noise)
    return fit, {n: noise[n] for n in learned if n in noise}, (
        f", its noise parameters estimated with them ({values}; maximum likelihood, every other value refitted)")


def _set_values(model, values, initial: np.ndarray, noise) -> None:
    """The refitted values into ``model``: every learned parameter (each experiment's value of a per-experiment
    one), learned initial state and noise parameter."""
    import torch

    from ..fitting.parameters import to_unconstrained

    params = model.parameters_
    with torch.no_grad():
        for name, raw in params.raw.items():
            if name not in values:
                continue
            v = np.asarray(values[name], dtype=float)
            if name in params.per_experiment:
                u = [to_unconstrained(params.specs[name], float(x)) for x in np.broadcast_to(v, raw.shape[-1:])]
            else:
                u = [to_unconstrained(params.specs[name], float(v))]
            raw.copy_(torch.tensor(u, dtype=raw.dtype).expand_as(raw))
        for name, raw in model.noise.raw.items():
            if name in noise:
                raw.fill_(to_unconstrained(model.noise.specs[name], float(noise[name])))
        states = model.initial
        for j in states.learned:
            s = states.states[j]
            v = np.asarray(initial[:, j], dtype=float)
            if states.specs[s].positive:
                v = np.log(np.maximum(v, 1e-12))
            raw = states.raw[s]
            raw.copy_(torch.tensor(v, dtype=raw.dtype).expand_as(raw))


# -- discovery.json and the CSVs --------------------------------------------------------------------

def discovery_record(discovery: Discovery) -> dict:
    """Everything in ``discovery.json``."""
    import dataclasses

    problem = discovery.problem
    chosen = discovery.chosen
    experiments = [e.name for e in problem.dataset.experiments]
    return {
        "run": problem.config.run_name,
        "verdict": discovery.verdict,
        "verdict_meaning": _verdict_meaning(discovery.verdict),
        "messages": discovery.messages,
        "success": discovery.success,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(discovery.settings).items()},
        "equations": equation_forms(discovery),
        "terms": [_term_record(tr) for tr in discovery.terms],
        "chosen": _candidate_record(chosen, experiments, problem.states),
        "mechanistic_only": _candidate_record(discovery.mechanistic, experiments, problem.states),
        "ude": discovery.ude,
        "extrapolation": {k: e.summary(problem.states) for k, e in discovery.extrapolations.items()},
        "candidates": [_candidate_record(c, experiments, problem.states, brief=True) for c in discovery.candidates],
        "selection": _selection_record(discovery),
        "evidence": discovery.evidence,
        "recovered_intervals": discovery.recovered_intervals,
        "log": discovery.log,
        "seconds": round(discovery.seconds, 3),
    }


def _selection_record(discovery: Discovery) -> dict | None:
    """How the terms were kept: stability selection, the backward check with intervals, the runner-ups."""
    sel = discovery.selection
    if sel is None:
        return None
    final = {(tr.label, f.text) for tr in discovery.terms for f in tr.model.features}
    return {
        "method": ("stability selection over halves of the observation times (complementary pairs), each half's "
                   "candidates refitted by one Gauss-Newton step and ranked by BIC + min_improvement per term; the "
                   "candidate that wins the most halves is taken, then each of its terms checked: its profile interval at the "
                   "Bonferroni-adjusted level excludes 0 (the statistic at 0, the model refitted without it, above "
                   "the threshold) and keeping it lowers the BIC on all the data by more than min_improvement"),
        "interval_method": "; ".join(sorted({iv.method for iv in sel.intervals.values()})) or None,
        "level": discovery.settings.level,
        "resamples": sel.resamples,
        "halves_won": sel.won,
        "frequency": [{"term": t, "feature": f, "frequency": v, "kept": (t, f) in final}
                      for (t, f), v in sorted(sel.frequency.items(), key=lambda kv: -kv[1])],
        "checks": sel.checks,
        "intervals": {n: iv.as_dict() for n, iv in sel.intervals.items()},
        "runner_ups": sel.ranking,
        "starts": sel.starts,
    }


def _verdict_meaning(verdict: str) -> str:
    from .discover import VERDICTS

    return VERDICTS[verdict]


def _fidelity_record(fid, degenerate: bool) -> dict:
    """A fidelity as a dict; without R² and relative RMS where the term is degenerate (their denominator, the
    term's spread, is next to nothing)."""
    out = fid.as_dict()
    if degenerate:
        out.update(r2=None, relative_rmse=None)
    return out


def _term_record(tr) -> dict:
    names = tr.library.names
    degenerate = tr.degenerate is not None
    return {
        "term": tr.label, "network": tr.term[0], "output": tr.term[1], "states": tr.states,
        "library": names,
        "degenerate": tr.degenerate,
        "recovered": {"expression": tr.expression(6),
                      "coefficients": {n: tr.coefficients[n] for n in tr.model.names},
                      "intervals": {n: iv.as_dict() for n, iv in tr.intervals.items()},
                      "features": [f.text for f in tr.model.features],
                      "fidelity_to_network": _fidelity_record(tr.fidelity, degenerate)},
        "pysindy": {
            "chosen_threshold": tr.proposal.threshold,
            "expression": _format_support(tr.proposal.coefficients, names),
            "fidelity_to_network": _fidelity_record(tr.proposal_fidelity, degenerate),
            "path": [{"threshold": p.threshold, "n_terms": len(p.support), "bic": p.bic,
                      "r2": None if degenerate else p.fidelity.r2,
                      "max_error": p.fidelity.max_error, "expression": _format_support(p.coefficients, names)}
                     for p in tr.path],
        },
    }


def _candidate_record(cand, experiments, states, brief: bool = False) -> dict:
    r = cand.refit
    rec = {"source": cand.source, "model": cand.describe(), "n_terms": cand.n_terms, "n_fitted": r.n_free,
           "train_loss": r.train_loss, "validation_loss": r.validation_loss, "bic": _finite(r.bic),
           "success": r.success, "message": r.message, "evaluations": r.evaluations}
    if brief:
        return rec
    rec.update(equations=cand.equations, parameters={n: _json_value(r.values[n], experiments) for n in cand.parameters},
               fitted=r.free, train_mse=r.train_mse, validation_mse=r.validation_mse,
               runs_test={"z": r.runs_z, "p": r.runs_p},
               initial={e: {s: float(r.initial[b, j]) for j, s in enumerate(states)} for b, e in enumerate(experiments)})
    return rec


def _json_value(value, experiments) -> float | dict[str, float]:
    """A parameter's value for ``discovery.json``: a number, or experiment -> value for a per-experiment one."""
    if np.ndim(value) == 0:
        return float(value)
    return {str(e): float(v) for e, v in zip(experiments, np.asarray(value), strict=True)}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def terms_frame(discovery: Discovery) -> pd.DataFrame:
    """Each learned term along the fitted trajectories: the network, the recovered expression
    (refitted coefficients) and pysindy's proposal."""
    samples = discovery.samples
    names = [e.name for e in discovery.problem.dataset.experiments]
    frames = []
    for tr in discovery.terms:
        assert samples is not None  # a learned term was sampled
        theta = tr.library.matrix(samples.variables)
        index = {f.text: k for k, f in enumerate(tr.library.features)}
        recovered = np.zeros(samples.n)
        for name, f in zip(tr.model.names, tr.model.features, strict=True):
            recovered = recovered + tr.coefficients[name] * theta[:, index[f.text]]
        usable = np.all(np.isfinite(theta), axis=0)
        proposal = theta[:, usable] @ tr.proposal.coefficients[usable]
        frames.append(pd.DataFrame({"term": tr.label, "experiment": [names[b] for b in samples.experiment],
                                    "time": samples.variables["t"], "network": samples.targets[tr.term],
                                    "recovered": recovered, "pysindy": proposal}))
    return pd.concat(frames, ignore_index=True)


def extrapolation_frame(discovery: Discovery) -> pd.DataFrame:
    """Every extrapolated model, long over models and experiments."""
    problem = discovery.problem
    frames = []
    for name, ext in discovery.extrapolations.items():
        for b, (e, (t, y)) in enumerate(zip(problem.dataset.experiments, ext.trajectories, strict=False)):
            d = {"model": name, "experiment": e.name, "time": t}
            for j, s in enumerate(problem.states):
                d[s] = y[:, j]
            if b < len(ext.observables):  # the observables given by a formula
                d.update(ext.observables[b])
            frames.append(pd.DataFrame(d))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_discovery(discovery: Discovery, directory: str | Path, *, plots: bool = True, dpi: int = 150) -> Path:
    """Write the discovery files into ``directory`` (created if needed); return it."""
    directory = Path(directory)
    if directory.exists() and not (directory / "discovery.json").is_file() and any(directory.iterdir()):
        raise RunDirError("exists and holds no discovery.json; refusing to replace it", where=str(directory),
                          hint="choose another --out")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Staging(directory)
    try:
        _write_files(discovery, staging.path, plots=plots, dpi=dpi)
        return staging.commit(overwrite=True)
    except BaseException:
        staging.discard()
        raise


def _write_files(discovery: Discovery, directory: Path, *, plots: bool, dpi: int) -> None:
    atomic_write_text(directory / "equations.md", equations_markdown(discovery))
    atomic_write_text(directory / "recovered.yaml", recovered_yaml(discovery, directory / "recovered.yaml"))
    atomic_write_json(directory / "discovery.json", discovery_record(discovery))
    if discovery.samples is not None:
        atomic_write_text(directory / "terms.csv", terms_frame(discovery).to_csv(index=False))
    atomic_write_text(directory / "extrapolation.csv", extrapolation_frame(discovery).to_csv(index=False))
    if plots:
        from ..discovery import plots as discover_plots

        discover_plots.write_all(discovery.problem, directory, dpi=dpi)


def read_discovery(run_dir: str | Path) -> dict | None:
    """``RUN/discovery/discovery.json`` as a dict, or None when ``ude discover`` has not run.

    Raises:
        RunDirError: the file exists but cannot be read.
    """
    path = Path(run_dir) / DISCOVERY_DIR / "discovery.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"cannot read discovery.json: {exc}", where=str(path)) from None
