"""The fit-quality check: is the training loss near what the data's noise allows, and are the residuals noise?

Per observable, where the objective compares it (log scale for a log loss or log-normal noise, divided by
the observable's spread for a scaled loss, else data units):

- **noise level**: a difference-based variance estimate, pooled over the experiments: each window of
  four consecutive training points in time is combined with the unit-norm weights that cancel every
  quadratic on those times, ``e_i = w_i . y[i:i+4]``, and ``sigma^2 = mean(e_i^2)``. For independent noise
  it is unbiased whatever the spacing; a smooth signal adds only through its third derivative. With
  weights that cancel only straight lines (three points) it is the estimator of Gasser, Sroka and
  Jennen-Steinmetz (1986, Biometrika 73: 625-633), which the curvature of an oscillation inflates: on
  64 time units of the Lotka-Volterra sample with 2 % noise it gives 0.0021 and 0.0095 for true noise
  variances of 0.00031 and 0.0016, the four-point version 0.00071 and 0.0031. It needs no model and no
  tuning, and it errs high (it never calls a fit poor for want of noise). A smoothing spline's residuals
  (GCV) were tried first and rejected: on the 21-point Lotka-Volterra sample the spline interpolates the
  prey (residual variance 6e-10 against a true noise variance of 3.9e-5), which would call every good
  fit poor. Where no experiment has three training times of an observable (doses measured once, steady
  states), replicated cells (experiments with the same covariates at one time with the same prediction) give
  the pure error of a lack-of-fit test instead; with neither, there is no noise level, and the floor below
  decides (the line says so). When the noise model gives sigma as a number (normal noise of constant sd,
  log-normal noise), sigma^2 is the noise level instead. An estimated sigma is not used: it is the fit's own residual
  spread, so it cannot say whether the fit is poor.
- **floor**: the larger of the noise level and ``REL_FLOOR`` times the variance of the state's training
  data: on noiseless data a fit that leaves a ten-thousandth of the variance unexplained is not poor.
- **runs test** (Wald-Wolfowitz, :func:`ude_cli.discovery.refit.runs_test`) on the signs of the training residuals in
  time order, pooled over the experiments: too few runs mean the residuals are systematic.

The fit is poor when its MSE over all training cells exceeds ``POOR_RATIO`` times the floor averaged the
same way. Observables whose own MSE is that far above their floor are named, and so are observables with
systematic residuals. The bundled configs' ratios are 0.03-5.4 (the highest: pooled fits of trees or
subjects that differ, 5.4 and 3.8); failed fits are far above (the spiral with the schedule before issue
12: 200). Poor is not an error: ``ude fit`` says so in one line (``--strict`` makes it exit 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: where a noise level comes from without three training times in any experiment: replicated cells
REPLICATES = ("replicates (training cells of experiments with the same covariates, at one time, with the same "
              "prediction; pooled: pure error)")
#: why an observable has no noise level: the data give none, and neither does the noise model
NO_NOISE_LEVEL = ("none: no experiment has 3 training times (a difference estimate needs them) and no cell is "
                  "replicated")
#: A fit whose MSE is above this multiple of its floor (noise level, or REL_FLOOR x variance) is poor: twice
#: the highest ratio of a bundled config (5.4, the pooled orange-tree fit).
POOR_RATIO = 10.0
#: a fit this far inside the difference-based noise estimate means the estimate holds signal (sparse sampling
#: of a curved response, such as doses' peaks), or that the fit follows the noise (a large network): either way
#: the estimate is no yardstick of a poor fit
OVERSTATED = 0.25
#: Unexplained variance below this fraction of a state's variance is never poor (noiseless data).
REL_FLOOR = 1e-4
#: Degree of the polynomials the noise estimator's differences annihilate (1: Gasser et al.'s estimator).
ORDER = 2
#: Runs-test p-value below which residuals count as systematic.
SYSTEMATIC_P = 0.01

METHOD = ("noise: difference-based variance of the training data (4-point differences that cancel quadratics), floored at "
          f"{REL_FLOOR:g} x each state's variance; poor: MSE > {POOR_RATIO:g} x that; systematic: runs test "
          f"p < {SYSTEMATIC_P:g}")


def difference_variance(t: np.ndarray, y: np.ndarray, order: int = ORDER) -> tuple[float, int]:
    """``(sum of e_i^2, number of windows)`` of the difference-based noise estimator on one series (``t``
    increasing, finite values only): ``e_i = w_i . y[i : i + order + 2]`` with the unit-norm weights ``w_i`` that
    annihilate every polynomial of degree ``order`` on those times, so that ``E[e_i^2] = sigma^2`` for
    independent noise and a smooth signal contributes only through its derivative of degree ``order + 1``.
    Series too short for ``order`` use a lower one; ``(0, 0)`` with fewer than three points."""
    order = min(order, len(t) - 2)
    if order < 1:
        return 0.0, 0
    k = order + 2
    idx = np.arange(len(t) - k + 1)[:, None] + np.arange(k)
    tw = t[idx]
    span = tw[:, -1:] - tw[:, :1]
    z = (tw - tw.mean(axis=1, keepdims=True)) / np.where(span > 0, span, 1.0)  # conditioning only
    vandermonde = np.stack([z ** p for p in range(order + 1)], axis=1)  # (windows, order + 1, k)
    w = np.linalg.svd(vandermonde)[2][:, -1, :]  # the null vector of each window: unit norm
    e = np.sum(w * y[idx], axis=1)
    return float(np.sum(e * e)), len(e)


def assess(problem, predictions, loss: float | None, *, starts: int = 1, stages: list[dict] | None = None,
           jump_times: dict[str, list[float]] | None = None) -> dict:
    """The fit-quality record of a fit (``metrics.json``'s ``fit_quality``).

    Arguments:
        problem: the resolved problem (data, loss settings).
        predictions: the prediction table of the reported start (``experiment, time, split,
            <state>_observed, <state>_predicted``).
        loss: the reported training loss.
        starts: the starts fitted (for the advice).
        stages: the stages that ran (``metrics.json``'s ``stages``; for the advice).
        jump_times: per experiment, the times of the jumps its conditions (model.events' ``when``) made at the
            fit (:meth:`~ude_cli.fitting.model.UDEModel.jump_times`): the noise estimate is cut there too.
    """
    from ..discovery.refit import runs_test

    ds = problem.dataset
    _, spread = ds.observable_stats()
    #: each experiment's covariates (constants, initial values read from columns): replicates share them
    setting = {e.name: tuple(sorted((k, float(v)) for k, v in e.covariates.items())) for e in ds.experiments}
    per: dict[str, dict] = {}
    total_sq = total_noise = total_count = 0.0
    train = predictions[predictions["split"] == "train"]
    for c, o in enumerate(ds.observables):
        space, known = _space_of(problem, o)
        if f"{o}_predicted" not in train:
            continue
        sq = count = noise_sum = triples = 0.0
        values, sequences = [], []
        zero: dict[str, int] = {}  # experiment -> observed times whose prediction is at the log floor
        cells: list[tuple] = []  # (the experiment's covariates, time, prediction, observation) of every training cell
        for name, rows in train.groupby("experiment", sort=False):
            rows = rows.sort_values("time")
            obs, pred = rows[f"{o}_observed"].to_numpy(float), rows[f"{o}_predicted"].to_numpy(float)
            ok = np.isfinite(obs)
            t, obs, pred = rows["time"].to_numpy(float)[ok], obs[ok], pred[ok]
            if len(obs) == 0:
                continue
            if space == "log":
                from ..likelihood.objective import LOG_FLOOR

                floored = int(np.sum(pred <= LOG_FLOOR * max(spread[c], 1e-300)))
                if floored:
                    zero[str(name)] = floored
            obs, pred = _transform(obs, pred, space, spread[c])
            r = obs - pred
            sq += float(np.sum(r * r))
            count += len(r)
            for piece in _between_jumps(problem, str(name), t, (jump_times or {}).get(str(name), ())):
                n_sum, n_tri = difference_variance(t[piece], obs[piece])
                noise_sum += n_sum
                triples += n_tri
            values.append(obs)
            sequences.append(r)
            cells += [(setting.get(str(name), ()), ti, pi, oi) for ti, pi, oi in zip(t, pred, obs, strict=True)]
        if count == 0:
            continue
        mse = sq / count
        variance = float(np.var(np.concatenate(values)))
        noise_from = "the noise model's given sigma" if known is not None else "differences of the data"
        noise = known if known is not None else (noise_sum / triples if triples else math.nan)
        if known is None and not triples:  # one or two times per experiment (measured at steady state, doses)
            pure, dof = replicate_variance(cells)
            noise, noise_from = (pure / dof, REPLICATES) if dof else (math.nan, NO_NOISE_LEVEL)
        z, p = runs_test(sequences)
        floor = max(noise if math.isfinite(noise) else 0.0, REL_FLOOR * variance)
        ratio = mse / floor if floor > 0 else (0.0 if mse == 0 else math.inf)
        per[o] = {"mse": mse, "space": space, "noise": _num(noise), "noise_from": noise_from,
                  "variance": variance, "floor": floor, "ratio": _num(ratio),
                  "runs_z": z, "runs_p": p, "systematic": bool(p < SYSTEMATIC_P),
                  "far": bool(not math.isfinite(ratio) or ratio > POOR_RATIO), "zero_predictions": zero}
        total_sq += sq
        total_noise += floor * count
        total_count += count
    noise_level = total_noise / total_count if total_count else None
    mse_all = total_sq / total_count if total_count else None
    ratio_all = (mse_all / noise_level if noise_level else math.inf) if mse_all is not None else None
    zeros = {o: q["zero_predictions"] for o, q in per.items() if q["zero_predictions"]}
    poor = bool(zeros) or (ratio_all is not None and (not math.isfinite(ratio_all) or ratio_all > POOR_RATIO))
    record = {"poor": bool(poor), "loss": loss, "mse": mse_all, "noise_level": noise_level,
              "ratio": _num(ratio_all) if ratio_all is not None else None,
              "far_observables": [s for s, q in per.items() if q["far"]],
              "systematic_observables": [s for s, q in per.items() if q["systematic"]], "per_observable": per, "method": METHOD}
    record["zero_predictions"] = zeros
    record["advice"] = (_zero_text(zeros) if zeros else advice(problem, starts, stages)) if poor else None
    record["line"] = quality_line(record, problem)
    return record


def _zero_text(zeros: dict[str, dict[str, int]]) -> str:
    """What a prediction of 0 under log-scale noise means: the llh there is not the model's (log 0 is -inf)."""
    parts = []
    for o, per in zeros.items():
        where = ", ".join(f"{n} in experiment '{e}'" for e, n in list(per.items())[:3]) + (
            f" and {len(per) - 3} more experiments" if len(per) > 3 else "")
        parts.append(f"{o}'s prediction is 0 (below the log floor) at observed times: {where}")
    return ("; ".join(parts) + ": under log-normal (or log-Laplace) noise an observation cannot be 0 there, and the "
            "llh is floored, not the model's; is a dose or an initial value missing for those experiments?")


def _between_jumps(problem, experiment: str, t: np.ndarray, triggered: Sequence[float] = ()) -> list[slice]:
    """The runs of ``t`` (increasing) between the states' jumps in ``experiment`` (a jump is no smooth signal to
    difference): those at given times (model.events; an observation at a jump's time goes with the states it sees:
    after the jump, or before it with ``observed: before``) and ``triggered``, the times of those its conditions
    made at the fit; one run of all of ``t`` without jumps."""
    from .events import before_times, schedule

    experiment_ = next((e for e in problem.dataset.experiments if str(e.name) == experiment), None)
    if not problem.events or experiment_ is None:
        return [slice(0, len(t))]
    jumps = schedule(problem.events, experiment_)
    before = before_times(problem.events, jumps)
    cuts = sorted({int(np.searchsorted(t, tau, side="right" if tau in before else "left")) for tau, _ in jumps}
                  | {int(np.searchsorted(t, tau)) for tau in triggered})
    edges = [0, *(c for c in cuts if 0 < c < len(t)), len(t)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def advice(problem, starts: int, stages: list[dict] | None) -> str:
    """What to try after a poor fit, from what this fit did."""
    from .collocation import applicable

    tries = ["several starts (--starts 8, or training.starts: auto)" if starts == 1
             else f"more starts than {starts} (--starts {2 * starts})"]
    ran_collocation = any(s.get("objective") == "collocation" for s in stages or [])
    reason = applicable(problem)
    if not ran_collocation and reason is None:
        tries.append("the collocation warm start (training.warm_start: auto)")
    elif not ran_collocation:
        tries.append(f"a longer schedule (training.stages; no collocation warm start was possible: {reason})")
    else:
        tries.append("more iterations (training.stages)")
    tries.append("a larger network or another model" if problem.networks else "another model (its equations)")
    return "try " + ", ".join(tries[:-1]) + ", or " + tries[-1]


def replicate_variance(cells: list[tuple]) -> tuple[float, int]:
    """``(sum of squares, degrees of freedom)`` of the observations about their means in groups of replicated
    cells: experiments with the same covariates, at the same time, with the same prediction (to 1e-9, relative:
    the same learned values too). The pure error of a lack-of-fit test: the noise whatever the model."""
    groups: dict[tuple, list[float]] = {}
    for setting, t, pred, obs in cells:
        key = (setting, round(float(t), 9), float(f"{pred:.9e}"))
        groups.setdefault(key, []).append(float(obs))
    total, dof = 0.0, 0
    for values in groups.values():
        if len(values) > 1:
            v = np.asarray(values)
            total += float(np.sum((v - v.mean()) ** 2))
            dof += len(v) - 1
    return total, dof


def quality_line(record: dict, problem) -> str:
    """One line: ``fit is poor: ...`` with what to try, or ``fit quality: ...``."""
    spaces = {q["space"] for q in record["per_observable"].values()}
    kind = {frozenset({"data"}): "mse", frozenset({"log"}): "log-scale mse",
            frozenset({"scaled"}): "spread-scaled mse"}.get(frozenset(spaces), "mse (log scale for log-normal noise)")
    noise, ratio = record["noise_level"], record["ratio"]
    head = f"training {kind} {_fmt(record['mse'])}"
    if noise is not None:
        sources = {q["noise_from"] for q in record["per_observable"].values()}
        what = ("the noise level the noise model gives" if sources == {"the noise model's given sigma"} else
                f"{REL_FLOOR:g} of the data's variance (no noise estimate: {NO_NOISE_LEVEL[6:]})"
                if sources == {NO_NOISE_LEVEL} else "an estimated noise level")
        head += f" against {what} of {_fmt(noise)}" + (f" ({ratio:.2g}x)" if ratio is not None else "")
    def far_text(s: str) -> str:
        q = record["per_observable"][s]
        if q["ratio"] is None:
            return s
        floor = f" the {REL_FLOOR:g}-of-variance floor: no noise estimate" if q["noise_from"] == NO_NOISE_LEVEL else ""
        return f"{s} ({q['ratio']:.2g}x{floor})"

    far = [far_text(s) for s in record["far_observables"]]
    if far:
        head += f"; far above it in {', '.join(far)}"
    systematic = record["systematic_observables"]
    if systematic:
        head += f"; residuals are systematic in {', '.join(systematic)}"
    over = [s for s, q in record["per_observable"].items() if q["noise_from"] == "differences of the data"
            and q["ratio"] is not None and q["ratio"] < OVERSTATED]
    if over:
        head += (f"; the data's differences overstate the noise in {', '.join(over)} (the fit is far inside them: "
                 f"the signal curves between the sampled times, or the fit follows the noise), so this check "
                 f"cannot tell a poor fit there")
    if not record["poor"]:
        return f"fit quality: {head}"
    return f"fit is poor: {head}; {record['advice']}"


def _space_of(problem, name: str) -> tuple[str, float | None]:
    """Where an observable's residuals are judged (``data``, ``log``, ``scaled``: as the objective compares
    them) and its known noise variance there when the noise model gives sigma as a number (normal noise of
    constant sd, log-normal noise), else None. An estimated sigma is not used: it is the fit's own residual
    spread (sigma^2 = RSS/n when profiled), so it cannot tell whether the fit is poor."""
    obs = (getattr(problem, "observables", None) or {}).get(name)
    noise = getattr(obs, "noise", None)
    if noise is None:
        spec = problem.config.training.loss
        return ("log" if spec.log else "scaled" if spec.scale == "std" else "data"), None
    space = "log" if noise.distribution in ("lognormal", "loglaplace") else "data"
    known = None
    if noise.distribution in ("normal", "lognormal") and noise.error == "constant" and noise.sigma.fixed:
        known = float(noise.sigma.init) ** 2
    return space, known


def _transform(obs: np.ndarray, pred: np.ndarray, space: str, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Observations and predictions where the objective compares them."""
    from ..likelihood.objective import LOG_FLOOR

    if space == "log":
        floor = LOG_FLOOR * max(spread, 1e-300)
        return np.log(np.maximum(obs, floor)), np.log(np.maximum(pred, floor))
    if space == "scaled":
        return obs / spread, pred / spread
    return obs, pred


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
