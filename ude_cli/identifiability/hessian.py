"""Quick intervals from the observed information: the Hessian of ``L`` (:mod:`.function`) at the fit.

The Hessian is taken on the unconstrained scale the optimiser works on (``log k`` for a positive ``k``),
by central differences of the exact gradient (the engines' reverse mode), and carried to the parameters'
own scale by the chain rule (at a minimum the gradient term vanishes). Two versions:

- **network held fixed**: the block of the mechanistic, observation, noise and initial values alone. It
  says how well the data pin a value *if the learned terms were known*: a lower bound on the uncertainty;
- **network profiled out**: the Schur complement ``H_tt - H_tw H_ww^+ H_wt`` of the full Hessian, network
  weights included, i.e. the curvature of the profile over the weights. Its ratio to the first is the
  *variance inflation* due to the network: large when the network can compensate a change of the value,
  the practical face of "the network can imitate this term".

Standard errors are ``sqrt(diag(Cov))`` with ``Cov = D H^-1 D`` (``D``: d value / d unconstrained), times
``n/(n - k)`` when the noise scale is estimated from the residuals (:meth:`LikelihoodFunction.variance_factor`,
as R's ``nls``); intervals are ``value +- q * se`` with ``q`` from the t (or normal) distribution, and for a
value kept positive (``positive: true``, noise parameters, positive initial values) ``value * exp(+-q * se/value)``,
the same interval on log scale, which stays positive.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .function import LikelihoodFunction, Target

#: relative central-difference step on the unconstrained scale
FD_STEP = 1e-4
#: a target whose variance grows by more than this factor when the network is profiled out is reported as
#: practically not identifiable (the network compensates a change of it)
INFLATION_LIMIT = 100.0
#: an interval wider than this factor (a positive value: upper/lower; others: half-width/|value|) says the value
#: is practically not identifiable, as a profile that stays below its threshold over that range
WIDE_FACTOR = 1000.0
#: eigenvalues of an information matrix below this fraction of its largest count as zero
SINGULAR_RTOL = 1e-10
#: a value whose weight in an eigenvector of a zero (or negative) eigenvalue is above this is in that direction
NULL_WEIGHT = 1e-3
#: seconds the network-profiled Hessian may take (estimated from one gradient) when computed by default
DEFAULT_BUDGET = 5.0


@dataclass
class WaldInterval:
    name: str
    value: float
    se: float  # nan: not computed; inf: the information is singular in this value
    lower: float
    upper: float
    method: str
    inflation: float | None = None  # variance with the network profiled out / with it fixed
    identifiable: bool | None = None
    reason: str = ""


@dataclass
class HessianResult:
    intervals: list[WaldInterval]
    level: float
    network: str  # "profiled out", "held fixed", "none" (no network)
    distribution: str
    variance_factor: float
    seconds: float
    evaluations: int
    notes: list[str] = field(default_factory=list)
    positive_definite: bool = True
    #: for sampling (bands): the targets in this order, their covariance on the unconstrained scale (the
    #: residual-df factor applied; the pseudo-inverse of the information, so zero along directions the data do
    #: not determine), and with the network profiled out the weights' linear response
    #: ``dw = R du`` (``R = -H_ww^+ H_wt``), which keeps the network at its conditional optimum
    targets: list = field(default_factory=list, repr=False)
    cov_u: np.ndarray | None = field(default=None, repr=False)
    parameters_counted: float = 0.0  # k of the residual degrees of freedom n - k
    network_response: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {"level": self.level, "network": self.network, "distribution": self.distribution,
                "variance_factor": self.variance_factor, "seconds": round(self.seconds, 4),
                "gradient_evaluations": self.evaluations, "positive_definite": self.positive_definite,
                "notes": self.notes,
                "intervals": [{"name": w.name, "value": w.value, "se": _num(w.se), "lower": _num(w.lower),
                               "upper": _num(w.upper), "method": w.method, "variance_inflation": _num(w.inflation),
                               "identifiable": w.identifiable, "reason": w.reason} for w in self.intervals]}


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)


class _Coordinates:
    """The targets' unconstrained elements, then (optionally) every network weight, as one vector."""

    def __init__(self, f: LikelihoodFunction, targets: list[Target], with_network: bool):
        self.f, self.targets = f, targets
        self.network = list(f.model.network_parameters()) if with_network else []
        tensors: list[torch.Tensor] = []
        for t in targets:
            if not any(t.tensor is x for x in tensors):
                tensors.append(t.tensor)
        self.tensors = tensors + self.network
        self.n_targets = len(targets)
        self.size = self.n_targets + sum(p.numel() for p in self.network)

    def get(self) -> np.ndarray:
        parts = [np.array([t.get_u() for t in self.targets])]
        parts += [p.detach().reshape(-1).cpu().numpy() for p in self.network]
        return np.concatenate(parts)

    def set(self, x: np.ndarray) -> None:
        with torch.no_grad():
            for t, u in zip(self.targets, x[:self.n_targets], strict=True):
                t.set_u(float(u))
            k = self.n_targets
            for p in self.network:
                m = p.numel()
                p.copy_(torch.as_tensor(x[k:k + m], dtype=p.dtype).reshape(p.shape))
                k += m

    def gradient(self) -> tuple[float, np.ndarray]:
        value, grads = self.f.value_and_grad(self.tensors)
        by_id = {id(t): g for t, g in zip(self.tensors, grads, strict=True)}
        parts = [np.array([float(by_id[id(t.tensor)][t.index]) for t in self.targets])]
        parts += [by_id[id(p)].reshape(-1).cpu().numpy() for p in self.network]
        return value, np.concatenate(parts)


def _central_differences(coords: _Coordinates, evaluate) -> np.ndarray:
    """The columns ``(evaluate(x + h e_i) - evaluate(x - h e_i)) / 2h`` for every coordinate, ``h`` relative to
    :data:`FD_STEP`; the model is left at its starting point."""
    x0 = coords.get()
    columns = []
    try:
        for i in range(len(x0)):
            h = FD_STEP * max(1.0, abs(x0[i]))
            x = x0.copy()
            x[i] = x0[i] + h
            coords.set(x)
            up = evaluate()
            x[i] = x0[i] - h
            coords.set(x)
            down = evaluate()
            columns.append((up - down) / (2 * h))
    finally:
        coords.set(x0)
    return np.stack(columns, 1)


def hessian_of(coords: _Coordinates) -> np.ndarray:
    """Central differences of the gradient, symmetrised."""
    H = _central_differences(coords, lambda: coords.gradient()[1])
    return 0.5 * (H + H.T)


def gauss_newton_of(coords: _Coordinates, f: LikelihoodFunction) -> tuple[np.ndarray, np.ndarray]:
    """The Gauss-Newton (expected) information ``Jz^T Jz`` of the residuals in noise units
    (:meth:`LikelihoodFunction.residual_vector`) by central differences, plus the weight penalty's exact
    curvature."""
    with torch.no_grad():
        j0 = float(f.training_loss())
    J = _central_differences(coords, lambda: f.residual_vector(j0))
    n = J.shape[1]
    info = J.T @ J
    penalty = np.zeros(n)
    if f.weight_decay and coords.network:
        # d2/dw2 of weight_decay * sum(w^2) over the weights (not biases), in L's units
        per_unit = 2 * f.n * f.weight_decay if f.likelihood else f.n * f.weight_decay / j0
        k = coords.n_targets
        weights = {id(w) for net in f.model.rhs.networks.values() for w in net.weights}
        for p in coords.network:
            m = p.numel()
            if id(p) in weights:
                penalty[k:k + m] = per_unit
            k += m
    return info + np.diag(penalty), penalty


def effective_parameters(H: np.ndarray, penalty: np.ndarray) -> float:
    """``tr(H^+ (H - P))``: the penalised fit's effective number of parameters (the trace of its hat matrix, as
    for ridge regression or a smoothing spline): every identified direction counts 1, a direction held mostly
    by the weight penalty less."""
    w, V = np.linalg.eigh(H)
    keep = w > SINGULAR_RTOL * max(float(np.abs(w).max()) if w.size else 0.0, 1e-300)
    Hp = (V[:, keep] / w[keep]) @ V[:, keep].T
    return float(keep.sum() - np.trace(Hp * penalty[None, :]))


def _cost(coords: _Coordinates, f: LikelihoodFunction, gauss_newton: bool) -> float:
    """Seconds of one evaluation a column of the matrix needs (a simulation for Gauss-Newton, else a gradient):
    the faster of two, so that a first call's set-up (native code loading) does not count."""
    times = []
    with torch.no_grad() if gauss_newton else contextlib.nullcontext():
        j0 = float(f.training_loss()) if gauss_newton else 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        if gauss_newton:
            f.residual_vector(j0)
        else:
            coords.gradient()
        times.append(time.perf_counter() - t0)
    return min(times)


def _too_wide(positive: bool, value: float, lo: float, hi: float) -> bool:
    if positive:
        return lo <= 0 or hi / lo > WIDE_FACTOR
    return value != 0 and (hi - lo) / 2 > WIDE_FACTOR * abs(value)


def _scale_information(f: LikelihoodFunction, sigma: str) -> float:
    """The expected information of the noise scale ``sigma`` times ``sigma^2``: over the training cells whose noise
    it scales, each cell's :attr:`~ude_cli.likelihood.noise.base.NoiseModel.scale_information` (2 for normal noise,
    1 for Laplace noise)."""
    obj = f.objective
    total = 0.0
    for i, roles in enumerate(obj.noise_roles):
        model = obj.noise[i]
        if roles.get("sigma") == sigma and model is not None and model.scale_information is not None:
            cells = float(sum(m[..., obj.columns[i]].sum() for m in obj._masks["train"]))
            total += model.scale_information * cells
    return total


def _inverse(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Covariance (inverse on the non-singular part; inf variance along singular directions), per-coordinate
    singular flags, and whether ``H`` is positive definite."""
    w, V = np.linalg.eigh(H)
    scale = max(float(np.abs(w).max()) if w.size else 0.0, 1e-300)
    positive = bool(w.min() > SINGULAR_RTOL * scale) if w.size else True
    ok = w > SINGULAR_RTOL * scale
    cov = (V[:, ok] / w[ok]) @ V[:, ok].T
    # a coordinate with weight on a zero (or negative) curvature direction has an unbounded variance
    singular = (np.abs(V[:, ~ok]) > NULL_WEIGHT).any(axis=1) if (~ok).any() else np.zeros(len(w), dtype=bool)
    return cov, singular, positive


def wald_intervals(f: LikelihoodFunction, targets: list[Target], level: float = 0.95, *,
                   network: str = "auto", budget: float = DEFAULT_BUDGET) -> HessianResult:
    """Wald intervals of ``targets`` from the Hessian of ``L``.

    Arguments:
        network: ``"profiled"`` (full Hessian, Schur complement), ``"fixed"``, or ``"auto"``: profiled when the
            estimated cost is within ``budget`` seconds, else fixed (and a note says so).
    """
    started = time.perf_counter()
    f.held_noise = {t.name for t in targets if t.profiled_noise}
    evaluations0 = f.evaluations
    notes: list[str] = []
    try:
        has_net = bool(f.model.network_parameters())
        gauss_newton = f.gauss_newton()
        # Gauss-Newton in the residuals does not carry sigma's information: sigma's own is 2 n_j / sigma^2 (normal
        # noise; n_j / sigma^2 for Laplace noise; orthogonal to the mean's parameters), added below
        noise_targets = [t for t in targets if t.kind == "noise"] if gauss_newton else []
        targets = [t for t in targets if t not in noise_targets] + noise_targets
        mean_targets = targets[:len(targets) - len(noise_targets)]
        fixed = _Coordinates(f, mean_targets, with_network=False)
        per_gradient = _cost(fixed, f, gauss_newton)
        use_net = False
        if has_net and network != "fixed":
            full = _Coordinates(f, mean_targets, with_network=True)
            estimate = 2 * full.size * per_gradient
            use_net = network == "profiled" or estimate <= budget
            if not use_net:
                what = "simulations" if gauss_newton else "gradients"
                notes.append(f"the network is held fixed: profiling out its {full.size - full.n_targets} weights takes "
                             f"2 x {full.size} {what}, about {estimate:.0f} s (budget {budget:g} s; "
                             "uncertainty.hessian: profiled forces it); `ude fit --profile` gives profile intervals")
        coords = _Coordinates(f, mean_targets, with_network=True) if use_net else fixed
        penalty = None
        if gauss_newton:
            H_mean, penalty = gauss_newton_of(coords, f)
        else:
            H_mean = hessian_of(coords)
    finally:
        f.held_noise = set()
    T = len(targets)
    M = len(mean_targets)
    H_full = np.zeros((H_mean.shape[0] + len(noise_targets),) * 2)
    H_full[:M, :M] = H_mean[:M, :M]
    H_full[:M, T:] = H_mean[:M, M:]
    H_full[T:, :M] = H_mean[M:, :M]
    H_full[T:, T:] = H_mean[M:, M:]
    for i, t in enumerate(noise_targets):  # on the unconstrained scale: (d sigma/du)^2 * 2 n_j / sigma^2 (normal)
        H_full[M + i, M + i] = t.derivative() ** 2 * _scale_information(f, t.name) / t.value ** 2
    H_tt = H_full[:T, :T]
    cov_fixed, sing_fixed, pd_fixed = _inverse(H_tt)
    if use_net:
        H_ww = H_full[T:, T:]
        H_tw = H_full[:T, T:]
        w, V = np.linalg.eigh(H_ww)
        keep = w > SINGULAR_RTOL * max(float(np.abs(w).max()), 1e-300)
        H_ww_pinv = (V[:, keep] / w[keep]) @ V[:, keep].T
        schur = H_tt - H_tw @ H_ww_pinv @ H_tw.T
        cov, singular, positive = _inverse(0.5 * (schur + schur.T))
        response = -H_ww_pinv @ H_tw.T
        if not (w > -SINGULAR_RTOL * max(float(np.abs(w).max()), 1e-300)).all():
            positive = False
            notes.append("the Hessian in the network weights has negative curvature: the fit is not at a minimum "
                         "in the weights; the intervals are not reliable")
    else:
        cov, singular, positive = cov_fixed, sing_fixed, pd_fixed
        response = None
    if not positive:
        involved = [t.name for t, flag in zip(targets, singular, strict=True) if flag]
        notes.append("the information matrix is not positive definite at the fit: " + (
            f"its curvature is zero (or negative) along directions involving {', '.join(involved)} (weight above "
            f"{NULL_WEIGHT:g} in an eigenvector whose eigenvalue is below {SINGULAR_RTOL:g} of the largest), marked "
            "not identifiable; the other values' Wald intervals are local, conditional on those (ude fit --profile "
            "re-optimises them)" if involved else
            "some values are not identifiable from the curvature (or the fit is not at a minimum)"))
    k: float = float(sum(t.kind != "noise" for t in targets))
    if gauss_newton and use_net and penalty is not None:
        # the network's weights cost degrees of freedom too: its effective number of parameters
        k = effective_parameters(H_mean, penalty)
        notes.append(f"residual degrees of freedom n - k with k = {k:.3g}: the learned values plus the network's "
                     "effective number of parameters, tr(H^+ (H - P)) of the penalised Gauss-Newton matrix")
    factor = f.variance_factor(k)
    q, dist = f.quantile(level, k)
    info = ("observed information" if not gauss_newton else "Gauss-Newton information, as nls"
            if f.scale_estimated() else "expected information (Gauss-Newton), Laplace noise having no curvature")
    method = (f"wald ({info}; network profiled out)" if use_net else
              f"wald ({info}; network held fixed)" if has_net else f"wald ({info})")
    out = []
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + level / 2))
    for i, t in enumerate(targets):
        d = t.derivative()
        value = t.value
        var_u = cov[i, i]
        noise = t in noise_targets  # its information is asymptotic: no residual-df factor, normal quantile
        se = math.inf if singular[i] or not var_u > 0 else math.sqrt(var_u * (1.0 if noise else factor)) * abs(d)
        inflation = None
        if use_net and not sing_fixed[i] and cov_fixed[i, i] > 0:
            inflation = math.inf if not np.isfinite(se) else float(var_u / cov_fixed[i, i])
        identifiable: bool | None = True
        reason = ""
        if not np.isfinite(se):
            identifiable, reason = False, "the curvature is zero in this value: the data do not determine it"
        elif inflation is not None and inflation > INFLATION_LIMIT:
            identifiable = False
            reason = (f"its variance grows {inflation:.3g}-fold when the network is re-fitted: the network "
                      "compensates a change of it")
        elif has_net and not use_net:
            identifiable = None
            reason = "network held fixed: a lower bound on the uncertainty"
        m = z if noise else q
        if not np.isfinite(se):
            lo, hi = -math.inf, math.inf
        elif t.positive and value > 0:  # a value kept positive: on log scale, so that the interval stays positive
            lo, hi = value * math.exp(-m * se / value), value * math.exp(m * se / value)
        else:
            lo, hi = value - m * se, value + m * se
        if identifiable and np.isfinite(se) and _too_wide(t.positive and value > 0, value, lo, hi):
            identifiable = False
            reason = (f"its interval [{lo:.3g}, {hi:.3g}] spans more than a factor {WIDE_FACTOR:g} (or {WIDE_FACTOR:g} "
                      "times its size): the data barely constrain it")
        out.append(WaldInterval(t.name, value, se, lo, hi, method, inflation, identifiable, reason))
    f_vec = np.array([1.0 if t in noise_targets else factor for t in targets])
    # the pseudo-inverse: a direction the data do not determine has no variance (held at the fit; a note says
    # so), while a combination they determine varies (a*b of dx/dt = -a b x: a and b together, a/b held)
    cov_u = cov * np.sqrt(np.outer(f_vec, f_vec))
    return HessianResult(out, level, "profiled out" if use_net else ("held fixed" if has_net else "none"), dist,
                         factor, time.perf_counter() - started, f.evaluations - evaluations0, notes, positive,
                         targets=list(targets), cov_u=cov_u, network_response=response, parameters_counted=k)
