"""The training objective and the likelihood of a fit, in torch: one implementation for every engine.

Both engines (torchdiffeq and the compiled one, native code included) produce state solutions; the
objective maps them through the observables (:mod:`.observation`) and compares with the data:

- with a noise model (``noise:`` or an observable's ``noise:``), the objective is the negative
  log-likelihood of the observed cells divided by their number: :meth:`Objective.nll` is the total, with
  every normalising constant (so that it equals PEtab's / AMICI's / PEtab.jl's value for the same problem);
- without one, ``training.loss``: the mean squared error over observed cells, optionally divided by each
  observable's spread (``scaled``) or on log scale (``log``), exactly as before noise models existed. The
  likelihood reported for such a fit is the normal (log-normal for ``log``) one with the standard deviation
  at its maximum-likelihood value given the residuals (``sqrt(RSS/n)``, one for all observables, relative to
  each observable's spread for ``scaled``), as R's ``logLik`` of an ``nls`` fit.

Observations are aligned with each group's union time grid once; an evaluation is a handful of tensor
operations per group. Empty cells carry weight 0 and never reach a logarithm.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import LossSpec
from .noise import noise_model, squared_error_description
from .noise.base import LOG_2PI, NoiseModel
from .observation import ObservationModel

#: Predictions are clamped at this fraction of an observable's spread before a log is taken.
LOG_FLOOR = 1e-9


class Objective:
    """Loss and likelihood of a :class:`~ude_cli.fitting.model.UDEModel`'s solutions against the data, per start.

    Arguments:
        model: the model whose groups hold the aligned observations.
        spec: the loss settings without a noise model (default: the config's ``training.loss``).
    """

    def __init__(self, model, spec: LossSpec | None = None):
        problem = model.problem
        self.model = model
        self.problem = problem
        self.spec = spec if spec is not None else problem.config.training.loss
        self.likelihood = problem.likelihood
        self.observation = ObservationModel(problem)
        self.observation.rhs = model.rhs  # networks in observable formulas are the model's
        self.names = list(problem.dataset.observables)
        dt = model.dtype
        # the legacy loss on directly observed states keeps the state layout: today's arithmetic, bit for bit
        self.state_layout = not self.likelihood and self.observation.direct
        #: per observable: its column in the layout of :meth:`observed`'s predictions
        self.columns: list[int]
        if self.state_layout:
            mean, std = problem.dataset.state_stats()
            self.columns = [problem.states.index(o) for o in self.names]
        else:
            mean, std = problem.dataset.observable_stats()
            self.columns = list(range(len(self.names)))
        self.spread = std
        self.weights = torch.tensor(1.0 / std if self.spec.scale == "std" else np.ones_like(std), dtype=dt)
        self.floor = torch.tensor(LOG_FLOOR * np.maximum(std, 1e-300), dtype=dt)
        self.noise: list[NoiseModel | None] = []
        self.noise_roles: list[dict[str, str]] = []
        for name in self.names:
            o = problem.observables[name]
            self.noise.append(noise_model(o.noise.distribution, o.noise.error) if o.noise is not None else None)
            self.noise_roles.append(dict(o.noise_parameters))
        log_obs = self.spec.log and not self.likelihood
        self._obs: list[torch.Tensor] = []
        self._masks: dict[str, list[torch.Tensor]] = {"train": [], "validation": []}
        for g in model.groups:
            if self.state_layout:
                observed, train, valid = g.observed, g.train, g.valid
            else:
                observed, train, valid = g.observations, g.obs_train, g.obs_valid
            safe = 1.0 if (log_obs or self.likelihood) else 0.0  # never a log of a missing cell
            obs = np.where(np.isfinite(observed), observed, safe)
            obs_t = torch.tensor(obs, dtype=dt)[:, None]  # (T, 1, Bg, n)
            self._obs.append(torch.log(obs_t) if log_obs else obs_t)
            self._masks["train"].append(torch.tensor(train, dtype=dt)[:, None])
            self._masks["validation"].append(torch.tensor(valid, dtype=dt)[:, None])
        self.counts = {k: float(sum(m.sum() for m in v)) for k, v in self._masks.items()}
        if self.likelihood:
            self._prepare_noise_groups()

    def _prepare_noise_groups(self) -> None:
        """Observables grouped by noise model (one call covers a group), with each group's observations
        prepared once (:meth:`NoiseModel.prepare`) and its masks, counts and data-only constants per split."""
        models = [m for m in self.noise if m is not None]
        assert len(models) == len(self.noise)  # with a likelihood, every observable has a noise model
        kinds: dict[tuple[str, str], list[int]] = {}
        for j, model in enumerate(models):
            kinds.setdefault((model.name, model.error), []).append(j)
        #: (model, observables' index or None for all, role -> parameter names, floor or None, profiled)
        self._noise_groups: list[tuple[NoiseModel, torch.Tensor | None, dict[str, list[str]],
                                       torch.Tensor | None, bool]] = []
        for idx in kinds.values():
            model = models[idx[0]]
            roles = {role: [self.noise_roles[j][role] for j in idx] for role in model.roles}
            everything = idx == list(range(len(self.names)))
            specs = [self.problem.noise_parameters.get(n) for names in roles.values() for n in names]
            # an estimated sigma with a closed-form maximum is profiled out: always at its best, no iterations
            # (not one given by a formula: None here)
            profiled = model.profiles and all(p is not None and not p.fixed and p.lower is None and p.upper is None
                                              for p in specs)
            self._noise_groups.append((model, None if everything else torch.tensor(idx), roles,
                                       self.floor[idx] if model.positive else None, profiled))
        self._prepared: list[list[tuple]] = []
        for k, obs in enumerate(self._obs):
            per_group = []
            for model, index, *_ in self._noise_groups:
                y = obs if index is None else obs.index_select(-1, index)
                y, const = model.prepare(y)
                masks, counts, consts = {}, {}, {}
                for split, all_masks in self._masks.items():
                    m = all_masks[k] if index is None else all_masks[k].index_select(-1, index)
                    masks[split], counts[split] = m, m.sum(dim=(0, 2))
                    consts[split] = float((const * m).sum())
                per_group.append((y, masks, counts, consts))
            self._prepared.append(per_group)
        #: per split and noise group: the observed cells of every data group ``(1, k)``
        self._counts = {split: [sum(prepared[g][2][split] for prepared in self._prepared)
                                for g in range(len(self._noise_groups))] for split in self._masks}

    def add_split(self, name: str, rows: list[int]) -> None:
        """A split of the training cells at each group's first ``rows[k]`` times (a curriculum's window)."""
        if name in self._masks:
            return
        masks = []
        for k, m in enumerate(self._masks["train"]):
            window = m.clone()
            window[rows[k]:] = 0
            masks.append(window)
        self._masks[name] = masks
        self.counts[name] = float(sum(m.sum() for m in masks))
        if self.likelihood:
            self._prepare_noise_groups()

    # -- predictions -----------------------------------------------------------------------------
    def observed(self, solutions: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each group's observable predictions ``(T, S, Bg, n)`` (in the state layout for a legacy loss on
        directly observed states: the solutions themselves)."""
        if self.state_layout:
            return list(solutions)
        model = self.model
        out = []
        for k, sol in enumerate(solutions):
            index = model.group_index[k]
            out.append(self.observation.predict(sol, model.times[k], model.parameters_.values(index),
                                                model.rhs.constants, index))
        return out

    def _for_loss(self, solutions: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`observed` for the objective. An observable whose formula is not finite at a cell no split observes
        (a ratio of states that are all 0 at t0, where nothing is measured: Laske_PLOSComputBiol2019's FracNucInt)
        is evaluated again at its observed cells only, and reads 1 at the others: a NaN there would survive its
        weight 0 (0 * NaN) into the loss and, through the formula's graph, into the gradient. Where every
        prediction is finite (the usual case) this is :meth:`observed` itself."""
        out = self.observed(solutions)
        if self.state_layout:
            return out
        model = self.model
        for k, pred in enumerate(out):
            if bool(torch.isfinite(pred).all()):
                continue
            wanted = torch.stack([m[k] for m in self._masks.values()]).sum(0)[:, 0] > 0  # (T, Bg, n): measured
            bad = (~torch.isfinite(pred)).any(dim=1)  # (T, Bg, n)
            fixable = [j for j in range(pred.shape[-1])
                       if self.observation.functions[j] is not None and bool((bad[..., j] & ~wanted[..., j]).any())]
            if not fixable:
                continue
            cells: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for j in fixable:
                rows, batch = wanted[..., j].nonzero(as_tuple=True)
                cells[j] = (rows, batch)
            index = model.group_index[k]
            out[k] = self.observation.predict(solutions[k], model.times[k], model.parameters_.values(index),
                                              model.rhs.constants, index, cells=cells)
        return out

    def curves(self, dense: list[tuple[np.ndarray, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Per experiment: each observable that is not a state alone along a dense trajectory ``(t, y (T, S, n))``,
        as ``name -> (T, S)``."""
        names = [o for o, j in zip(self.names, self.observation.state_index, strict=True) if j is None]
        if not names:
            return [{} for _ in dense]
        return [{o: pred[:, :, self.names.index(o)] for o in names} for pred in self.along(dense)]

    def along(self, dense: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Per experiment: every observable (in :attr:`names`' order) along a dense trajectory
        ``(t, y (T, S, n))``, as ``(T, S, n_observables)``."""
        model = self.model
        out = []
        with torch.no_grad():
            for b, (t, y) in enumerate(dense):
                if self.state_layout:
                    out.append(y[:, :, self.columns])
                    continue
                index = torch.tensor([b], dtype=torch.long)
                sol = torch.tensor(y, dtype=model.dtype)[:, :, None, :]
                pred = self.observation.predict(sol, torch.tensor(t, dtype=model.dtype),
                                                model.parameters_.values(index), model.rhs.constants, index)
                out.append(pred[:, :, 0, :].cpu().numpy())
        return out

    def noise_values(self) -> list[dict[str, torch.Tensor]]:
        """Per observable: role -> value ``(S, 1)`` (empty without a noise model)."""
        values = self.model.noise.values()
        return [{role: values[p] for role, p in roles.items()} for roles in self.noise_roles]

    # -- the objective -------------------------------------------------------------------------------
    def loss(self, solutions: list[torch.Tensor], split: str = "train") -> torch.Tensor:
        """The training objective over the observed cells of ``split``, per start ``(S,)``: the mean negative
        log-likelihood per observation with a noise model, else the mean squared (scaled / log) error."""
        count = self.counts[split]
        if count == 0:
            return torch.full((self.model.n_starts,), float("nan"), dtype=self.model.dtype)
        if self.likelihood:
            return self.nll(solutions, split) / count
        total = None
        for pred, obs, mask in zip(self._for_loss(solutions), self._obs, self._masks[split], strict=True):
            r = (self._transform(pred) - obs) * self.weights
            part = (r * r * mask).sum(dim=(0, 2, 3))
            total = part if total is None else total + part
        assert total is not None  # count > 0: there is a group
        return total / count

    def _transform(self, pred: torch.Tensor) -> torch.Tensor:
        if self.spec.log:
            return torch.log(torch.maximum(pred, self.floor))
        return pred

    def nll(self, solutions: list[torch.Tensor], split: str = "train") -> torch.Tensor:
        """The negative log-likelihood of the observed cells of ``split``, with its normalising constants,
        per start ``(S,)``. Without a noise model: the normal (log-normal) likelihood with the standard
        deviation at its maximum-likelihood value (see the module docstring)."""
        count = self.counts[split]
        if count == 0:
            return torch.full((self.model.n_starts,), float("nan"), dtype=self.model.dtype)
        if not self.likelihood:
            return self._profiled_nll(solutions, split)
        if split == "train":
            return self._likelihood(solutions, split)[0]
        # elsewhere, a profiled sigma is the training data's
        return self._likelihood(solutions, split, self._likelihood(solutions, "train")[1])[0]

    def _likelihood(self, solutions: list[torch.Tensor], split: str, given: dict[str, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The NLL per start ``(S,)``, and the maximum-likelihood values ``(S,)`` of the profiled noise parameters
        (``given``: their values instead, no profiling)."""
        params: list[dict[str, torch.Tensor] | None] = [None] * len(self._noise_groups)
        if given or not all(g[4] for g in self._noise_groups):
            values = self.model.noise.values()  # name -> (S, 1)
            values.update({n: v[:, None] for n, v in (given or {}).items()})
            params = [{role: torch.cat([values[n] for n in names], 1) for role, names in roles.items()}
                      if not profiled or given else None for _, _, roles, _, profiled in self._noise_groups]
        total = None
        constant = 0.0
        rss: list = [None] * len(self._noise_groups)
        for pred, prepared in zip(self._for_loss(solutions), self._prepared, strict=True):
            for g, ((model, index, _, floor, profiled), (y, masks, counts, consts)) in enumerate(zip(
                    self._noise_groups, prepared, strict=True)):
                mu = pred if index is None else pred.index_select(-1, index)
                if floor is not None:
                    mu = torch.maximum(mu, floor)
                constant += consts[split]
                if profiled and not given:  # the squared residuals of every group first: sigma is one for all
                    q = model.squared_residuals(y, mu, masks[split])
                    rss[g] = q if rss[g] is None else rss[g] + q
                    continue
                group_params = params[g]
                assert group_params is not None  # None only for a profiled group, handled above
                part = model.masked_nll(y, mu, group_params, masks[split], counts[split]).sum(dim=1)
                total = part if total is None else total + part
        estimates: dict[str, torch.Tensor] = {}
        for g, (model, _, roles, _, _) in enumerate(self._noise_groups):
            if rss[g] is not None:
                nll, value = model.profiled(rss[g], self._counts[split][g])
                total = nll.sum(dim=1) if total is None else total + nll.sum(dim=1)
                estimates.update({name: value[:, i] for i, name in enumerate(roles["sigma"])})
        assert total is not None  # there is a group
        return total + constant, estimates

    def sync_noise(self, solutions: list[torch.Tensor]) -> None:
        """Write the maximum-likelihood values of the profiled noise parameters into the model (after training),
        so that the tables show them and the NLL computed with them is the profiled one."""
        if not self.likelihood:
            return
        from ..fitting.parameters import to_unconstrained

        with torch.no_grad():
            _, estimates = self._likelihood(solutions, "train")
            for name, value in estimates.items():
                spec = self.model.noise.specs[name]
                self.model.noise.raw[name].copy_(torch.tensor([to_unconstrained(spec, float(v)) for v in value],
                                                              dtype=self.model.dtype))

    def _profiled_nll(self, solutions: list[torch.Tensor], split: str) -> torch.Tensor:
        n = self.counts[split]
        # differentiable (ude evaluate's gradient): at sigma's maximum, d nll / d theta is the one at sigma held
        mse = self.loss(solutions, split)  # mean of squared (scaled / log) residuals = sigma^2 at its MLE
        const = 0.0
        for obs, mask in zip(self._obs, self._masks[split], strict=True):
            if self.spec.log:  # the density of y, not of log y: the Jacobian sum(log y)
                const += float((obs * mask).sum())
            if self.spec.scale == "std":  # sigma_j = c * spread_j
                const += float((mask * torch.log(1.0 / self.weights)).sum())
        return 0.5 * n * (torch.log(2 * math.pi * mse) + 1.0) + const

    def noise_estimates(self, solutions: list[torch.Tensor], start: int = 0) -> dict[str, float]:
        """The noise parameters' values: estimated (or fixed) ones of the noise model, or without one the
        maximum-likelihood standard deviation of the squared-error fit (``sigma``)."""
        if self.likelihood:
            values = self.model.noise.numpy()
            return {name: float(v[start]) for name, v in values.items()}
        with torch.no_grad():
            mse = float(self.loss(solutions, "train")[start])
        return {"sigma": math.sqrt(mse) if mse >= 0 else float("nan")}

    # -- per observable -------------------------------------------------------------------------------
    def per_observable_mse(self, solutions: list[torch.Tensor], split: str = "train") -> np.ndarray:
        """Plain MSE in data units per start and observable ``(S, n_observables)`` (NaN where nothing is observed)."""
        sq: float | torch.Tensor = 0.0
        cnt: float | torch.Tensor = 0.0
        with torch.no_grad():
            for k, pred in enumerate(self._for_loss(solutions)):
                g = self.model.groups[k]
                raw = g.observed if self.state_layout else g.observations
                obs = torch.tensor(np.nan_to_num(raw), dtype=pred.dtype)[:, None]
                mask = self._masks[split][k]
                r = (pred - obs) * mask
                sq = sq + (r * r).sum(dim=(0, 2))
                cnt = cnt + mask.sum(dim=(0, 2))
        sq_a, cnt_a = np.asarray(sq), np.asarray(cnt)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(cnt_a > 0, sq_a / np.maximum(cnt_a, 1), np.nan)
        return out[:, self.columns]

    def standardised(self, solutions: list[torch.Tensor], start: int = 0) -> list[np.ndarray]:
        """Per group: standardised residuals ``(T, Bg, n_observables)`` of start ``start`` (NaN where nothing
        is observed): ``(y - prediction)/sd`` under the noise model (Pearson residuals for counts, on log scale
        for log-normal); without one, the residual (of the logarithms for a log loss) over the
        maximum-likelihood sigma (times the observable's spread for ``scaled``)."""
        out = []
        with torch.no_grad():
            noise = self.noise_values()
            sigma = self.noise_estimates(solutions, start).get("sigma", float("nan")) if not self.likelihood else math.nan
            for k, pred in enumerate(self.observed(solutions)):
                g = self.model.groups[k]
                raw = g.observed if self.state_layout else g.observations
                finite = np.isfinite(raw)
                p = pred[:, start]
                y = torch.tensor(np.where(finite, raw, 1.0), dtype=p.dtype)
                cols = []
                for i, j in enumerate(self.columns):
                    if self.likelihood:
                        model = self.noise[i]
                        assert model is not None  # with a likelihood, every observable has a noise model
                        mu = p[..., j]
                        if model.positive:
                            mu = torch.maximum(mu, self.floor[j])
                        z = model.standardised(y[..., j], mu, {r: v[start] for r, v in noise[i].items()})
                    else:
                        r = self._transform(p)[..., j] - (torch.log(y[..., j]) if self.spec.log else y[..., j])
                        z = r * self.weights[j] / sigma
                    cols.append(z.numpy())
                out.append(np.where(finite[..., self.columns], np.stack(cols, -1), np.nan))
        return out

    def describe(self) -> dict[str, str]:
        """observable -> its noise model, in words."""
        out = {}
        for name, model in zip(self.names, self.noise, strict=True):
            out[name] = model.describe() if model is not None else squared_error_description(self.spec)
        return out


__all__ = ["LOG_2PI", "LOG_FLOOR", "Objective"]
