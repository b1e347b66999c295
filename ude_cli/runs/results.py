"""What a fit produced, as tables and dicts, and how it is written to a run directory.

:class:`FitResult` is what :func:`ude_cli.fit` returns: the fitted parameters, predictions,
metrics, loss history and the trained model. ``result.save(dir)`` writes the run directory:

==================  ===============================================================================
``params.csv/json`` name, value, initial value, learned/fixed, bounds (and learned initial states)
``predictions.csv`` experiment, time, split, observed / predicted / residual per state
``trajectory.csv``  the fitted states, learned terms and observables given by a formula on a dense time grid,
                    with the bands along it (``{name}_ci_lower``, ... as in ``predictions.csv``)
``metrics.json``    train / validation MSE per state, loss, iterations, wall time, solver evaluations and engine
``loss.csv``        loss history
``run.json``        resolved config, package versions, seed, SHA-256 of each data file, command line
``model.pt``        ``state_dict`` of the model (load with ``torch.load(..., weights_only=True)``)
``figures/``        fit, residuals, loss and learned terms, as PNG and PDF
``inputs/``         the resolved config and copies of the data files: ``ude fit inputs/config.yaml``
                    repeats the run, and ``ude_cli.runs.load.load_run`` rebuilds the fitted model
==================  ===============================================================================
"""

from __future__ import annotations

import hashlib
import io
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..problem import Problem, initial_label
from .rundir import (
    RUN_FILE,
    Staging,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_target,
)

#: Packages whose versions are recorded in run.json.
RECORDED_PACKAGES = ("ude-cli", "torch", "torchdiffeq", "numpy", "scipy", "pandas", "pydantic", "sympy",
                     "pysindy", "matplotlib")


@dataclass
class FitResult:
    """The outcome of a fit (see the module docstring for the files it writes).

    Attributes:
        problem: the resolved problem (config + data).
        model: the fitted :class:`~ude_cli.fitting.model.UDEModel` (best start first when multistart).
        parameters: one row per parameter (and learned initial state).
        predictions: one row per experiment and observation time.
        metrics: train / validation errors, iterations, timing.
        history: the loss per iteration (Adam) or per LBFGS chunk.
        trajectories: per experiment, ``(t, states)`` on a dense grid.
        terms: per experiment, learned term name -> values along the dense trajectory.
        info: what run.json records.
    """

    problem: Problem
    model: Any
    parameters: pd.DataFrame
    predictions: pd.DataFrame
    metrics: dict
    history: pd.DataFrame
    trajectories: list[tuple[np.ndarray, np.ndarray]]
    terms: list[dict[str, np.ndarray]]
    info: dict = field(default_factory=dict)
    starts: pd.DataFrame | None = None
    #: per experiment: each observable that is not a state alone, along the dense trajectory (name -> (T, S))
    observable_curves: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: the intervals of the learned values (:class:`~ude_cli.identifiability.Uncertainty`)
    uncertainty: Any = None
    #: per experiment, along :attr:`trajectories`' grid: observable -> ``(T, 4)`` (confidence lower, upper,
    #: prediction lower, upper) and unobserved state -> ``(T, 2)``, the bands of
    #: :func:`~ude_cli.identifiability.bands.bands`; None without bands
    curve_bands: list[dict[str, np.ndarray]] | None = None

    # -- convenience ----------------------------------------------------------------------------
    @property
    def values(self) -> dict[str, float]:
        """Parameter values by name: mechanistic, observation and noise parameters (``name[experiment]`` for a
        per-experiment one), learned or fixed (``parameters`` says which)."""
        rows = self.parameters[self.parameters["kind"].isin(["parameter", "observation", "noise"])]
        return dict(zip(rows["name"], rows["value"].astype(float), strict=True))

    @property
    def name(self) -> str:
        return self.problem.config.run_name

    def figures(self) -> dict[str, Any]:
        """The figures (matplotlib ``Figure`` objects) by file stem."""
        from .. import plots

        return plots.all_figures(self)

    def summary(self) -> str:
        m = self.metrics
        return (f"{self.name}: train loss {m['loss']:.4g} after {m['iterations']} iterations "
                f"in {m['wall_seconds']:.1f} s")

    # -- writing -------------------------------------------------------------------------------
    def save(self, out: str | Path, *, overwrite: bool = False, plots: bool | None = None) -> Path:
        """Write the run directory ``out`` (staged, then moved into place); return its path."""
        out = Path(out)
        check_target(out, overwrite)
        staging = Staging(out)
        try:
            self.write_files(staging.path, plots=self.problem.config.output.plots if plots is None else plots)
            return staging.commit(overwrite)
        except BaseException:
            staging.discard()
            raise

    def write_files(self, directory: Path, *, plots: bool = True) -> None:
        import torch

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "params.csv", self.parameters.to_csv(index=False))
        atomic_write_json(directory / "params.json", _records(self.parameters))
        atomic_write_text(directory / "predictions.csv", self.predictions.to_csv(index=False))
        atomic_write_text(directory / "trajectory.csv", self.trajectory_frame().to_csv(index=False))
        atomic_write_json(directory / "metrics.json", self.metrics)
        atomic_write_text(directory / "loss.csv", self.history.to_csv(index=False))
        if self.starts is not None:
            atomic_write_text(directory / "starts.csv", self.starts.to_csv(index=False))
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        atomic_write_bytes(directory / "model.pt", buf.getvalue())
        write_inputs(self.problem, directory / "inputs")
        if plots:
            from .. import plots as plotting

            plotting.write_all(self, directory / "figures", dpi=self.problem.config.output.dpi)
        atomic_write_json(directory / RUN_FILE, {**self.info, "status": "complete"})

    def trajectory_frame(self) -> pd.DataFrame:
        """The fitted states and learned terms on the dense grid, best start, long over experiments."""
        frames = []
        best = self.metrics.get("best_start", 0)  # (not start 0: a multistart's best is any of them)
        for b, (e, (t, y), terms) in enumerate(zip(self.problem.dataset.experiments, self.trajectories, self.terms,
                                                   strict=True)):
            d = {"experiment": e.name, "time": t}
            for j, s in enumerate(self.problem.states):
                d[s] = y[:, best, j]
            for net, idx in self.problem.learned_terms:
                d[self.problem.term_label(net, idx)] = terms[net][:, best, idx]
            d.update(self._curve_columns(b, best))
            frames.append(pd.DataFrame(d))
        return pd.concat(frames, ignore_index=True)

    def _curve_columns(self, b: int, best: int) -> dict[str, np.ndarray]:
        """Experiment ``b``'s observables given by a formula (start ``best``) and the bands along the dense grid:
        ``{name}_ci_lower``, ... as in predictions.csv."""
        from ..identifiability.bands import SUFFIXES

        d: dict[str, np.ndarray] = {}
        for name, values in (self.observable_curves[b] if self.observable_curves else {}).items():
            if name not in self.problem.states:
                d[name] = values[:, best]
        for name, band in (self.curve_bands[b] if self.curve_bands is not None else {}).items():
            d.update({f"{name}_{suffix}": band[:, j] for j, suffix in enumerate(SUFFIXES[:band.shape[-1]])})
        return d


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for row in frame.to_dict(orient="records"):
        # NaN (nothing) and an unbounded interval's end (inf) are null in JSON, which has neither
        out.append({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()})
    return out


# -- building a result from a fitted model -----------------------------------------------------------

def parameter_table(problem: Problem, model, start: int = 0) -> pd.DataFrame:
    """One row per parameter value: mechanistic and observation parameters (one row per experiment for a
    per-experiment one), noise parameters, and learned initial states; ``kind`` tells them apart."""
    values = model.parameter_values()
    ds = problem.dataset
    rows = []
    for name, p in problem.parameters.items():
        v = values[name]
        kind = "parameter" if p.role == "mechanistic" else "observation"
        base = {"kind": kind, "init": p.init, "learned": not p.fixed, "lower": p.lower, "upper": p.upper,
                "positive": p.positive, "unit": p.unit or "", "description": p.description}
        if p.per_experiment:
            for b, e in enumerate(ds.experiments):
                row = {"name": f"{name}[{e.name}]", **base, "value": float(v[start, b]), "experiment": e.name}
                if model.n_starts > 1 and not p.fixed:
                    row.update({"start_min": float(v[:, b].min()), "start_max": float(v[:, b].max()),
                                "start_std": float(v[:, b].std())})
                rows.append(row)
            continue
        row = {"name": name, **base, "value": float(v[start])}
        if model.n_starts > 1 and not p.fixed:
            row.update({"start_min": float(v.min()), "start_max": float(v.max()), "start_std": float(v.std())})
        rows.append(row)
    noise = model.noise.numpy()
    for name, p in problem.noise_parameters.items():
        rows.append({"name": name, "kind": "noise", "value": float(noise[name][start]), "init": p.init,
                     "learned": not p.fixed, "lower": p.lower, "upper": p.upper, "positive": True,
                     "unit": p.unit or "", "description": p.description})
    import torch

    with torch.no_grad():
        y0 = model.initial().cpu().numpy()  # (S, B, n)
    for j, s in enumerate(problem.states):
        spec = problem.initial[s]
        if not spec.learn:
            continue
        for b, e in enumerate(ds.experiments):
            init = model.initial.base[b, j].item()
            name = initial_label(s, e.name, len(ds.experiments))
            rows.append({"name": name, "kind": "initial", "value": float(y0[start, b, j]), "init": init,
                         "learned": True, "lower": 0.0 if spec.positive else None, "upper": None,
                         "positive": spec.positive, "unit": "", "description": f"initial value of {s}"})
    columns = ["name", "kind", "value", "init", "learned", "lower", "upper", "positive", "unit", "description"]
    extra = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in columns]  # experiment, spread
    return pd.DataFrame(rows, columns=columns + extra)


def prediction_table(problem: Problem, solutions: list[np.ndarray], groups, start: int = 0, *, objective=None,
                     observed: list[np.ndarray] | None = None,
                     standardised: list[np.ndarray] | None = None) -> pd.DataFrame:
    """One row per experiment and observation time: every state's prediction (observed / residual where it
    is observed directly), then every other observable's observed / predicted / residual, and the
    standardised residual of each observable under the noise model (``*_standardised``)."""
    ds = problem.dataset
    names = list(ds.observables)
    frames = []
    for k, g in enumerate(groups):
        sol = solutions[k]  # (T, S, Bg, n)
        for i, b in enumerate(g.experiments):
            e = ds.experiments[b]
            pos = g.positions[i]
            pred = sol[pos, start, i, :]
            d: dict[str, Any] = {"experiment": e.name, "time": e.t,
                                 "split": np.where(e.train, "train", "validation")}
            for j, s in enumerate(problem.states):
                d[f"{s}_observed"] = e.values[:, j]
                d[f"{s}_predicted"] = pred[:, j]
                d[f"{s}_residual"] = e.values[:, j] - pred[:, j]
            if objective is not None and observed is not None:
                for c, o in enumerate(names):
                    if o not in problem.states:
                        y_hat = observed[k][pos, start, i, objective.columns[c]]
                        d[f"{o}_observed"] = e.observations[:, c]
                        d[f"{o}_predicted"] = y_hat
                        d[f"{o}_residual"] = e.observations[:, c] - y_hat
                    if standardised is not None:
                        d[f"{o}_standardised"] = standardised[k][pos, i, c]
            frames.append((b, pd.DataFrame(d)))
    frames.sort(key=lambda x: x[0])
    return pd.concat([f for _, f in frames], ignore_index=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolved_config(problem: Problem) -> dict:
    """The config with every default filled in, its parameters as resolved (built-in defaults merged in,
    ``fixed`` and ``positive`` true or false, never null)."""
    resolved = problem.config.resolved()
    resolved["model"]["parameters"] = {
        p.name: {"init": p.init, "fixed": p.fixed, "bounds": [p.lower, p.upper] if (p.lower, p.upper) != (None, None)
                 else None, "positive": p.positive, "unit": p.unit, "per_experiment": p.per_experiment,
                 # (a prior is part of the objective: without it `ude fit inputs/config.yaml` fits another one)
                 **({"prior": p.prior.model_dump(mode="json")} if p.prior is not None else {})}
        for p in problem.parameters.values()}
    return resolved


def run_info(problem: Problem, *, seed: int, command: list[str] | None = None, extra: dict | None = None) -> dict:
    cfg = problem.config
    versions: dict[str, str | None] = {}
    for pkg in RECORDED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    ds = problem.dataset
    return {
        "name": cfg.run_name,
        "config_file": str(cfg.path) if cfg.path else None,
        "config": resolved_config(problem),
        "seed": seed,
        "data_files": [{"path": label, "sha256": sha256(path)} for label, path in zip(ds.labels, ds.files, strict=True)],
        "experiments": [{"name": e.name, "points": int(e.observed.sum()),
                         "validation_points": int((~e.train & e.observed).sum())}
                        for e in ds.experiments],
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command if command is not None else list(sys.argv),
        **(extra or {}),
    }


def write_inputs(problem: Problem, directory: Path) -> None:
    """Copy the data files and write the resolved config pointing at the copies (``inputs/``)."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    ds = problem.dataset
    names: list[str] = []
    for k, path in enumerate(ds.files):
        name = path.name if path.name not in names else f"{k + 1}_{path.name}"
        names.append(name)
        atomic_write_bytes(directory / name, Path(path).read_bytes())
    resolved = resolved_config(problem)
    resolved["name"] = problem.config.run_name
    data = resolved["data"]
    if data.get("files") is not None:
        data["files"] = names
    else:
        data["file"] = names[0]
    for name, spec in resolved.get("networks", {}).items():  # a network's weights and graph files, copied too
        for key in ("weights", "file"):
            if spec.get(key) is not None:
                copy = f"{name}_{Path(spec[key]).name}"
                atomic_write_bytes(directory / copy, (problem.config.base_dir / spec[key]).read_bytes())
                spec[key] = copy
    header = ("# The resolved config of this run (every default filled in), reading the copies of the\n"
              "# data files beside it. `ude fit` on this file repeats the run.\n")
    atomic_write_text(directory / "config.yaml", header + yaml.safe_dump(resolved, sort_keys=False))


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()
