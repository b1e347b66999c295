"""Confidence and prediction bands of the fitted observables (and confidence bands of the unobserved states) at
the data's times and along the dense grid of the fit's curves, by sampling.

The learned values are drawn from their Wald distribution on the unconstrained scale (``log k`` for a
positive ``k``): normal around the fit with the covariance of :mod:`.hessian`. With the network profiled
out, each draw moves the network weights by their linear response ``dw = R du`` (the network re-fitted to
first order), otherwise the network stays as fitted. Each draw is simulated; the quantiles of its predictions
give the *confidence band* of the prediction (``{observable}_ci_lower/_upper``), and the quantiles of
observations drawn around each prediction from the noise model (the fit's sigma for squared errors) the
*prediction band* (``_pi_lower/_pi_upper``), where a new observation falls with the band's probability.
The same draws are simulated on the dense grid of the fitted curves too (``model.dense()``), so the figures
draw the bands computed between the data's times, not lines joining the bands at the data's times (which cut
the corner of a curve that rises fast between two of them). A value the curvature cannot pin (unbounded
variance) is held at the fit; :func:`bands` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..engines.torchdiffeq import SolverError

#: the band columns' suffixes (predictions.csv, trajectory.csv): confidence band, then prediction band
SUFFIXES = ("ci_lower", "ci_upper", "pi_lower", "pi_upper")
#: observations drawn at each time of a dense grid for its prediction band, in all (several around each draw)
OBSERVATION_SAMPLES = 4000
#: values drawn at once for them (a block of times at a time): 32 MB of float64
BLOCK_VALUES = 4_000_000


@dataclass
class Bands:
    """What :func:`bands` computes; every array ``None`` when there are no bands (``how`` says why)."""

    #: per group: ``(T, Bg, n_observables, 4)`` (confidence lower, upper, prediction lower, upper) at its times
    observables: list[np.ndarray] | None
    #: a sentence saying how they were made, or why there are none
    how: str
    #: per group: ``(T, Bg, n_states, 2)``, the states' confidence bands from the same draws (an unobserved
    #: state's: what the model says about it given the data, as far as the Wald distribution goes)
    states: list[np.ndarray] | None = None
    #: per experiment, along ``model.dense()``'s grid: observable -> ``(T, 4)`` and state -> ``(T, 2)``
    curves: list[dict[str, np.ndarray]] | None = None


def bands(problem, uncertainty, *, level: float, samples: int, seed: int) -> Bands:
    """The confidence and prediction bands of ``samples`` draws of the learned values (see the module)."""
    from ..likelihood.objective import Objective

    if uncertainty is None or uncertainty.sampler is None:
        return Bands(None, "no bands: no Wald distribution of the learned values")
    model, _, wald = uncertainty.sampler
    if wald.cov_u is None or not len(wald.targets):
        return Bands(None, "no bands: nothing learned but network weights")
    objective = Objective(model, problem.config.training.loss)
    ts = wald.targets
    u0 = np.array([t.get_u() for t in ts])
    cov = 0.5 * (wald.cov_u + wald.cov_u.T)
    w, V = np.linalg.eigh(cov)
    root = V * np.sqrt(np.clip(w, 0.0, None))
    nets = list(model.network_parameters())
    w0 = [p.detach().clone() for p in nets]
    response = wald.network_response
    rng = np.random.default_rng(seed)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    means: list[list[np.ndarray]] = []
    noisy: list[list[np.ndarray]] = []
    states: list[list[np.ndarray]] = []
    accepted: list[np.ndarray] = []  # the draws that simulated, for the dense grid
    failed = 0
    fit_sigma = math.nan if objective.likelihood else objective.noise_estimates(model(), 0)["sigma"]
    try:
        for _ in range(samples):
            du = root @ rng.standard_normal(len(u0))
            with torch.no_grad():
                for t, u in zip(ts, u0 + du, strict=True):
                    t.set_u(float(u))
                if response is not None:
                    dw = response @ du
                    k = 0
                    for p, p0 in zip(nets, w0, strict=True):
                        m = p.numel()
                        p.copy_(p0 + torch.as_tensor(dw[k:k + m], dtype=p.dtype).reshape(p.shape))
                        k += m
                try:
                    sols = model()
                    preds = [p[:, 0].cpu().numpy() for p in objective.observed(sols)]  # (T, Bg, n)
                except SolverError:
                    failed += 1
                    continue
            if not all(np.isfinite(p).all() for p in preds):
                failed += 1
                continue
            accepted.append(du)
            noise = [{r: v[0, 0].detach().cpu().numpy() for r, v in roles.items()} for roles in objective.noise_values()]
            draws = [np.stack(draw_observations(problem, objective, [pred[..., c] for c in objective.columns], noise,
                                                rng, fit_sigma), -1) for pred in preds]
            means.append([p[..., objective.columns] for p in preds])
            noisy.append(draws)
            states.append([x[:, 0].detach().cpu().numpy() for x in sols])  # (T, Bg, n_states)
    finally:
        model.load_state_dict(base)
    if len(means) < max(20, samples // 2):
        why = " (values the data do not identify widen the Wald distribution)" if uncertainty.not_identifiable() else ""
        return Bands(None, f"no bands: {failed} of {samples} draws of the learned values could not be simulated{why}")
    a = (1 - level) / 2
    out, state_bands = [], []
    for k in range(len(means[0])):
        m = np.stack([s[k] for s in means])
        y = np.stack([s[k] for s in noisy])
        out.append(np.stack([np.quantile(m, a, axis=0), np.quantile(m, 1 - a, axis=0),
                             np.quantile(y, a, axis=0), np.quantile(y, 1 - a, axis=0)], -1))
        x = np.stack([s[k] for s in states])
        state_bands.append(np.stack([np.quantile(x, a, axis=0), np.quantile(x, 1 - a, axis=0)], -1))
    curves, why_not = _along_dense(problem, model, wald, np.array(accepted), level, seed, fit_sigma)
    held = [i.name for i in wald.intervals if not np.isfinite(i.se)]  # (their undetermined directions)
    net = f" (network {wald.network})" if wald.network != "none" else ""
    how = (f"{len(means)} draws of the learned values from their Wald distribution{net}"
           + (f", {failed} draws that could not be simulated left out" if failed else "")
           + (f"; the directions the data do not determine are held at the fit ({', '.join(held)}: unbounded "
              f"variance), the combinations of them they determine vary" if held else "")
           + "; prediction bands add the noise model's scatter"
           + ("; the figures draw the same draws' bands along the curves' dense grid" if curves is not None
              else f"; none along the curves ({why_not}): the fit figure joins the bands at the data times, the "
                   f"one-panel-per-experiment figure draws none"))
    return Bands(out, how, state_bands, curves)


def _along_dense(problem, model, wald, draws: np.ndarray, level: float, seed: int, fit_sigma: float
                 ) -> tuple[list[dict[str, np.ndarray]] | None, str]:
    """The bands of ``draws`` (the accepted ``du``) along ``model.dense()``'s grid, from one batched solve of the
    draws (:func:`sampled_model`); None and why when that solve fails (one draw the solver cannot take stops a
    batch, where the data times' draws are solved one by one)."""
    from ..likelihood.objective import Objective

    many = sampled_model(problem, model, 0, wald, len(draws), seed, draws=draws)
    if model.compiled is not None and model.compiled.method == "bdf" and many.compiled is None:
        # stiff, and the batch too large to compile: torchdiffeq's dopri5 would crawl through it (Boehm: minutes)
        return None, "the fit is solved by bdf, which the batch of draws cannot use (too large to compile)"
    try:
        dense = many.dense()
    except SolverError as exc:
        return None, f"the batched solve of the draws on the dense grid failed: {exc}"
    objective = Objective(many, problem.config.training.loss)
    rng = np.random.default_rng([seed, 1])
    a = (1 - level) / 2
    out = []
    for (_, x), m in zip(dense, objective.along(dense), strict=True):  # (T, S, n_states), (T, S, n_observables)
        x, m = x[:, 1:], m[:, 1:]  # start 0 is the fit
        if not (np.isfinite(x).all() and np.isfinite(m).all()):
            return None, "a draw is not finite on the dense grid"
        y = prediction_quantiles(problem, objective, m, rng, fit_sigma, level)  # (T, n_observables, 2)
        along = {name: np.stack([np.quantile(m[..., i], a, axis=1), np.quantile(m[..., i], 1 - a, axis=1),
                                 y[:, i, 0], y[:, i, 1]], -1) for i, name in enumerate(objective.names)}
        for j, state in enumerate(problem.states):
            if state not in along:  # a state no column observes directly: confidence only
                along[state] = np.stack([np.quantile(x[..., j], a, axis=1), np.quantile(x[..., j], 1 - a, axis=1)], -1)
        out.append(along)
    return out, ""


def prediction_quantiles(problem, objective, m: np.ndarray, rng: np.random.Generator, fit_sigma: float,
                         level: float, nan: bool = False) -> np.ndarray:
    """``(T, n_observables, 2)``: the central ``level`` range of observations drawn from the noise model around the
    predictions ``m (T, S - 1, n_observables)`` of starts 1.. of ``objective``'s model (the draws; each with its own
    noise values). Several observations per draw and time, about :data:`OBSERVATION_SAMPLES` in all, so that a
    band's edge does not jitter from one time of a dense grid to the next; drawn a block of times at a time, so that
    memory stays bounded however many draws. ``nan``: predictions may be NaN (left out of the quantiles)."""
    T, draws, n = m.shape
    k = max(1, math.ceil(OBSERVATION_SAMPLES / max(draws, 1)))
    noise = [{r: v[1:, 0].detach().cpu().numpy()[None, None, :] for r, v in roles.items()}
             for roles in objective.noise_values()]
    quantile = np.nanquantile if nan else np.quantile
    a = (1 - level) / 2
    out = np.empty((T, n, 2))
    block = max(1, BLOCK_VALUES // max(k * draws * n, 1))
    for start in range(0, T, block):
        part = m[start:start + block]
        mus = [np.repeat(part[None, ..., i], k, 0) for i in range(n)]  # (k, times, draws)
        y = np.stack(draw_observations(problem, objective, mus, noise, rng, fit_sigma), -1)
        out[start:start + block, :, 0] = quantile(y, a, axis=(0, 2))
        out[start:start + block, :, 1] = quantile(y, 1 - a, axis=(0, 2))
    return out


def draw_observations(problem, objective, mus: list[np.ndarray], noise: list[dict[str, np.ndarray]],
                      rng: np.random.Generator, fit_sigma: float) -> list[np.ndarray]:
    """Per observable: observations drawn around its predictions ``mus[i]`` from its noise model with the values
    ``noise[i]`` (role -> array broadcasting against the prediction); without a noise model, normal (log-normal
    for a log loss) with the fit's maximum-likelihood sigma (times the observable's spread for ``scaled``)."""
    out = []
    for i, name in enumerate(objective.names):
        mu = mus[i]
        model = objective.noise[i]
        if problem.observables[name].noise is not None and model is not None:
            out.append(model.sample(np.maximum(mu, 1e-300) if model.positive else mu, noise[i], rng))
            continue
        spec = objective.spec
        sd = fit_sigma * (objective.spread[objective.columns[i]] if spec.scale == "std" else 1.0)  # (layout)
        z = rng.standard_normal(np.shape(mu))
        out.append(np.exp(np.log(np.maximum(mu, 1e-300)) + sd * z) if spec.log else mu + sd * z)
    return out


def sampled_model(problem, fitted, start: int, wald, samples: int, seed: int, draws: np.ndarray | None = None):
    """A model whose ``samples + 1`` starts are the fit (start 0) and ``samples`` draws of the learned values from
    their Wald distribution (the network moved by its linear response when profiled out): one batched solve
    gives every draw's trajectory (``ude predict``'s bands). ``draws``: the moves ``du`` of the unconstrained
    values (rows, in ``wald.targets``' order) instead of drawing them."""
    from ..fitting.model import UDEModel
    from .function import targets as targets_of

    S = samples + 1
    many = UDEModel(problem, n_starts=S)
    source, target = fitted.state_dict(), many.state_dict()
    new = {}
    for key, value in target.items():
        v = source[key]
        if v.shape == value.shape:  # no start dimension (a per-experiment buffer)
            new[key] = v.clone()
        else:
            one = v[start:start + 1]
            new[key] = one.expand(S, *one.shape[1:]).clone()
    many.load_state_dict(new)
    fitted_engine, engine = fitted.compiled, many.compiled
    if fitted_engine is not None and fitted_engine.method == "bdf" and engine is not None and engine.method != "bdf":
        engine.switch_to_stiff("as the fitted model (auto chose bdf for it): dopri5 would crawl through the draws")
    ts = targets_of(many, problem)
    by_name = {t.name: t for t in ts}
    order = [by_name[t.name] for t in wald.targets]
    cov = 0.5 * (wald.cov_u + wald.cov_u.T)
    w, V = np.linalg.eigh(cov)
    root = V * np.sqrt(np.clip(w, 0.0, None))
    rng = np.random.default_rng(seed)
    nets = list(many.network_parameters())
    with torch.no_grad():
        for s in range(1, S):
            du = draws[s - 1] if draws is not None else root @ rng.standard_normal(len(order))
            for t, d in zip(order, du, strict=True):
                index = (s, *t.index[1:])
                t.tensor[index] = t.tensor[index] + float(d)
            if wald.network_response is not None:
                dw = wald.network_response @ du
                k = 0
                for p in nets:
                    m = p[s].numel()
                    p[s] += torch.as_tensor(dw[k:k + m], dtype=p.dtype).reshape(p[s].shape)
                    k += m
    return many


def band_columns(frame, problem, groups, band_arrays: list[np.ndarray], state_arrays: list[np.ndarray] | None = None):
    """predictions.csv with ``{observable}_ci_lower/_ci_upper/_pi_lower/_pi_upper`` per row, and
    ``{state}_ci_lower/_ci_upper`` for each state no column observes directly (no prediction band: nothing
    measures it)."""
    frame = frame.copy()
    names = list(problem.dataset.observables)

    def rows(arrays: list[np.ndarray]) -> np.ndarray:
        per_experiment: dict[int, np.ndarray] = {}
        for k, g in enumerate(groups):
            for i, b in enumerate(g.experiments):
                per_experiment[b] = arrays[k][g.positions[i], i]  # (n_times, n_columns, n_bounds)
        return np.concatenate([per_experiment[b] for b in range(len(problem.dataset.experiments))])

    stacked = rows(band_arrays)
    if len(stacked) != len(frame):
        return frame
    for c, name in enumerate(names):
        for j, suffix in enumerate(SUFFIXES):
            frame[f"{name}_{suffix}"] = stacked[:, c, j]
    if state_arrays is not None:
        per_state = rows(state_arrays)
        for j, state in enumerate(problem.states):
            if state not in names and f"{state}_predicted" in frame:
                frame[f"{state}_ci_lower"], frame[f"{state}_ci_upper"] = per_state[:, j, 0], per_state[:, j, 1]
    return frame


__all__ = ["Bands", "band_columns", "bands"]
