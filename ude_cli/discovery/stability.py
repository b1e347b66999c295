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
from dataclasses import dataclass, field

import numpy as np

#: How the intervals are computed (written into discovery.json and the report).
INTERVAL_METHOD = ("wald (Gauss-Newton at the refit; the wider of the model-based covariance, scaled by the noise "
                   "model or by RSS/(n - k) for a squared-error loss, and the heteroscedasticity-robust sandwich, HC3)")
#: How the cross-validation over time blocks refits.
CV_METHOD = "time blocks left out in turn, the refit to the others linearised (one Gauss-Newton step)"


@dataclass(frozen=True)
class Interval:
    """An interval of one fitted value (Wald unless ``method`` says otherwise)."""

    name: str
    value: float
    se: float
    lower: float
    upper: float
    level: float
    method: str = INTERVAL_METHOD

    @property
    def excludes_zero(self) -> bool:
        return self.lower > 0 or self.upper < 0

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.lower) and math.isfinite(self.upper)

    def as_dict(self) -> dict:
        def finite(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"value": self.value, "se": finite(self.se), "lower": finite(self.lower), "upper": finite(self.upper),
                "level": self.level, "excludes_zero": self.excludes_zero, "method": self.method}

    def text(self, digits: int = 4) -> str:
        if not (math.isfinite(self.lower) or math.isfinite(self.upper)):
            return f"{self.value:.{digits}g} (interval unbounded: not identifiable from these data)"
        lo = f"{self.lower:.{digits}g}" if math.isfinite(self.lower) else "-inf"
        hi = f"{self.upper:.{digits}g}" if math.isfinite(self.upper) else "inf"
        return f"{self.value:.{digits}g} [{lo}, {hi}]"


def _quantile(level: float, dof: int | None) -> float:
    from scipy import stats

    q = 0.5 + level / 2
    return float(stats.norm.ppf(q) if dof is None else stats.t.ppf(q, max(dof, 1)))


def _variances(refit, likelihood: bool) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The model-based and the robust (HC3) variance of each fitted value of a refit, and ``m - k``; None where the
    Jacobian is missing, not finite or rank-deficient."""
    r, J = refit.residuals, refit.jacobian
    if r is None or J is None or J.shape[1] != len(refit.free) or not np.all(np.isfinite(J)) \
            or not np.all(np.isfinite(r)):
        return None
    m, k = J.shape
    if k == 0:
        return np.zeros(0), np.zeros(0), m
    jtj = J.T @ J
    if np.linalg.matrix_rank(jtj) < k:
        return None
    s2 = 1.0 if likelihood else float(r @ r) / max(m - k, 1)
    inverse = np.linalg.pinv(jtj)
    return np.diag(inverse) * s2, np.diag(sandwich(J, r, inverse)), m - k


def wald_intervals(refit, names: Sequence[str], likelihood: bool, level: float = 0.95) -> dict[str, Interval]:
    """Wald intervals of the fitted values ``names`` of a refit (see the module's docstring); an
    unbounded interval where the Jacobian is rank-deficient or missing."""
    out = {}
    values = refit.values
    var = _variances(refit, likelihood)
    if var is None:
        return {n: Interval(n, float(values.get(n, float("nan"))), float("inf"), -float("inf"), float("inf"), level)
                for n in names}
    model_based, robust, dof = var
    z = _quantile(level, None if likelihood else dof)
    index = {n: i for i, n in enumerate(refit.free)}
    for n in names:
        v = float(values[n])
        i = index.get(n)
        v_i = max(float(model_based[i]), float(robust[i]), 0.0) if i is not None else float("inf")
        se = math.sqrt(v_i) if math.isfinite(v_i) else float("inf")
        out[n] = Interval(n, v, se, v - z * se, v + z * se, level)
    return out


def robust_adjustment(refit, names: Sequence[str], likelihood: bool) -> dict[str, float]:
    """Per fitted value, the factor ``a`` by which its likelihood-ratio statistic is multiplied so that it stays
    calibrated when the noise model is wrong about how the variance differs between observations: the model-based
    over the robust (HC3) variance where the robust one is larger, else 1 (Royall & Tsou, JRSS B 65:391, 2003,
    the robust adjusted likelihood; the profile's counterpart of taking the wider Wald interval). 0 where the
    Jacobian is rank-deficient: the profile then never excludes a value."""
    var = _variances(refit, likelihood)
    index = {n: i for i, n in enumerate(refit.free)}
    out = {}
    for n in names:
        i = index.get(n)
        if var is None or i is None:
            out[n] = 0.0
            continue
        model_based, robust = float(var[0][i]), float(var[1][i])
        out[n] = min(1.0, model_based / robust) if robust > 0 and math.isfinite(robust) else (
            1.0 if robust == 0 else 0.0)
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
    members: int = 1


def stability_selection(fits: Mapping[tuple, LocalFit], n_terms: Mapping[tuple, int],
                        features: Mapping[tuple, Sequence[tuple[tuple[str, int], str]]], groups: np.ndarray,
                        constants: np.ndarray, likelihood: bool, penalty: float, resamples: int = 100,
                        seed: int = 0, members: Sequence[set] | None = None) -> Stability:
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
        members: the ensemble's members, each the set of candidate keys it proposed (one per UDE start: the
            candidates that start's network proposed); each half is voted on by every member among its own
            candidates, and a share is of the halves times the members. Default: one member with every candidate.
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
    groups_of = [[k for k in keys if k in m] for m in members] if members is not None else [keys]
    groups_of = [g for g in groups_of if g]
    for rows in halves:
        n = len(rows)
        const = float(constants[rows].sum())
        scores = {key: criterion(fits[key].rss(rows), n, fits[key].k, const, likelihood) + penalty * n_terms[key]
                  for key in keys}
        for eligible in groups_of:
            best = min(eligible, key=lambda key: scores[key])
            wins[best] += 1
            for f in features[best]:
                frequency[f] = frequency.get(f, 0) + 1
    total = max(len(halves) * len(groups_of), 1)
    return Stability(len(halves), {k: v / total for k, v in wins.items()},
                     {f: v / total for f, v in frequency.items()}, len(groups_of))


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
                      draws: int = 400, seed: int = 0, fitted: np.ndarray | None = None) -> float:
    """The runs test's p-value of a fitted model's residuals, calibrated for the fit.

    Residuals of a fitted model are not independent noise even when the model is right: the estimation error
    ``J d`` is a smooth function of time and leaves fewer sign changes than the textbook null assumes, so
    that test calls correct models systematic too often. The null distribution of the standardised number
    of runs is drawn here instead: noise of the residuals' size (Rademacher signs times a scale), projected off
    the columns of ``J`` as the refit would, ``draws`` times.

    The scale: with the ``fitted`` values of each cell (data units), a variance that is a power of the fitted
    value per state, ``log(r_i^2 / (1 - h_i)) = c_state + b log|mu_i|`` fitted by least squares (the
    power-of-the-mean variance function, Carroll & Ruppert, *Transformation and Weighting in Regression*, 1988;
    ``b`` = 2 for multiplicative noise, 0 for additive). Without them each residual's own size
    ``|r_i| / sqrt(1 - h_i)`` (the wild bootstrap); that one is too wide where the fit's error is larger than the
    noise (the small values of a squared-error fit to multiplicative noise, which the large values decide): its
    draws then change sign more often than the residuals can, and a correct model looks systematic (on the
    Lotka-Volterra protocol, refitted in its true form to 220 noise seeds at 1 % and 5 %: p < 0.01 in 9 and 11 of
    220 with the wild scale, 1 and 2 with the variance function)."""
    from .refit import runs_test

    r, J = fit.r, fit.J
    z_obs, _ = runs_test(runs_sequences(r, groups, states, experiments))
    if J.shape[1]:
        Q, _ = np.linalg.qr(J)
        h = np.sum(Q * Q, axis=1)
    else:
        Q, h = np.zeros((len(r), 0)), np.zeros(len(r))
    scale = r / np.sqrt(np.maximum(1.0 - h, 1e-12))
    if fitted is not None and len(fitted) == len(r) and np.all(np.isfinite(fitted)):
        scale = np.sqrt(variance_function(scale * scale, np.asarray(fitted, dtype=float), states))
    rng = np.random.default_rng(seed)
    below = 0
    for _ in range(draws):
        e = scale * rng.choice((-1.0, 1.0), size=len(r))
        e = e - Q @ (Q.T @ e)
        z, _ = runs_test(runs_sequences(e, groups, states, experiments))
        below += z <= z_obs
    return float((1 + below) / (1 + draws))


def variance_function(r2: np.ndarray, fitted: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Each cell's variance under the power-of-the-mean model ``log r2 = c_state + b log|mu|`` fitted to the
    squared residuals ``r2`` by least squares (one exponent ``b`` shared by the states, one level per state)."""
    a = np.abs(fitted)
    top = float(a.max()) if a.size else 1.0
    log_mu = np.log(np.maximum(a, 1e-12 * max(top, 1e-300)))
    design = np.column_stack([*((states == j).astype(float) for j in np.unique(states)), log_mu])
    positive = r2[r2 > 0]
    floor = float(positive.min()) * 1e-6 if positive.size else 1e-300
    coef = np.linalg.lstsq(design, np.log(np.maximum(r2, floor)), rcond=None)[0]
    return np.exp(design @ coef)


# -- profile intervals of the refitted coefficients ---------------------------------------------------

#: How the profile intervals are computed (written into discovery.json and the report).
PROFILE_METHOD = ("profile likelihood (the coefficient held at each point, every other fitted value refitted to the "
                  "data by ODE least squares; F-calibrated threshold for a squared-error loss, chi-square(1) with a "
                  "noise model; the statistic scaled by the model-based over the robust, HC3, variance where that is "
                  "below 1: the robust adjusted likelihood, Royall & Tsou 2003)")
#: a side is open when the value moves by this many of its own magnitudes (or standard errors) inside the threshold
PROFILE_REACH = 1000.0
#: a crossing is found when the root of the statistic is within this share of the threshold's root
PROFILE_TOLERANCE = 0.03
#: refits per side and level at most
PROFILE_STEPS = 8


@dataclass(frozen=True)
class ProfileInterval(Interval):
    """A profile-likelihood interval of one refitted coefficient.

    Attributes (besides :class:`Interval`'s; ``se`` is the Wald one, for comparison):
        threshold: the statistic at the interval's ends (``lr_threshold`` of the level).
        adjustment: the robust factor ``a`` of :func:`robust_adjustment`; the statistic is ``a * 2 (PL - L_min)``.
        at_zero: the (adjusted) statistic at 0, the model refitted without the term (None: not computed).
        points: ``(value, adjusted statistic)`` of every refit of the profile, sorted by value.
        open: why a side is open (``{"lower": ..., "upper": ...}``, empty when closed).
    """

    threshold: float = float("nan")
    adjustment: float = 1.0
    at_zero: float | None = None
    points: tuple = ()
    open: dict = field(default_factory=dict)

    @property
    def excludes_zero(self) -> bool:
        # 0 lies outside the likelihood region exactly when the profile at 0 is above the threshold; with the ends
        # computed as well, 0 must also lie outside them (a profile that is not monotone: both must agree)
        outside = self.lower > 0 or self.upper < 0
        if self.at_zero is None:
            return outside
        if math.isnan(self.lower) and math.isnan(self.upper):  # the zero test alone (:func:`zero_test`)
            return self.at_zero > self.threshold
        return self.at_zero > self.threshold and outside

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update({"threshold": self.threshold, "robust_adjustment": self.adjustment,
                    "statistic_at_zero": None if self.at_zero is None or not math.isfinite(self.at_zero)
                    else self.at_zero, "open": dict(self.open) or None,
                    "points": [[float(v), float(s)] for v, s in self.points]})
        return out


def zero_test(name: str, value: float, se: float, level: float, threshold: float, adjustment: float,
              at_zero_raw: float) -> ProfileInterval:
    """Whether 0 is in a coefficient's profile interval, from the profile at 0 alone (the model refitted without
    the term, which the backward check refits anyway): no ends computed (``nan``)."""
    at_zero = adjustment * at_zero_raw if math.isfinite(at_zero_raw) else float("inf")
    nan = float("nan")
    return ProfileInterval(name, value, se, nan, nan, level, PROFILE_METHOD, threshold, adjustment, at_zero,
                           ((0.0, at_zero), (value, 0.0)) if math.isfinite(at_zero) else ((value, 0.0),))


def profile_interval(name: str, value: float, se: float, statistic, levels: Sequence[tuple[float, float]],
                     adjustment: float, known: Sequence[tuple[float, float]] = ()) -> dict[float, ProfileInterval]:
    """The profile intervals of one fitted value at several levels.

    Arguments:
        statistic: ``c -> 2 (PL(c) - L_min)``, the likelihood-ratio statistic with the value held at ``c`` and
            everything else refitted (``inf`` or ``nan`` where the refit fails: the side ends open there).
        levels: ``(level, threshold)`` pairs, the threshold on the adjusted statistic.
        adjustment: the robust factor (:func:`robust_adjustment`); 0: every interval is unbounded.
        se: a scale for the first step (the Wald standard error).
        known: ``(c, statistic)`` points already computed (the profile at 0: the model without the term).

    Each side is walked out from the fit: the first point where a straight line through the root of the statistic
    (exactly straight for a model linear in the value) reaches the threshold's root, then regula falsi on the root
    between the last point inside and the first outside until within :data:`PROFILE_TOLERANCE`; the end is
    interpolated there as :func:`ude_cli.identifiability.profile._ends` does (the same interpolation as
    ``ude fit --profile``). A side that stays inside over :data:`PROFILE_REACH` magnitudes, or whose refit fails,
    is open."""
    from ..identifiability.profile import _ends

    pts: dict[float, float] = {float(value): 0.0}
    for c, st in known:
        if math.isfinite(st):
            pts[float(c)] = adjustment * max(float(st), 0.0)
    out: dict[float, ProfileInterval] = {}
    scale = se if math.isfinite(se) and se > 0 else max(abs(value), 1e-3) * 0.05
    reach = PROFILE_REACH * max(abs(value), scale)
    opens: dict[float, dict[int, str]] = {}
    if adjustment <= 0:
        for level, thr in levels:
            out[level] = ProfileInterval(name, value, se, -math.inf, math.inf, level, PROFILE_METHOD, thr, adjustment,
                                         None, ((value, 0.0),), {"lower": "not identifiable (rank-deficient Jacobian)",
                                                                 "upper": "not identifiable (rank-deficient Jacobian)"})
        return out

    def evaluate(c: float) -> float:
        st = float(statistic(c))
        st = adjustment * max(st, 0.0) if math.isfinite(st) else math.nan
        pts[c] = st
        return st

    for level, thr in sorted(levels, key=lambda lt: lt[1]):
        root = math.sqrt(thr)
        why: dict[int, str] = {}
        for d in (-1, 1):
            for _ in range(PROFILE_STEPS):
                side = sorted(((c, st) for c, st in pts.items() if d * (c - value) >= 0), key=lambda p: d * (p[0] - value))
                failed = next((c for c, st in side if not math.isfinite(st)), None)
                if failed is not None:
                    side = [(c, st) for c, st in side if d * (c - failed) < 0]
                outside = next((i for i, (_, st) in enumerate(side) if st >= thr), None)
                if outside is None:
                    if failed is not None:
                        why[d] = f"the model cannot be refitted at {failed:.4g}"
                        break
                    c_far, st_far = side[-1]
                    r_far = math.sqrt(st_far)
                    dist = abs(c_far - value)
                    step = (dist * min(1.1 * root / r_far, 4.0)) if r_far > 0 and dist > 0 else 1.1 * root * scale
                    c = value + d * step
                    if abs(c - value) > reach:
                        why[d] = f"the profile stays below the threshold from {value:.4g} to {c_far:.4g}"
                        break
                else:
                    (c_in, s_in), (c_out, s_out) = side[outside - 1], side[outside]
                    r_in, r_out = math.sqrt(s_in), math.sqrt(s_out)
                    if r_out - root <= PROFILE_TOLERANCE * root or root - r_in <= PROFILE_TOLERANCE * root:
                        break
                    c = c_in + (root - r_in) * (c_out - c_in) / (r_out - r_in)
                evaluate(float(c))
            else:
                side = [p for p in pts.items() if d * (p[0] - value) >= 0 and math.isfinite(p[1])]
                if not any(st >= thr for _, st in side):
                    why[d] = f"the profile stays below the threshold after {PROFILE_STEPS} refits"
        opens[level] = why
    for level, thr in levels:
        finite = sorted((c, st) for c, st in pts.items() if math.isfinite(st))
        lower, upper = _ends(finite, value, thr, opens[level])
        at_zero = pts.get(0.0)
        out[level] = ProfileInterval(name, value, se, lower, upper, level, PROFILE_METHOD, thr, adjustment,
                                     at_zero if at_zero is None or math.isfinite(at_zero) else math.inf,
                                     tuple(finite), {("lower" if d < 0 else "upper"): w for d, w in opens[level].items()})
    return out
