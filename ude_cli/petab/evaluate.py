"""The log-likelihood, its gradient and the simulations of a problem at given parameter values.

Computed by the ordinary ``ude`` machinery (:class:`~ude_cli.fitting.model.UDEModel` and
:class:`~ude_cli.likelihood.objective.Objective`, the objects ``ude fit`` trains) from a config: a PEtab
problem is translated first (:mod:`.convert`). Every parameter is held at its value (no transform to an
unconstrained scale, no profiled noise parameter) and the gradient is torch's reverse mode through the ODE
solution, on the parameters' linear scale (and, for a PEtab problem, on each parameter's ``parameterScale``
too). The solver runs at tight tolerances (``rtol`` 1e-10, ``atol`` 1e-12 unless the config's are tighter).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..sources import is_petab

#: Tolerances of an evaluation (tighter ones in the config are kept).
RTOL = 1e-10
ATOL = 1e-12
#: Most solver steps between two output times in an evaluation.
MAX_STEPS = 1_000_000


@dataclass
class Evaluation:
    """What :func:`evaluate` computed."""

    llh: float  # log-likelihood with every normalising constant (PEtab's / AMICI's sign: larger is better)
    gradient: dict[str, float]  # d llh / d value, linear scale, per estimated parameter
    gradient_scaled: dict[str, float] | None  # d llh / d (value on parameterScale) (PEtab problems only)
    values: dict[str, float]  # the values evaluated at
    simulations: pd.DataFrame  # one row per measurement: ids, time, measurement, simulation
    solver: dict = field(default_factory=dict)
    seconds: float = 0.0
    source: str = ""
    method: str = ""
    #: network -> layer -> {"weight": d llh / d weight (out, in), "bias": ...} (PyTorch layout)
    gradient_networks: dict = field(default_factory=dict)
    #: the sum of the objective priors' log-densities (None: the problem has no prior); with priors, the
    #: gradients are of the log-posterior ``llh + log_prior``
    log_prior: float | None = None
    #: the parameters whose gradient is a central finite difference: they set where a ``where`` of the
    #: right-hand side switches, which the solvers' gradient does not see (:mod:`ude_cli.fitting.switches`)
    finite_differences: list[str] = field(default_factory=list)

    @property
    def log_posterior(self) -> float | None:
        return None if self.log_prior is None else self.llh + self.log_prior

    def to_json(self) -> dict:
        return {"source": self.source, "llh": self.llh, "nllh": -self.llh, "gradient": self.gradient,
                "gradient_scaled": self.gradient_scaled, "values": self.values,
                "simulations": self.simulations.to_dict(orient="records"), "solver": self.solver,
                "gradient_networks": self.gradient_networks, "log_prior": self.log_prior,
                "log_posterior": self.log_posterior, "seconds": round(self.seconds, 4), "method": self.method,
                "finite_differences": self.finite_differences}


def _load(source: str | Path):
    """(the config, the PEtab name map or None, a temporary folder to delete once the data are read, or None)."""
    import tempfile

    from ..config import config_from_dict, load_config

    path = Path(source)
    if not path.is_file():
        raise ConfigError("file not found", where=str(path))
    if is_petab(path):
        from .convert import translate, write
        from .problem import load_problem

        problem = load_problem(path)
        tr = translate(problem)
        tmp = tempfile.TemporaryDirectory(prefix="ude-evaluate-")
        folder = Path(tmp.name)
        write(tr, problem, folder)
        cfg = config_from_dict(json.loads(json.dumps(tr.config)), label=str(path), path=folder / "config.yaml")
        return cfg, {"parameters": tr.parameters, "rows": tr.rows, "networks": tr.networks}, tmp
    cfg = load_config(path)
    sidecar = path.parent / "petab.json"
    mapping = None
    if sidecar.is_file():
        raw = json.loads(sidecar.read_text())
        mapping = {"parameters": raw.get("parameters", {}), "rows": raw.get("measurements", {}).get("rows", []),
                   "networks": raw.get("networks", {})}
    return cfg, mapping, None


def evaluate(source: str | Path, *, values: dict[str, float] | None = None, rtol: float = RTOL,
             atol: float = ATOL) -> Evaluation:
    """Evaluate the PEtab problem or ``ude`` config ``source`` at ``values`` (PEtab ids for a PEtab problem, the
    config's names otherwise; default: the nominal values / the config's ``init``)."""
    import torch

    from ..problem import resolve

    started = time.perf_counter()
    cfg, mapping, tmp = _load(source)
    from ..fitting.model import UDEModel
    from ..likelihood.objective import Objective

    if TYPE_CHECKING:
        from ..fitting.neural import MLP
    try:  # the data and network weights are read from the (temporary) folder of the translated config
        solver = cfg.solver.model_copy(update={"rtol": min(rtol, cfg.solver.rtol), "atol": min(atol, cfg.solver.atol),
                                               "max_steps": max(MAX_STEPS, cfg.solver.max_steps)})
        cfg = cfg.model_copy(update={"solver": solver})
        cfg._path = getattr(cfg, "_path", None) or Path(source)
        problem = resolve(cfg)
        at, differentiate, report = _values(problem, mapping, values, str(source))
        from ..fitting.switches import switch_parameters

        switches = set(differentiate) & set(switch_parameters(problem))  # before every value is held below
        problem.parameters = {n: dataclasses.replace(p, fixed=True, init=at[n], lower=None, upper=None,
                                                     positive=False) for n, p in problem.parameters.items()}
        problem.noise_parameters = {n: dataclasses.replace(p, fixed=True, init=at[n], lower=None, upper=None)
                                    for n, p in problem.noise_parameters.items()}
        torch.set_num_threads(cfg.training.threads or 1)
        model = UDEModel(problem)
    finally:
        if tmp is not None:
            tmp.cleanup()
    leaves = {}
    for n in differentiate:
        owner = model.noise if n in problem.noise_parameters else model.parameters_
        buf = getattr(owner, f"fixed_{n}")
        buf.requires_grad_(True)
        leaves[n] = buf
    objective = Objective(model)  # without a noise model: the likelihood with sigma at its maximum (objective.py)
    sols = model()
    nll = objective.nll(sols, "train")[0]
    nets = cast("dict[str, MLP]", dict(model.rhs.networks.items()))
    # the learned network arrays (a fixed network's, and frozen arrays, have no gradient: reported empty)
    arrays = [(net, k, part, tensor) for net, module in nets.items() for k, part, tensor in _arrays_of(module)]
    learned = [a for a in arrays if a[3].requires_grad]
    tensors = [*leaves.values(), *(a[3] for a in learned)]
    prior = _log_prior(problem, leaves, learned)
    objective_value = nll if prior is None else nll - prior  # the negative log-posterior with priors
    # not when nothing differentiable is left (every parameter differentiated sets a switch, on torchdiffeq)
    differentiable = bool(tensors) and objective_value.requires_grad
    grads = torch.autograd.grad(objective_value, tensors, allow_unused=True) if differentiable else [None] * len(tensors)
    llh = -float(nll.detach())
    dvalue = {n: (-float(g.sum()) if g is not None else 0.0) for n, g in zip(leaves, grads[:len(leaves)], strict=True)}
    if switches & set(leaves):  # a switch of the right-hand side: the solvers' gradient misses it
        from ..fitting.switches import finite_differences

        def log_posterior() -> torch.Tensor:  # (1,): the one start's
            value = -objective.nll(model(), "train")[0]
            return (value if prior is None else value + _log_prior(problem, leaves, learned)).reshape(1)

        for n in sorted(switches & set(leaves)):  # in the value, relative: a threshold of 1.5e-5 needs a tiny step
            dvalue[n] = float(finite_differences(leaves[n], log_posterior, relative=True, step=1e-4).sum())
    by_array = {(net, k, part): g for (net, k, part, _), g in zip(learned, grads[len(leaves):], strict=True)}
    networks: dict[str, dict[str, dict[str, list]]] = {}
    net_layers = (mapping or {}).get("networks", {})
    for net, k, part, _ in arrays:  # d llh / d weight in PyTorch's layout: (out, in)
        if not any(a[0] == net for a in learned):
            continue
        if isinstance(k, str):  # a graph network's array (layer id, array name): stored as PyTorch's
            lid, g = k, by_array.get((net, k, part))
            value = [] if g is None else (-g[0]).tolist()
        else:  # ude's MLP: a weight stored (starts, in, out), a bias (starts, 1, out)
            lid = net_layers[net]["layers"][k] if net in net_layers else f"layer{k}"
            g = by_array.get((net, k, part))
            value = [] if g is None else ((-g[0].T).tolist() if part == "weight" else (-g[0, 0]).tolist())
        networks.setdefault(net, {}).setdefault(lid, {})[part] = value
    with torch.no_grad():
        observed = [p.detach().cpu().numpy() for p in objective.observed(sols)]
    simulations = _simulations(problem, model, objective, observed, mapping)
    gradient, scaled = {}, None
    if mapping is not None:
        scaled = {}
        for pid, entry in mapping["parameters"].items():
            if not entry.get("estimate", True):
                continue
            g = dvalue.get(entry["name"], 0.0) * entry["factor"]  # d llh / d petab value
            gradient[pid] = g
            v = report[pid]
            scaled[pid] = {"lin": g, "log": g * v, "log10": g * v * math.log(10.0)}[entry["scale"]]
    else:
        gradient = dvalue
    return Evaluation(
        llh=llh, gradient=gradient, gradient_scaled=scaled, values=report, simulations=simulations,
        solver={"method": model.solver_choice().get("solver_method"), "engine": model.engine,
                "rtol": solver.rtol, "atol": solver.atol},
        seconds=time.perf_counter() - started, source=str(source), gradient_networks=networks,
        log_prior=None if prior is None else float(prior.detach()),
        finite_differences=sorted(pid for pid, e in mapping["parameters"].items() if e["name"] in switches)
        if mapping is not None else sorted(switches),
        method=("log-likelihood with every normalising constant (sum over measurements of log densities), "
                "from ude's own likelihood of the translated config; gradient by reverse-mode differentiation "
                "through the ODE solution" + ("" if prior is None else "; the log-prior is the sum of the "
                                              "priors' log-densities (the parameter table's, in the config), and the gradient is of the "
                                              "log-posterior (llh + log-prior)")))


def _log_prior(problem, leaves: dict, learned: list):
    """The sum of the config's priors' log-densities (a torch scalar) at the values evaluated (the leaves)
    and the learned network arrays, or None when it gives no prior."""
    import torch

    from ..likelihood.prior import log_density

    terms = []
    for name, leaf in leaves.items():
        p = problem.parameters.get(name)
        if p is not None and p.prior is not None:
            terms.append(log_density(p.prior.distribution, p.prior.parameters, leaf.reshape(-1)[:1],
                                     p.prior.scale, p.prior.truncated).sum())
    for net, k, part, tensor in learned:
        prior = problem.networks[net].priors.get(f"{part}{k}")
        if prior is not None:
            terms.append(log_density(prior.distribution, prior.parameters, tensor[0], prior.scale, prior.truncated).sum())
    return torch.stack(terms).sum() if terms else None


def _arrays_of(module) -> list[tuple[int | str, str, Any]]:
    """``(layer, array name, tensor)`` of a network's arrays: an MLP's by layer index (weight, bias), a graph
    network's (:mod:`ude_cli.petab.network.batched`) by layer id and its arrays' names."""
    from ..fitting.neural import MLP

    if isinstance(module, MLP):
        return [(k, part, tensor) for k in range(len(module.weights))
                for part, tensor in (("weight", module.weights[k]), ("bias", module.biases[k]))]
    return [(*name.rsplit(".", 1), tensor) for name, tensor in zip(module.names, module.arrays, strict=True)]


def _values(problem, mapping, given: dict[str, float] | None, label: str):
    """(ude name -> value for every parameter and noise parameter, names to differentiate, reported values)."""
    at = {n: p.init for n, p in problem.parameters.items()}
    at.update({n: p.init for n, p in problem.noise_parameters.items()})
    given = dict(given or {})
    report: dict[str, float] = {}
    if mapping is not None:
        for pid, entry in mapping["parameters"].items():
            value = float(given.pop(pid, entry["nominal"]))
            report[pid] = value
            if entry["name"] in at:
                at[entry["name"]] = value * entry["factor"]
        differentiate = [e["name"] for e in mapping["parameters"].values()
                         if e.get("estimate", True) and e["name"] in at]
    else:
        for n in list(given):
            if n in at:
                at[n] = float(given.pop(n))
        differentiate = [n for n, p in problem.parameters.items() if not p.fixed and not p.per_experiment]
        differentiate += [n for n, p in problem.noise_parameters.items() if not p.fixed]
        report = {n: at[n] for n in differentiate}
    if given:
        raise ConfigError(f"unknown parameter(s) {', '.join(sorted(given))}", where=label)
    return at, differentiate, report


def _simulations(problem, model, objective, observed: list[np.ndarray], mapping) -> pd.DataFrame:
    """One row per measurement: the prediction of its observable at its time in its experiment."""
    names = objective.names
    by_column = {problem.observables[n].column: objective.columns[j] for j, n in enumerate(names)}
    where: dict[str, tuple[int, int]] = {}  # experiment name -> (group, position)
    for k, g in enumerate(model.groups):
        for pos, b in enumerate(g.experiments):
            where[problem.dataset.experiments[b].name] = (k, pos)

    def value(experiment: str, t: float, column: str) -> float:
        k, pos = where[experiment]
        i = int(np.searchsorted(model.groups[k].times, t))
        return float(observed[k][i, 0, pos, by_column[column]])

    if mapping is not None and mapping["rows"]:
        records = [{"observableId": r[0], "simulationConditionId": r[1], "time": r[2], "measurement": r[3],
                    "simulation": value(r[4], r[2], r[5])} for r in mapping["rows"]]
        return pd.DataFrame(records)
    records = []
    for e in problem.dataset.experiments:
        for j, n in enumerate(names):
            column = problem.observables[n].column
            for i, t in enumerate(e.t):
                y = e.observations[i, j]
                if np.isfinite(y):
                    records.append({"observable": n, "experiment": e.name, "time": float(t), "measurement": float(y),
                                    "simulation": value(e.name, float(t), column)})
    return pd.DataFrame(records)
