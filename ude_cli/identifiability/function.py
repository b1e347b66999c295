"""The function whose curvature and profiles give the intervals: the fit's objective in log-likelihood units.

Every interval of :mod:`ude_cli.identifiability` is computed from one function of the fitted model,
``L`` (a negative log-likelihood, so that ``2 (L - L_min)`` is the likelihood-ratio statistic):

- with a noise model, ``L = n * J`` where ``J`` is the training objective (the NLL per observation plus
  the network weights' penalty, ``weight_decay * sum(w^2)``): the NLL itself, with the penalty as a
  Gaussian prior on the weights (a penalised likelihood, as PEtab.jl's UDE fits with a prior);
- without one (squared errors), ``L = n/2 * log(J)``: the normal likelihood with its standard deviation at
  its maximum-likelihood value ``sqrt(RSS/n)``, profiled out (R's ``nls`` profiles, ``profile.nls``).

When the noise scale is estimated from the residuals (a squared-error fit, or normal noise of constant,
estimated sigma), the intervals are calibrated by the residual degrees of freedom ``n - k`` (``k``: the
learned values other than network weights and that sigma), as R's ``nls`` does: Wald standard errors use
``s^2 = RSS/(n - k)`` and the t distribution; profile intervals the F threshold
``n log(1 + F(1, n - k)/(n - k))``. Otherwise the asymptotic normal and chi-square ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..fitting.parameters import to_constrained, to_unconstrained
from ..problem import Parameter, initial_label


@dataclass
class Target:
    """One learned value an interval is computed for: a parameter (one element of a per-experiment one), a
    noise parameter or a learned initial value, stored unconstrained as element ``index`` of ``tensor``."""

    name: str  # as params.csv names it
    kind: str  # parameter, observation, noise, initial
    tensor: torch.Tensor  # the model's raw (unconstrained) tensor, start dimension first
    index: tuple[int, ...]  # the element of that tensor
    spec: Parameter | None  # the transform (None: an initial value, log-scale when positive)
    positive: bool = False
    profiled_noise: bool = False  # a sigma the objective profiles out in closed form (see ProfiledNoise)
    lower: float | None = None
    upper: float | None = None

    def get_u(self) -> float:
        return float(self.tensor.detach()[self.index])

    def set_u(self, u: float) -> None:
        with torch.no_grad():
            self.tensor[self.index] = u

    def value_of(self, u: float) -> float:
        if self.spec is not None:
            return float(to_constrained(self.spec, torch.tensor(u, dtype=torch.float64)))
        return math.exp(u) if self.positive else u

    def u_of(self, value: float) -> float:
        if self.spec is not None:
            return to_unconstrained(self.spec, value)
        return math.log(value) if self.positive else value

    @property
    def value(self) -> float:
        return self.value_of(self.get_u())

    def derivative(self) -> float:
        """d value / d u at the current point (the chain rule from the unconstrained scale)."""
        u = torch.tensor(self.get_u(), dtype=torch.float64, requires_grad=True)
        v = to_constrained(self.spec, u) if self.spec is not None else (torch.exp(u) if self.positive else u)
        (g,) = torch.autograd.grad(v, u)
        return float(g)

    @property
    def log_scale(self) -> bool:
        """Whether a profile steps on log scale (a positive value)."""
        return self.positive


def targets(model, problem, objective=None) -> list[Target]:
    """The learned values of a single-start model that intervals are computed for, in params.csv's order
    (``objective``: the fit's, which says which noise parameters it profiles out)."""
    out: list[Target] = []
    ds = problem.dataset
    ps = model.parameters_
    for name, p in problem.parameters.items():
        if p.fixed:
            continue
        kind = "parameter" if p.role == "mechanistic" else "observation"
        raw = ps.raw[name]
        if p.per_experiment:
            for b, e in enumerate(ds.experiments):
                out.append(Target(f"{name}[{e.name}]", kind, raw, (0, b), p, p.positive, lower=p.lower, upper=p.upper))
        else:
            out.append(Target(name, kind, raw, (0,), p, p.positive, lower=p.lower, upper=p.upper))
    profiled = profiled_noise_names(objective)
    for name, p in problem.noise_parameters.items():
        if p.fixed:
            continue
        out.append(Target(name, "noise", model.noise.raw[name], (0,), p, True, profiled_noise=name in profiled,
                          lower=p.lower, upper=p.upper))
    for s in problem.states:
        spec = problem.initial[s]
        if not spec.learn:
            continue
        for b, e in enumerate(ds.experiments):
            out.append(Target(initial_label(s, e.name, len(ds.experiments)), "initial", model.initial.raw[s], (0, b),
                              None, spec.positive, lower=0.0 if spec.positive else None))
    return out


def profiled_noise_names(objective) -> set[str]:
    """Noise parameters that the objective profiles out in closed form (sigma = its maximum at every step)."""
    if objective is None or not objective.likelihood:
        return set()
    out: set[str] = set()
    for _, _, roles, _, profiled in objective._noise_groups:
        if profiled:
            out.update(n for names in roles.values() for n in names)
    return out


class LikelihoodFunction:
    """``L`` of a single-start model (see the module docstring), its gradient, and how to calibrate it.

    Arguments:
        model: a single-start :class:`~ude_cli.fitting.model.UDEModel` at the fitted values.
        weight_decay: the penalty weight of the fit's last trajectory stage.
    """

    def __init__(self, model, weight_decay: float = 0.0, objective=None):
        from ..likelihood.objective import Objective

        self.model = model
        self.problem = model.problem
        self.objective = objective if objective is not None else Objective(model, self.problem.config.training.loss)
        self.weight_decay = float(weight_decay)
        self.n = float(self.objective.counts["train"])
        self.likelihood = bool(self.objective.likelihood)
        #: noise parameters taken at the model's value instead of profiled out (a Hessian in them, their profile)
        self.held_noise: set[str] = set()
        self.evaluations = 0
        from ..fitting.switches import relative_step, switch_parameters

        #: the raw tensors of parameters that set a switch of the right-hand side (id -> whether its step is
        #: relative): their gradient is a central finite difference (:mod:`ude_cli.fitting.switches`), as in training
        self.switches = {id(model.parameters_.raw[n]): relative_step(self.problem.parameters[n])
                         for n in switch_parameters(self.problem) if n in model.parameters_.raw}

    # -- the objective in training units (what an optimiser minimises) -----------------------------------
    def training_loss(self, solutions=None) -> torch.Tensor:
        """``J``: the training objective (per observation, penalty included), a 0-d tensor."""
        sols = self.model() if solutions is None else solutions
        self.evaluations += 1
        if self.held_noise:
            values = self.model.noise.values()  # name -> (S, 1), differentiable in the raw tensors
            nll, _ = self.objective._likelihood(sols, "train", {n: values[n][:, 0] for n in self.held_noise})
            data = nll / self.n
        else:
            data = self.objective.loss(sols, "train")
        if self.weight_decay and self.model.network_parameters():
            data = data + self.weight_decay * self.model.weight_penalty()
        return data[0]

    def to_nll(self, j: torch.Tensor) -> torch.Tensor:
        """``L`` from ``J``."""
        if self.likelihood:
            return self.n * j
        return 0.5 * self.n * torch.log(j)

    def objective_change(self, delta_l: float, j: float) -> float:
        """The change of ``J`` (near ``j``) that changes ``L`` by ``delta_l``."""
        return delta_l / self.n if self.likelihood else 2.0 * delta_l * abs(j) / self.n

    def value(self) -> float:
        with torch.no_grad():
            return float(self.to_nll(self.training_loss()))

    def value_and_grad(self, tensors: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        """``L`` and its gradient with respect to ``tensors`` (raw tensors of the model)."""
        for t in tensors:
            t.grad = None
        loss = self.to_nll(self.training_loss())
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        out = [torch.zeros_like(t) if g is None else g.detach() for t, g in zip(tensors, grads, strict=True)]
        if self.switches:
            from ..fitting.switches import finite_differences

            def per_start(n: int):
                return lambda: self.to_nll(self.training_loss()).expand(n)  # L of start 0 (the others' entries: 0)

            for k, t in enumerate(tensors):
                if id(t) in self.switches:
                    out[k] = finite_differences(t, per_start(t.shape[0]), self.switches[id(t)])
        return float(loss.detach()), out

    def residual_vector(self, j0: float) -> np.ndarray:
        """The training cells' residuals in units of the noise (for the Gauss-Newton information, used when
        :meth:`scale_estimated`): ``(mu - y)/sigma`` with the model's sigma for normal noise, on log scale for
        log-normal noise; the (scaled, log) residual over ``sqrt(j0)`` (``j0``: the objective at the fit) for squared
        errors, so that ``sum(z^2)/2`` has the curvature of ``L`` there."""
        obj = self.objective
        with torch.no_grad():
            preds = obj.observed(self.model())
            self.evaluations += 1
            if self.likelihood:
                sigma = torch.cat([v["sigma"][:1, 0] for v in obj.noise_values()])  # (n_observables,)
                logs = torch.tensor([m is not None and m.name in ("lognormal", "loglaplace") for m in obj.noise])
            parts = []
            for pred, y, mask in zip(preds, obj._obs, obj._masks["train"], strict=True):
                p = pred[:, :1]
                if self.likelihood:
                    if bool(logs.any()):  # log-normal: normal in log y around log mu (mu floored as in the NLL)
                        lp = torch.log(torch.maximum(p, obj.floor))
                        ly = torch.log(torch.where(mask > 0, y, torch.ones_like(y)))
                        p, y = torch.where(logs, lp, p), torch.where(logs, ly, y)
                    r = (p - y) / sigma
                else:
                    r = (obj._transform(p) - y) * obj.weights / math.sqrt(j0)
                parts.append(r[mask > 0].reshape(-1))
        return torch.cat(parts).cpu().numpy()

    # -- calibration -------------------------------------------------------------------------------
    def scale_estimated(self) -> bool:
        """Whether the noise scale is estimated from the residuals (squared errors; normal noise of constant sigma,
        or log-normal noise, whose sigma is estimated): then the intervals use the residual degrees of freedom."""
        if not self.likelihood:
            return True
        groups = self.objective._noise_groups
        return all(profiled and ((model.name == "normal" and model.error == "constant") or model.name == "lognormal")
                   for model, _, _, _, profiled in groups)

    def gauss_newton(self) -> bool:
        """Whether the information is Gauss-Newton's, the expected information ``J^T J / sigma^2`` of the residuals
        in noise units: when the scale is estimated from the residuals (:meth:`scale_estimated`, as nls), and with
        Laplace noise, whose observed curvature in the predictions is zero almost everywhere (``|y - mu|`` is
        piecewise linear), so that only the expected information measures it (any mix of normal noise of constant
        sigma, log-normal, Laplace and log-Laplace noise)."""
        if self.scale_estimated():
            return True
        if not self.likelihood:
            return False
        models = [m for m, *_ in self.objective._noise_groups]
        return (any(m.name in ("laplace", "loglaplace") for m in models)
                and all(m.scale_information is not None and m.error == "constant" for m in models))

    def degrees_of_freedom(self, k: float) -> float:
        """``n - k`` (at least 1)."""
        return max(self.n - k, 1.0)

    def threshold(self, level: float, k: float) -> tuple[float, str]:
        """The likelihood-ratio statistic ``2 (L - L_min)`` at the edge of a ``level`` profile interval, and how it
        was computed."""
        return lr_threshold(level, self.n, self.degrees_of_freedom(k), self.scale_estimated())

    def quantile(self, level: float, k: float) -> tuple[float, str]:
        """The multiplier of a standard error for a two-sided ``level`` Wald interval, and its distribution."""
        from scipy import stats

        if self.scale_estimated():
            df = self.degrees_of_freedom(k)
            return float(stats.t.ppf(0.5 + level / 2, df)), f"t({df:.4g})"
        return float(stats.norm.ppf(0.5 + level / 2)), "normal"

    def variance_factor(self, k: float) -> float:
        """``n/(n - k)`` when the noise scale is estimated from the residuals (s^2 = RSS/(n - k)), else 1."""
        return self.n / self.degrees_of_freedom(k) if self.scale_estimated() else 1.0


def final_weight_decay(problem) -> float:
    """The weight decay of the fit's last trajectory stage (the objective the reported fit minimised)."""
    training = problem.config.training
    if training.stages:
        for stage in reversed(training.stages):
            if stage.objective == "trajectory":
                return float(stage.weight_decay if stage.weight_decay is not None else training.weight_decay)
    return float(training.weight_decay)


def lr_threshold(level: float, n: float, df: float, scale_estimated: bool) -> tuple[float, str]:
    """The likelihood-ratio statistic ``2 (L - L_min)`` at the edge of a ``level`` profile interval of one value, and
    how it was computed: with the noise scale estimated from the residuals (``n`` cells, ``df = n - k`` residual
    degrees of freedom) ``n log(1 + F(1, df)/df)``, the F-calibrated threshold of R's ``profile.nls``; else the
    chi-square(1) quantile."""
    from scipy import stats

    if scale_estimated:
        f = float(stats.f.ppf(level, 1, df))
        return n * math.log1p(f / df), (f"n log(1 + F(1, {df:.4g})/{df:.4g}) (the noise scale is estimated "
                                        "from the residuals: F-calibrated, as R's profile.nls)")
    return float(stats.chi2.ppf(level, 1)), "chi-square(1) quantile (likelihood ratio)"
