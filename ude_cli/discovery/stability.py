"""How much of a discovery the data support: Wald intervals of the refitted coefficients, stability
selection over resampled observation times, and a cross-validation over time blocks; all from the
linearisation of each candidate's refit at its optimum (Gauss–Newton), so that none needs another
ODE solve.

Each candidate's refit (:func:`ude_cli.discovery.refit.refit`) ends with its training residuals ``r``
(``m`` cells: the objective's weighted, or with a noise model its deviance, residuals) and their Jacobian
``J`` with respect to the ``k`` fitted values. Near the optimum the residuals of the values ``x + d`` are
``r + J d``, so:

- **Wald intervals** ("wald (Gauss-Newton at the refit)"): the covariance of the fitted values is
  ``s^2 (J^T J)^-1``, with ``s^2 = RSS / (m - k)`` for a squared-error loss (the noise level estimated
  from the refit's residuals; quantile of Student's t with ``m - k`` degrees of freedom) and ``s = 1`` with
  a noise model (deviance residuals are already scaled by the noise model; normal quantile); each
  variance is the larger of that one and the sandwich's (HC3), which stays valid when the noise model is
  wrong about how the variance differs between observations (multiplicative noise under a squared-error
  loss: a few large values then carry most of the noise, and a spurious term fitted to them looks
  significant under the model-based covariance alone).
- **A refit on a subset** ``I`` of the cells is one Gauss–Newton step: ``d = argmin |r_I + J_I d|``; its
  residual sum of squares ``|r_I + J_I d|^2`` gives the subset's information criterion. Stability
  selection (Meinshausen & Bühlmann, JRSS B 72:417, 2010; complementary pairs, Shah & Samworth, JRSS B
  75:55, 2013): on each of ``resamples`` halves of the observation times (and their complements), the
  candidate of lowest criterion wins; a library term's *selection frequency* is the share of halves whose
  winner has it. Terms the noise put in (a term that only a few observations ask for) win few halves;
  terms the data need win nearly all.
- **Cross-validation over time blocks**: each block of consecutive observation times left out in turn,
  the candidate refitted (one Gauss–Newton step) to the others, the left-out residuals predicted
  (``r_out + J_out d``): the held-out loss, in the objective's units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: How the intervals are computed (written into discovery.json and the report).
INTERVAL_METHOD = ("wald (Gauss-Newton at the refit; the wider of the model-based covariance, scaled by the noise "
                   "model or by RSS/(n - k) for a squared-error loss, and the heteroscedasticity-robust sandwich, HC3)")
#: How the cross-validation over time blocks refits.
CV_METHOD = "time blocks left out in turn, the refit to the others linearised (one Gauss-Newton step)"


@dataclass(frozen=True)
class Interval:
    """A Wald interval of one fitted value."""

    name: str
    value: float
    se: float
    lower: float
    upper: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.lower > 0 or self.upper < 0

    def as_dict(self) -> dict:
        def finite(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"value": self.value, "se": finite(self.se), "lower": finite(self.lower), "upper": finite(self.upper),
                "level": self.level, "excludes_zero": self.excludes_zero, "method": INTERVAL_METHOD}

    def text(self, digits: int = 4) -> str:
        if not math.isfinite(self.se):
            return f"{self.value:.{digits}g} (interval unbounded: not identifiable from these data)"
        return f"{self.value:.{digits}g} [{self.lower:.{digits}g}, {self.upper:.{digits}g}]"


def _quantile(level: float, dof: int | None) -> float:
    from scipy import stats

    q = 0.5 + level / 2
    return float(stats.norm.ppf(q) if dof is None else stats.t.ppf(q, max(dof, 1)))


def wald_intervals(refit, names: Sequence[str], likelihood: bool, level: float = 0.95) -> dict[str, Interval]:
    """Wald intervals of the fitted values ``names`` of a refit (see the module's docstring); an
    unbounded interval where the Jacobian is rank-deficient or missing."""
    out = {}
    r, J = refit.residuals, refit.jacobian
    values = refit.values
    if r is None or J is None or J.shape[1] != len(refit.free) or not np.all(np.isfinite(J)) \
            or not np.all(np.isfinite(r)):
        return {n: Interval(n, float(values.get(n, float("nan"))), float("inf"), -float("inf"), float("inf"), level)
                for n in names}
    m, k = J.shape
    s2 = 1.0 if likelihood else float(r @ r) / max(m - k, 1)
    jtj = J.T @ J
    rank = np.linalg.matrix_rank(jtj) if k else 0
    inverse = np.linalg.pinv(jtj) if k else np.zeros((0, 0))
    model_based = np.diag(inverse) * s2
    robust = np.diag(sandwich(J, r, inverse)) if k else np.zeros(0)
    z = _quantile(level, None if likelihood else m - k)
    index = {n: i for i, n in enumerate(refit.free)}
    for n in names:
        v = float(values[n])
        i = index.get(n)
        var = max(float(model_based[i]), float(robust[i]), 0.0) if (i is not None and rank == k) else float("inf")
        se = math.sqrt(var) if math.isfinite(var) else float("inf")
        out[n] = Interval(n, v, se, v - z * se, v + z * se, level)
    return out


def sandwich(J: np.ndarray, r: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """The heteroscedasticity-robust covariance of a least-squares fit (MacKinnon & White's HC3,
    J. Econometrics 29:305, 1985): ``(J^T J)^-1 J^T diag(r_i^2 / (1 - h_i)^2) J (J^T J)^-1``, ``h_i`` the
    leverages. Valid when the noise's variance differs between observations (multiplicative noise under a
    squared-error loss), where the model-based ``s^2 (J^T J)^-1`` is too narrow."""
    h = np.einsum("ij,jk,ik->i", J, inverse, J)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(h < 1 - 1e-12, r * r / np.square(1 - np.minimum(h, 1 - 1e-12)), np.inf)
    if not np.all(np.isfinite(w)):
        return np.full((J.shape[1], J.shape[1]), np.inf)
    return inverse @ (J.T * w) @ J @ inverse


@dataclass
class LocalFit:
    """A candidate's refit, linearised at its optimum."""

    r: np.ndarray
    J: np.ndarray

    @property
    def k(self) -> int:
        return self.J.shape[1]

    def step(self, rows: np.ndarray) -> np.ndarray:
        """The Gauss–Newton change of the fitted values refitted to the cells ``rows``."""
        if self.k == 0:
            return np.zeros(0)
        return np.linalg.lstsq(self.J[rows], -self.r[rows], rcond=None)[0]

    def rss(self, rows: np.ndarray) -> float:
        d = self.step(rows)
        e = self.r[rows] + self.J[rows] @ d
        return float(e @ e)

    def held_out(self, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """The residuals at ``test`` of the refit to ``train``."""
        return self.r[test] + self.J[test] @ self.step(train)


def local_fit(refit) -> LocalFit | None:
    """The linearisation of a successful refit (None when it has none, or non-finite numbers)."""
    if not refit.success or refit.residuals is None or refit.jacobian is None:
        return None
    if not (np.all(np.isfinite(refit.residuals)) and np.all(np.isfinite(refit.jacobian))):
        return None
    return LocalFit(np.asarray(refit.residuals, dtype=float), np.asarray(refit.jacobian, dtype=float))


def criterion(rss: float, n: int, k: int, constant: float, likelihood: bool) -> float:
    """The information criterion of a fit to ``n`` cells (as :meth:`DataObjective.criterion`): ``2 NLL + k log n``
    with a noise model (``NLL = rss/2 + constant``), else the Gaussian ``n log(rss/n) + k log n``."""
    n = max(n, 1)
    if likelihood:
        return float(rss + 2.0 * constant + k * math.log(n))
    return float(n * math.log(max(rss, 1e-300 * n) / n) + k * math.log(n))


@dataclass
class Stability:
    """What the resampled selections chose.

    Attributes:
        resamples: the number of halves (complementary pairs: half of them are the others' complements).
        wins: per candidate key, the share of halves it won.
        frequency: per ``(term, feature text)``, the share of halves whose winner has it.
    """

    resamples: int
    wins: dict[tuple, float]
    frequency: dict[tuple[tuple[str, int], str], float]


def stability_selection(fits: Mapping[tuple, LocalFit], n_terms: Mapping[tuple, int],
                        features: Mapping[tuple, Sequence[tuple[tuple[str, int], str]]], groups: np.ndarray,
                        constants: np.ndarray, likelihood: bool, penalty: float, resamples: int = 100,
                        seed: int = 0) -> Stability:
    """Stability selection over halves of the observation times (see the module's docstring).

    Arguments:
        fits: candidate key -> its linearised refit (all of the same cells).
        n_terms: candidate key -> its number of library terms (each costs ``penalty`` more, as a forward
            step must gain more than ``min_improvement``).
        features: candidate key -> its ``(term, feature text)`` pairs.
        groups: the observation time of each cell (:meth:`DataObjective.cell_groups`).
        constants: each cell's smallest NLL (:meth:`DataObjective.cell_constants`).
        resamples: halves drawn (rounded up to an even number: pairs).
        seed: of the random halves (fixed: a discovery is reproducible).
    """
    rng = np.random.default_rng(seed)
    units = np.unique(groups)
    keys = list(fits)
    wins = dict.fromkeys(keys, 0)
    frequency: dict[tuple[tuple[str, int], str], int] = {}
    halves = []
    for _ in range((resamples + 1) // 2):
        perm = rng.permutation(units)
        first = np.isin(groups, perm[: len(units) // 2])
        halves += [np.flatnonzero(first), np.flatnonzero(~first)]
    for rows in halves:
        n = len(rows)
        const = float(constants[rows].sum())
        scores = {key: criterion(fits[key].rss(rows), n, fits[key].k, const, likelihood) + penalty * n_terms[key]
                  for key in keys}
        best = min(keys, key=lambda key: scores[key])
        wins[best] += 1
        for f in features[best]:
            frequency[f] = frequency.get(f, 0) + 1
    total = max(len(halves), 1)
    return Stability(len(halves), {k: v / total for k, v in wins.items()},
                     {f: v / total for f, v in frequency.items()})


def time_blocks(groups: np.ndarray, n_blocks: int) -> list[np.ndarray]:
    """The observation times split into ``n_blocks`` runs of consecutive times (per experiment the times are
    consecutive group indices); each block's cells."""
    units = np.unique(groups)
    n_blocks = max(2, min(n_blocks, len(units)))
    return [np.flatnonzero(np.isin(groups, part)) for part in np.array_split(units, n_blocks)]


def block_cross_validation(fit: LocalFit, groups: np.ndarray, constants: np.ndarray, likelihood: bool,
                           n_blocks: int = 5) -> float:
    """The held-out loss of a candidate over time blocks (mean over every cell of its loss when left out),
    in the objective's units: the mean squared residual, or with a noise model the NLL per observation."""
    blocks = time_blocks(groups, n_blocks)
    everything = np.arange(len(groups))
    sq = 0.0
    for test in blocks:
        train = np.setdiff1d(everything, test)
        e = fit.held_out(train, test)
        sq += float(e @ e)
    n = max(len(groups), 1)
    if likelihood:
        return (0.5 * sq + float(constants.sum())) / n
    return sq / n


def runs_sequences(r: np.ndarray, groups: np.ndarray, states: np.ndarray, experiments: np.ndarray) -> list[np.ndarray]:
    """The residuals cut into one sequence per experiment and state, in time order (cells are ordered by
    time within each experiment already)."""
    out = []
    for b in np.unique(experiments):
        for j in np.unique(states):
            sel = (experiments == b) & (states == j)
            if sel.sum() > 1:
                out.append(r[sel])
    return out


def calibrated_runs_p(fit: LocalFit, groups: np.ndarray, states: np.ndarray, experiments: np.ndarray,
                      draws: int = 400, seed: int = 0) -> float:
    """The runs test's p-value of a fitted model's residuals, calibrated for the fit.

    Residuals of a fitted model are not independent noise even when the model is right: the estimation error
    ``J d`` is a smooth function of time and leaves fewer sign changes than the textbook null assumes, so
    that test calls correct models systematic too often. The null distribution of the standardised number
    of runs is drawn here instead: noise with the residuals' own sizes (wild bootstrap, Rademacher signs on
    ``r_i / sqrt(1 - h_i)``), projected off the columns of ``J`` as the refit would, ``draws`` times."""
    from .refit import runs_test

    r, J = fit.r, fit.J
    z_obs, _ = runs_test(runs_sequences(r, groups, states, experiments))
    if J.shape[1]:
        Q, _ = np.linalg.qr(J)
        h = np.sum(Q * Q, axis=1)
    else:
        Q, h = np.zeros((len(r), 0)), np.zeros(len(r))
    scale = r / np.sqrt(np.maximum(1.0 - h, 1e-12))
    rng = np.random.default_rng(seed)
    below = 0
    for _ in range(draws):
        e = scale * rng.choice((-1.0, 1.0), size=len(r))
        e = e - Q @ (Q.T @ e)
        z, _ = runs_test(runs_sequences(e, groups, states, experiments))
        below += z <= z_obs
    return float((1 + below) / (1 + draws))
