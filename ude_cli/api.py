"""The library entry points: the whole pipeline as short functions a notebook can call.

>>> from ude_cli import load_config, fit
>>> result = fit(load_config("configs/lotka_volterra.yaml"))
>>> result.values            # parameter values: mechanistic, observation, noise (fitted or fixed)
>>> result.predictions       # observed / predicted / residual per state
>>> result.save("runs/lv")   # the run directory
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import Config, load_config
from .problem import Problem, check_fittable, resolve


def check(config: Config | str | Path) -> Problem:
    """Validate a config and its data in one pass and simulate the initial guess once.

    Returns the resolved :class:`Problem`; raises :class:`~ude_cli.errors.UdeError` (a
    :class:`~ude_cli.errors.ProblemList` when there are several problems).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    problem = resolve(cfg)
    check_fittable(problem)
    import torch

    from .engines.torchdiffeq import SolverError
    from .errors import FitError
    from .fitting.model import UDEModel

    _set_threads(cfg)
    try:  # (building the model solves the steady states of model.preequilibration)
        model = UDEModel(problem)
    except SolverError as exc:
        raise FitError(f"simulating the initial guess: {exc.message}", where=cfg.label, hint=exc.hint) from None
    try:
        with torch.no_grad():
            sols = model()
    except SolverError as exc:
        from .fitting.blowup import explain

        raise FitError(f"simulating the initial guess: {explain(model, exc.message)}", where=cfg.label,
                       hint=exc.hint) from None
    for k, sol in enumerate(sols):
        if not torch.isfinite(sol).all():
            from .fitting.blowup import diagnose

            found = diagnose(model)
            what = found.sentence(len(problem.dataset.experiments)) if found is not None else (
                f"the states are not finite (experiments starting at t = {model.groups[k].t0:g})")
            raise FitError(f"simulating the initial guess: {what}", where=cfg.label,
                           hint="check the initial parameter values and initial states")
    from .config import reason_not_compiled

    # (a network the compiled engine cannot build -- a network YAML's graph -- is not probed for stiffness)
    note = None if reason_not_compiled("auto", False, cfg.networks) is not None else model.stiffness_note()
    if note:
        problem.warnings.append(f"{cfg.label}: solver.method: {note}")
    from .identifiability.structural import structural_check, warning_lines

    problem.structural = structural_check(problem)
    problem.warnings.extend(warning_lines(problem, problem.structural))
    steady = getattr(model.initial, "_steady_state", None)
    if steady is not None:  # what ude check says about it (the initial guess's steady states)
        problem.settled = steady.summary()
    return problem


def fit(config: Config | Problem | str | Path, *, monitor=None, stop_below: float | None = None,
        should_stop: Callable[[], str | None] | None = None, time_limit: float | None = None,
        n_starts: int | None = None, command: list[str] | None = None, resume=None):
    """Fit a config; return a :class:`~ude_cli.runs.results.FitResult`.

    Arguments:
        config: a :class:`Config`, the path of a YAML file, or a resolved :class:`Problem`.
        monitor: receives progress (see :class:`ude_cli.fitting.train.Monitor`); silent by default.
        stop_below: stop as soon as the training loss is below this value.
        should_stop: called between iterations; a reason (text) interrupts training.
        time_limit: seconds of training after which the best parameters so far are kept.
        n_starts: independent starts fitted at once (default ``training.starts``); the best is reported.
        command: the command line to record in run.json (default: ``sys.argv``).
        resume: a :class:`~ude_cli.runs.checkpoint.Resumable` to continue (its config is used).

    Raises:
        UdeError: a bad config or data (:class:`ConfigError`, :class:`DataError`), or a fit that
            failed numerically (:class:`FitError`).
        Interrupted: ``should_stop`` asked to stop; the exception carries ``problem``, ``model``
            and ``state`` for a checkpoint.
    """
    import torch

    from .errors import FitError, Interrupted
    from .fitting.lean_torch import compile_machinery_skipped
    from .fitting.model import UDEModel
    from .fitting.multistart import redraw_unsolvable, resolve_starts, starting_values
    from .fitting.train import TrainState, train
    from .likelihood.objective import Objective

    if resume is not None:
        config, n_starts = resume.config, resume.starts
    from .identifiability import profile_request
    from .identifiability.uncertainty import derived_request

    problem = _problem(config)
    check_fittable(problem)
    cfg = problem.config
    profile_request(problem)  # a bad uncertainty.profile or .derived fails before any training
    derived_request(problem)
    chosen = None
    if not n_starts:
        n_starts, chosen = resolve_starts(problem, cfg.training.starts)
    if chosen and monitor is not None:
        monitor.message(chosen)
    _structural_warnings(problem, monitor)
    _set_threads(cfg)
    torch.manual_seed(cfg.training.seed)
    model = UDEModel(problem, n_starts=n_starts,
                     parameter_starts=starting_values(problem, n_starts, cfg.training.seed))
    state = TrainState()
    if resume is not None:
        model.load_state_dict(resume.state_dict)
        state = resume.train_state
    else:
        model.redrawn = redraw_unsolvable(model, problem, cfg.training.seed)
        problem.warnings.extend(f"{cfg.label}: {line}" for line in model.redrawn)
    objective = Objective(model, cfg.training.loss)
    try:
        with compile_machinery_skipped():  # the command line's start-up savings, for this fit only
            trained = train(model, objective, cfg.training, monitor=monitor, stop_below=stop_below,
                            should_stop=should_stop, state=state, time_limit=time_limit)
    except Interrupted as exc:
        exc.problem, exc.model, exc.state = problem, model, state
        raise
    except FitError as exc:
        exc.where = exc.where or cfg.label  # name the config: several may run in one batch
        raise
    return build_result(problem, model, objective, trained, command=command, monitor=monitor)


def _structural_warnings(problem: Problem, monitor) -> None:
    """The structural check at the start of a fit: a warning for each parameter a network can imitate."""
    from .identifiability.structural import structural_check, warning_lines

    if problem.structural is None:
        problem.structural = structural_check(problem)
    if monitor is not None:
        label = f"{problem.config.label}: "
        for line in warning_lines(problem, problem.structural):
            monitor.message(f"warning: {line.removeprefix(label)}")


def _problem(config: Config | Problem | str | Path) -> Problem:
    """A resolved problem from a config path, a Config, or an already resolved Problem."""
    if isinstance(config, Problem):
        return config
    return resolve(config if isinstance(config, Config) else load_config(config))


def _set_threads(cfg: Config) -> None:
    import torch

    torch.set_num_threads(cfg.training.threads or 1)


def build_result(problem: Problem, model, objective, trained, *, command: list[str] | None = None, monitor=None):
    """Tables, metrics, dense trajectories and learned terms of a fitted model, with the intervals of its
    learned values (:mod:`ude_cli.identifiability`)."""
    import pandas as pd
    import torch

    from .fitting.multistart import starts_table
    from .fitting.quality import assess
    from .runs.results import FitResult, parameter_table, prediction_table, run_info

    with torch.no_grad():
        sols_t = model()
        objective.sync_noise(sols_t)  # profiled noise parameters: their maximum-likelihood values into the model
        train_loss = objective.loss(sols_t, "train").cpu().numpy()
        has_val = objective.counts["validation"] > 0
        val_loss = objective.loss(sols_t, "validation").cpu().numpy() if has_val else None
        train_mse = objective.per_observable_mse(sols_t, "train")
        val_mse = objective.per_observable_mse(sols_t, "validation") if has_val else None
        train_nll = objective.nll(sols_t, "train").cpu().numpy()
        val_nll = objective.nll(sols_t, "validation").cpu().numpy() if has_val else None
        prior = model.log_prior()  # the config's priors (None without): the fit maximised the log-posterior
        log_prior = prior.cpu().numpy() if prior is not None else None
    sols = [s.cpu().numpy() for s in sols_t]
    fitted = train_loss if log_prior is None else train_loss - log_prior / max(objective.counts["train"], 1)
    finite = np.where(np.isfinite(fitted), fitted, np.inf)
    best = int(np.argmin(finite))
    names = objective.names

    def per_observable(mse):
        return {o: _num(mse[best, k]) for k, o in enumerate(names)} if mse is not None else None

    n_net = sum(p.numel() for p in model.network_parameters()) // max(model.n_starts, 1)
    counts = parameter_counts(problem, int(n_net))
    metrics = {
        "loss": _num(train_loss[best]),
        "validation_loss": _num(val_loss[best]) if val_loss is not None else None,
        "train_mse": per_observable(train_mse),
        "validation_mse": per_observable(val_mse),
        "iterations": int(trained.iterations),
        "wall_seconds": round(float(trained.seconds), 4),
        "solver_evaluations": int(trained.nfe),
        "solver_engine": model.engine,
        **model.solver_choice(),
        **model.native_status(),
        "stop_reason": trained.stop_reason,
        "stages": trained.stages,
        "strategy": trained.strategy,
        "loss_kind": loss_kind(problem),
        "n_parameters": counts,
        "observations": {"train": int(objective.counts["train"]), "validation": int(objective.counts["validation"])},
        "likelihood": likelihood_summary(objective, sols_t, train_nll[best],
                                         val_nll[best] if val_nll is not None else None, counts, best),
        "best_start": best,
        "starts": model.n_starts,
    }
    steady = getattr(model.initial, "_steady_state", None)
    if steady is not None:  # model.preequilibration
        metrics["preequilibration"] = steady.summary()
    if log_prior is not None:
        metrics["log_prior"] = {
            "log_prior": _num(log_prior[best]), "log_posterior": _num(-train_nll[best] + log_prior[best]),
            "method": "the sum of the config's priors' log-densities at the fitted values (model.parameters.P.prior, "
                      "networks.NET.priors); the fit maximised the log-likelihood plus it"}
    if model.n_starts > 1:
        metrics["loss_per_start"] = [_num(v) for v in train_loss]
        metrics["starts_drawn_again"] = list(model.redrawn)
    dense = model.dense()
    terms = [model.terms_along(t, y) for t, y in dense]
    history = pd.DataFrame(trained.records, columns=["iteration", "stage", "optimizer", "objective", "loss",
                                                     "trajectory_loss", "seconds"])
    info = run_info(problem, seed=problem.config.training.seed, command=command)
    with torch.no_grad():
        observed = [p.cpu().numpy() for p in objective.observed(sols_t)]
    standardised = objective.standardised(sols_t, best)
    predictions = prediction_table(problem, sols, model.groups, best, objective=objective, observed=observed,
                                   standardised=standardised)
    from .identifiability.structural import structural_check, summary

    if problem.structural is None:
        problem.structural = structural_check(problem)
    metrics.setdefault("identifiability", {})["structural"] = summary(problem.structural)
    metrics["fit_quality"] = assess(problem, predictions, metrics["loss"], starts=model.n_starts, stages=trained.stages,
                                    jump_times=model.jump_times(best))
    from .identifiability import assess as assess_uncertainty
    from .identifiability import table_columns

    start_nll = train_nll - log_prior if log_prior is not None else train_nll  # what the starts' fits maximised
    uncertainty = assess_uncertainty(problem, model, best, monitor=monitor, fit_seconds=float(trained.seconds),
                                     start_nll=start_nll)
    spec = problem.config.uncertainty
    curve_bands = None
    if spec.bands and uncertainty.sampler is not None:
        from .identifiability.bands import band_columns, bands

        drawn = bands(problem, uncertainty, level=spec.level, samples=spec.band_samples,
                      seed=problem.config.training.seed)
        uncertainty.notes.append(f"bands ({spec.level * 100:g} %): {drawn.how}" if drawn.observables is not None
                                 else drawn.how)
        if drawn.observables is not None:
            predictions = band_columns(predictions, problem, model.groups, drawn.observables, drawn.states)
            curve_bands = drawn.curves
    metrics["uncertainty"] = uncertainty.to_json()
    parameters = table_columns(parameter_table(problem, model, best), uncertainty)
    return FitResult(problem=problem, model=model, parameters=parameters, uncertainty=uncertainty,
                     predictions=predictions, metrics=metrics, history=history, trajectories=dense, terms=terms, info=info,
                     observable_curves=objective.curves(dense), curve_bands=curve_bands,
                     starts=starts_table(problem, model, train_loss) if model.n_starts > 1 else None)


def parameter_counts(problem: Problem, n_network: int) -> dict[str, int]:
    """Learned parameters by kind (a per-experiment parameter counts once per experiment; without a noise
    model, the maximum-likelihood sigma of the squared-error fit counts as one noise parameter)."""
    n_exp = len(problem.dataset.experiments)

    def count(role: str) -> int:
        return sum((n_exp if p.per_experiment else 1) for p in problem.parameters.values()
                   if not p.fixed and p.role == role)

    noise = sum(not p.fixed for p in problem.noise_parameters.values()) if problem.likelihood else 1
    initial = sum(n_exp for i in problem.initial.values() if i.learn)
    out = {"mechanistic": count("mechanistic"), "observation": count("observation"), "noise": noise,
           "initial": initial, "network": n_network}
    out["total"] = sum(out.values())
    return out


def likelihood_summary(objective, solutions, nll: float, validation_nll: float | None, counts: dict,
                       start: int) -> dict:
    """NLL, AIC and BIC of the fit (every learned parameter counted, network weights included), with the
    noise model and its estimated parameters."""
    n = int(objective.counts["train"])
    k = counts["total"]
    nll = float(nll)
    out = {
        "nll": _num(nll),
        "validation_nll": _num(validation_nll) if validation_nll is not None else None,
        "aic": _num(2 * nll + 2 * k),
        "bic": _num(2 * nll + k * np.log(max(n, 1))),
        "observations": n,
        "parameters": k,
        "noise_model": objective.describe(),
        "noise": objective.noise_estimates(solutions, start),
        "method": ("maximum likelihood: the objective is the negative log-likelihood per observation"
                   if objective.likelihood else
                   "squared errors (training.loss); the likelihood is normal (log-normal for a log loss) with "
                   "sigma at its maximum-likelihood value sqrt(RSS/n), counted as one parameter"),
        "counted": "AIC = 2 NLL + 2k, BIC = 2 NLL + k log(n): k counts every learned value, network weights included",
    }
    return out


def loss_kind(problem: Problem) -> str:
    """The training objective, in words (metrics.json and equations.md)."""
    if problem.likelihood:
        return "negative log-likelihood per observation"
    loss = problem.config.training.loss
    return "log-scale mse" if loss.log else ("spread-scaled mse" if loss.scale == "std" else "mse")


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def default_out(config: Config) -> Path:
    """``runs/<config name>`` in the current directory."""
    return Path("runs") / config.run_name


def run_fit(config: Config | Problem | str | Path | None = None, *, out: str | Path | None = None, overwrite: bool = False,
            monitor=None, stop_below: float | None = None, plots: bool | None = None,
            command: list[str] | None = None, time_limit: float | None = None,
            should_stop: Callable[[], str | None] | None = None, resume: str | Path | None = None,
            n_starts: int | None = None):
    """Fit a config (or resume an interrupted run) and write its run directory; return ``(result, path)``.

    The output location is checked before any work, and the run is written to a staging directory
    first, so a failure never leaves a half-written run or damages an old one. When ``should_stop``
    interrupts the fit, a resumable checkpoint is written to the run directory (marked incomplete)
    and :class:`~ude_cli.errors.Interrupted` is raised with ``where`` naming it.
    """
    from .errors import Interrupted
    from .runs.checkpoint import load_checkpoint, save_checkpoint
    from .runs.results import run_info
    from .runs.rundir import check_target

    saved = load_checkpoint(resume) if resume is not None else None
    problem = None
    if saved is not None:
        cfg, target, overwrite = saved.config, saved.path, True
    else:
        if config is None:
            raise TypeError("run_fit needs a config (or resume)")
        if isinstance(config, Problem):
            problem, cfg = config, config.config
        else:
            cfg = config if isinstance(config, Config) else load_config(config)
        target = Path(out) if out is not None else default_out(cfg)
        check_target(target, overwrite)
    try:
        result = fit(problem or cfg, monitor=monitor, stop_below=stop_below, command=command, time_limit=time_limit,
                     should_stop=should_stop, resume=saved, n_starts=n_starts)
    except Interrupted as exc:
        assert exc.problem is not None  # attached by fit()
        info = run_info(exc.problem, seed=cfg.training.seed, command=command)
        saved_to = save_checkpoint(target, exc.problem, exc.model, exc.state, info, overwrite=overwrite)
        exc.where = str(saved_to)
        kept = f"the complete run in {target} is untouched; " if saved_to != Path(target) else ""
        exc.hint = f"{kept}a checkpoint was saved; continue with: ude fit --resume {saved_to}"
        raise
    path = result.save(target, overwrite=overwrite, plots=plots)
    return result, path
