"""Symbolic regression of learned terms: candidate libraries, samples of the network, pysindy.

A learned term (a network output ``NN[i]``) is sampled over the states the fitted trajectories
visit, and regressed on a library of candidate functions of the network's inputs with pysindy's
sequentially thresholded least squares (``SINDy.fit(Θ, x_dot=network outputs)``; Brunton,
Proctor & Kutz, PNAS 113:3932, 2016). The threshold is swept and each sparse model scored by its
BIC against the network, so the whole path is reported, not one hand-picked threshold.

The library is built here, not by pysindy: each candidate is an expression of our equation
language (:mod:`ude_cli.expressions`), parsed through its whitelist and evaluated with numpy, so
the same text goes into ``recovered.yaml``. pysindy receives the evaluated library
(``IdentityLibrary``) and does the sparse regression.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ExpressionError, did_you_mean
from ..expressions import Expression, parse_expression

#: Thresholds tried along the sparsity path (besides 0), geometrically spaced.
N_THRESHOLDS = 16


@dataclass(frozen=True)
class Feature:
    """One candidate function of the library.

    Attributes:
        text: the function in our equation language (``"x*y"``, ``"x**2"``, ``"exp(-x)"``, ``"1"``).
        slug: a short identifier for coefficient names (``"x_y"``, ``"x2"``, ``"1"``, ``"g1"``).
        expression: the parsed, checked expression.
    """

    text: str
    slug: str
    expression: Expression

    def evaluate(self, env: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Values at ``n`` samples whose variables are the arrays in ``env``."""
        value = self.expression.compile("numpy")(env)
        return np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()


@dataclass(frozen=True)
class Library:
    """The candidate functions of some variables (states and/or ``t``)."""

    variables: tuple[str, ...]
    features: tuple[Feature, ...]

    @property
    def names(self) -> list[str]:
        return [f.text for f in self.features]

    def matrix(self, env: Mapping[str, np.ndarray]) -> np.ndarray:
        """The library evaluated at samples: ``(N, F)``."""
        n = len(next(iter(env.values())))
        with np.errstate(all="ignore"):
            return np.stack([f.evaluate(env, n) for f in self.features], axis=1)


def build_library(variables: Sequence[str], degree: int = 2, functions: Sequence[str] = (),
                  include_bias: bool = True, where: str = "discover") -> Library:
    """Monomials of ``variables`` up to ``degree``, then the user's ``functions``.

    Arguments:
        variables: names the features may use (a network's inputs).
        degree: highest total degree of the monomials (0 for none but the constant).
        functions: extra candidates written in the equation language, e.g. ``"exp(-x)"``,
            ``"x/(1+x)"``; they may use only ``variables`` (and ``pi``).
        include_bias: include the constant ``1``.
        where: where the settings come from, for messages.

    Returns:
        The library, monomials first (by degree, as pysindy orders them), then the functions.

    Raises:
        ConfigError: a bad degree, or a function that does not parse, uses an unknown name or a
            network, or repeats a candidate.
    """
    if degree < 0 or degree > 6:
        raise ConfigError(f"the polynomial degree must be between 0 and 6, got {degree}", where=f"{where}.degree")
    features: list[Feature] = []
    if include_bias:
        features.append(Feature("1", "1", parse_expression("1")))
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(variables, d):
            powers = {v: combo.count(v) for v in dict.fromkeys(combo)}
            text = "*".join(v if p == 1 else f"{v}**{p}" for v, p in powers.items())
            slug = "_".join(v if p == 1 else f"{v}{p}" for v, p in powers.items())
            features.append(Feature(text, slug, parse_expression(text)))
    seen = {f.text for f in features}
    for k, text in enumerate(functions):
        here = f"{where}.functions[{k}]"
        expr = parse_expression(text, where=here)
        if expr.network_refs:
            raise ExpressionError(f"a library function cannot use a network: {expr.text!r}", where=here)
        unknown = sorted(expr.names - set(variables) - {"pi"})
        if unknown:
            raise ExpressionError(f"unknown name '{unknown[0]}' in {expr.text!r}{did_you_mean(unknown[0], variables)}; "
                                  f"the library's variables are the network's inputs: {', '.join(variables)}",
                                  where=here)
        if expr.text in seen:
            raise ConfigError(f"{expr.text!r} is already in the library", where=here)
        seen.add(expr.text)
        features.append(Feature(expr.text, f"g{k + 1}", expr))
    if not features:
        raise ConfigError("the library is empty: give a degree >= 1 or some functions", where=where)
    return Library(tuple(variables), tuple(features))


# -- samples of the learned terms -------------------------------------------------------------------

@dataclass
class TermSamples:
    """A network's outputs sampled along the fitted trajectories.

    Attributes:
        variables: variable name (state, ``t``) -> values ``(N,)``.
        targets: ``(network, output)`` -> the learned term's values ``(N,)``.
        experiment: index of the experiment of each sample ``(N,)``.
    """

    variables: dict[str, np.ndarray]
    targets: dict[tuple[str, int], np.ndarray]
    experiment: np.ndarray

    @property
    def n(self) -> int:
        return len(self.experiment)


def sample_terms(problem, model, n_points: int = 200, start: int = 0) -> TermSamples:
    """Sample every learned term on a dense time grid along every experiment's fitted trajectory.

    Arguments:
        problem: the resolved problem.
        model: the fitted model (anything with ``dense(n_points)`` and ``terms_along(t, y)`` as
            :class:`~ude_cli.fitting.model.UDEModel` has them).
        n_points: grid points per experiment.
        start: which start of a multistart to sample (the best one, usually).

    Returns:
        The samples; states the trajectories visit and the term values there.
    """
    dense = model.dense(n_points)
    cols: dict[str, list[np.ndarray]] = {s: [] for s in [*problem.states, "t"]}
    targets: dict[tuple[str, int], list[np.ndarray]] = {term: [] for term in problem.learned_terms}
    exp_index = []
    for b, (t, y) in enumerate(dense):
        terms = model.terms_along(t, y)
        for j, s in enumerate(problem.states):
            cols[s].append(y[:, start, j])
        cols["t"].append(np.asarray(t, dtype=float))
        for net, idx in targets:
            targets[(net, idx)].append(terms[net][:, start, idx])
        exp_index.append(np.full(len(t), b))
    return TermSamples(variables={k: np.concatenate(v) for k, v in cols.items()},
                       targets={k: np.concatenate(v) for k, v in targets.items()},
                       experiment=np.concatenate(exp_index))


# -- fidelity of an expression to the samples ---------------------------------------------------------

@dataclass(frozen=True)
class Fidelity:
    """How well an expression reproduces a learned term on its samples.

    Attributes:
        r2: coefficient of determination (1 is perfect).
        max_error: largest absolute difference.
        rmse: root-mean-square difference.
        relative_rmse: ``rmse`` divided by the spread (standard deviation) of the term.
    """

    r2: float
    max_error: float
    rmse: float
    relative_rmse: float

    def as_dict(self) -> dict[str, float]:
        return {"r2": self.r2, "max_error": self.max_error, "rmse": self.rmse, "relative_rmse": self.relative_rmse}


def fidelity(predicted: np.ndarray, target: np.ndarray) -> Fidelity:
    """Compare an expression's values with the learned term's values."""
    predicted = np.asarray(predicted, dtype=float)
    target = np.asarray(target, dtype=float)
    err = predicted - target
    if not np.all(np.isfinite(err)):
        return Fidelity(float("-inf"), float("inf"), float("inf"), float("inf"))
    rss = float(np.sum(err * err))
    spread = float(np.std(target))
    tss = float(np.sum((target - target.mean()) ** 2))
    rmse = float(np.sqrt(np.mean(err * err)))
    scale = spread if spread > 0 else max(float(np.sqrt(np.mean(target * target))), 1e-300)
    r2 = 1.0 - rss / tss if tss > 0 else (1.0 if rss == 0 else float("-inf"))
    return Fidelity(r2=r2, max_error=float(np.max(np.abs(err))), rmse=rmse, relative_rmse=rmse / scale)


# -- the sparsity path ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SparseFit:
    """One point of the sparsity path of one term.

    Attributes:
        threshold: the STLSQ threshold (on coefficients of unit-norm library columns).
        coefficients: one per library feature (0 where dropped).
        fidelity: how well the sparse model reproduces the samples.
        bic: Bayesian information criterion of the fit to the samples.
    """

    threshold: float
    coefficients: np.ndarray
    fidelity: Fidelity
    bic: float

    @property
    def support(self) -> tuple[int, ...]:
        return tuple(int(k) for k in np.flatnonzero(self.coefficients))


def information_criterion(rss: float, n: int, k: int, kind: str = "bic") -> float:
    """``n log(rss/n) + penalty``, the Gaussian BIC (penalty ``k log n``) or AIC (``2k``)."""
    rss = max(float(rss), 1e-300 * n)
    penalty = k * np.log(n) if kind == "bic" else 2.0 * k
    return float(n * np.log(rss / n) + penalty)


def stlsq(theta: np.ndarray, target: np.ndarray, threshold: float, names: Sequence[str]) -> np.ndarray:
    """One sparse regression with pysindy: ``SINDy(STLSQ(threshold)).fit(Θ, x_dot=target)``.

    The columns are normalised inside STLSQ, so ``threshold`` applies to coefficients of
    unit-norm columns and one scale of thresholds suits any units.

    Returns:
        The coefficients, one per column of ``theta``.
    """
    import pysindy as ps

    model = ps.SINDy(optimizer=ps.STLSQ(threshold=threshold, alpha=1e-10, normalize_columns=True, max_iter=50),
                     feature_library=ps.IdentityLibrary())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pysindy warns when every coefficient is eliminated
        model.fit(theta, t=1.0, x_dot=target[:, None], feature_names=list(names))
    return np.asarray(model.coefficients(), dtype=float)[0]


def sparsity_path(theta: np.ndarray, target: np.ndarray, names: Sequence[str],
                  n_thresholds: int = N_THRESHOLDS, criterion: str = "bic") -> list[SparseFit]:
    """Sweep the STLSQ threshold from 0 (least squares on the whole library) up to the point
    where every term is dropped; score each sparse model against the samples.

    Arguments:
        theta: the library evaluated at the samples ``(N, F)``.
        target: the learned term at the samples ``(N,)``.
        names: the features' texts.
        n_thresholds: thresholds tried besides 0.
        criterion: ``"bic"`` or ``"aic"``.

    Returns:
        The distinct sparse models found, densest first.
    """
    n = len(target)
    ok = np.all(np.isfinite(theta), axis=0)
    norms = np.linalg.norm(theta, axis=0)
    usable = ok & (norms > 0)
    full = np.zeros(theta.shape[1])
    if usable.any():
        full[usable] = np.linalg.lstsq(theta[:, usable], target, rcond=None)[0]
    top = float(np.max(np.abs(full * norms)[usable])) if usable.any() else 1.0
    thresholds = [0.0, *np.geomspace(top * 1e-4, top * 1.01, n_thresholds)] if top > 0 else [0.0]
    # residuals below round-off of the target are all "exact": the sparser model must win the tie
    floor = n * (1e-9 * max(float(np.sqrt(np.mean(target * target))), 1e-300)) ** 2
    path: list[SparseFit] = []
    seen: set[tuple[int, ...]] = set()
    for thr in thresholds:
        coef = np.zeros(theta.shape[1])
        if usable.any():
            coef[usable] = stlsq(theta[:, usable], target, thr, [names[int(k)] for k in np.flatnonzero(usable)])
        support = tuple(int(k) for k in np.flatnonzero(coef))
        if support in seen:
            continue
        seen.add(support)
        pred = theta[:, usable] @ coef[usable] if usable.any() else np.zeros(n)
        fid = fidelity(pred, target)
        rss = max(float(np.sum((pred - target) ** 2)), floor)
        path.append(SparseFit(threshold=float(thr), coefficients=coef, fidelity=fid,
                              bic=information_criterion(rss, n, len(support), criterion)))
    return path


def best_on_path(path: Sequence[SparseFit]) -> SparseFit:
    """The sparse model with the lowest information criterion."""
    return min(path, key=lambda s: s.bic)


def format_terms(coefficients: Sequence[float], names: Sequence[str], precision: int = 4) -> str:
    """``"-0.9*x*y + 1.2*x"`` for printing (``"0"`` when empty)."""
    parts = []
    for c, name in zip(coefficients, names, strict=True):
        if c == 0:
            continue
        num = f"{abs(c):.{precision}g}"
        body = num if name == "1" else f"{num}*{name}"
        parts.append(("- " if c < 0 else "+ ") + body)
    if not parts:
        return "0"
    text = " ".join(parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]
