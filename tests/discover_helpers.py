"""Helpers for the tests of ``ude discover``, ``ude predict`` and ``ude report``.

* :class:`ExactModel` stands in for a fitted UDE whose networks are *exactly* known functions, so
  that a discovery can be tested against exact answers in a few seconds, without training.
* :func:`synthetic_problem` writes a CSV from a known ODE (with multiplicative noise) and a config.
* :func:`tiny_run` fits the sample Lotka–Volterra UDE for two Adam iterations: a real run directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.integrate import solve_ivp

from ude_cli.config import config_from_dict
from ude_cli.discovery.refit import DataObjective, OdeSystem, predict_all, replace_terms
from ude_cli.expressions import parse_expression
from ude_cli.problem import resolve

ROOT = Path(__file__).resolve().parents[1]
LV_DATA = ROOT / "data" / "lotka_volterra.csv"
LV_TRUTH = {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8}
LV_Y0 = [0.44249296, 4.6280594]


def lv_rhs(t, u, alpha=1.3, beta=0.9, gamma=0.8, delta=1.8):
    x, y = u
    return [alpha * x - beta * x * y, -gamma * y + delta * x * y]


def lv_truth(t: np.ndarray) -> np.ndarray:
    """The true Lotka–Volterra trajectory of the protocol at times ``t``: ``(T, 2)``."""
    return solve_ivp(lv_rhs, (0, float(t[-1])), LV_Y0, t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T


class _Text:
    def __init__(self, text: str):
        self._text = text

    def text(self) -> str:
        return self._text


class ExactModel:
    """A fitted-model stand-in whose learned terms are exact expressions (``dense`` and
    ``terms_along`` as :class:`~ude_cli.fitting.model.UDEModel` has them, one start)."""

    n_starts = 1

    def __init__(self, problem, terms: dict[tuple[str, int], str]):
        self.problem = problem
        single = {n for n, s in problem.networks.items() if s.outputs == 1}
        equations = {s: replace_terms(e, {k: _Text(v) for k, v in terms.items()}, single)
                     for s, e in problem.equations.items()}
        self.system = OdeSystem(problem, equations)
        self.values = self.system.values()
        self._functions = {k: parse_expression(v).compile("numpy") for k, v in terms.items()}

    def dense(self, n_points: int = 400, until: float | None = None):
        out = []
        for b, e in enumerate(self.problem.dataset.experiments):
            end = float(e.t[-1]) if until is None else until
            t = np.linspace(self.system.t0[b], end, n_points)
            out.append((t, self.system.simulate(b, self.values, t).y[:, None, :]))
        return out

    def terms_along(self, t, y):
        env = {**self.values, "t": t}
        for j, s in enumerate(self.problem.states):
            env[s] = y[:, 0, j]
        out = {}
        for net, spec in self.problem.networks.items():
            cols = [np.broadcast_to(self._functions[(net, i)](env), np.shape(t)) for i in range(spec.outputs)]
            out[net] = np.stack(cols, -1)[:, None, :]
        return out

    def metrics(self) -> dict:
        """The loss of the exact model on the data, as a fit's metrics.json would give it."""
        objective = DataObjective(self.problem)
        preds, _ = predict_all(self.system, self.values, self.system.initial)
        return {"loss": objective.loss(preds, "train"), "validation_loss": objective.loss(preds, "validation")}


def synthetic_problem(directory: Path, rhs, y0, t, noise: float, seed: int, model: dict, networks: dict,
                      columns: dict[str, str], units: dict | None = None):
    """Solve ``rhs`` exactly, add multiplicative noise, write ``data.csv`` and ``config.yaml``;
    return the resolved problem."""
    directory.mkdir(parents=True, exist_ok=True)
    x = solve_ivp(rhs, (t[0], t[-1]), y0, t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T
    y = x * (1 + noise * np.random.default_rng(seed).standard_normal(x.shape))
    states = list(columns)
    pd.DataFrame({"t": t, **{columns[s]: y[:, j] for j, s in enumerate(states)}}).to_csv(directory / "data.csv",
                                                                                          index=False)
    raw = {"name": directory.name, "data": {"file": "data.csv", "columns": columns, "units": units or {}},
           "model": model, "networks": networks}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return resolve(config_from_dict(raw, label=str(path), path=path))


def lv_config(data: Path = LV_DATA, iterations: int = 2) -> dict:
    """The sample Lotka–Volterra UDE config (``configs/lotka_volterra.yaml``), briefly trained."""
    return {
        "name": "lv_tiny",
        "data": {"file": str(data), "columns": {"x": "prey", "y": "predator"}},
        "model": {"states": ["x", "y"], "parameters": {"alpha": {"init": 1.3, "fixed": True},
                                                       "gamma": {"init": 0.8, "fixed": True}},
                  "equations": {"x": "alpha*x + U[0]", "y": "-gamma*y + U[1]"},
                  "initial": {"x": LV_Y0[0], "y": LV_Y0[1]}},
        "networks": {"U": {"inputs": ["x", "y"], "outputs": 2, "hidden": [5, 5, 5], "activation": "rbf",
                           "final_scale": 1.0, "normalize": False, "seed": 100}},
        "training": {"warm_start": "none", "stages": [{"optimizer": "adam", "lr": 0.01, "iterations": iterations}]},
        "output": {"plots": False, "dpi": 80},
    }


def lv_problem(directory: Path):
    """The canonical Lotka–Volterra UDE problem (sample data), config written in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = lv_config()
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return resolve(config_from_dict(raw, label=str(path), path=path))


def tiny_run(directory: Path) -> Path:
    """A real run directory: the sample LV UDE after two Adam iterations (a second or two)."""
    from ude_cli.api import run_fit

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lv_tiny.yaml"
    path.write_text(yaml.safe_dump(lv_config()), encoding="utf-8")
    _, out = run_fit(path, out=directory / "run", plots=False, command=["ude", "fit", str(path)])
    return out


def exact_lv_discovery(run_dir: Path, **settings):
    """Run the discovery of the sample LV problem with the exact terms standing in for the network
    and write it into ``run_dir/discovery`` (for report and predict tests)."""
    from ude_cli.discovery.discover import DiscoverSettings, discover
    from ude_cli.discovery.files import write_discovery
    from ude_cli.runs.load import load_run

    run = load_run(run_dir, with_model=False)
    model = ExactModel(run.problem, {("U", 0): "-0.9*x*y", ("U", 1): "1.8*x*y"})
    options = {"samples": 40, "propose": 2, "horizon": 20.0, **settings}
    d = discover(run.problem, model, model.metrics(), DiscoverSettings(**options))
    write_discovery(d, run_dir / "discovery", plots=True, dpi=60)
    return d
