"""Figures of a fit, made to be put in a paper (matplotlib, Agg backend; PNG and PDF).

* ``fit``: data and fitted trajectory per state, the validation window shaded;
* ``residuals``: observed minus predicted per observed state;
* ``loss``: the training loss per iteration, stages marked;
* ``terms``: each learned term (network output) along the fitted trajectory.

Axes are labelled with the CSV's column names and units where the config gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .rundir import atomic_path

STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.constrained_layout.use": True,
    "pdf.fonttype": 42,
}
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _unit(units: dict[str, str], key: str) -> str:
    u = units.get(key)
    return f" [{u}]" if u else ""


def state_label(problem, state: str) -> str:
    """Axis label of a state: its CSV column (and unit) if observed, else its name."""
    ds = problem.dataset
    col = ds.columns.get(state)
    if col is None:
        return f"{state} (not observed)"
    name = col if col == state else f"{col} ({state})"
    return name + _unit(ds.units, col)


def time_label(problem) -> str:
    ds = problem.dataset
    return ds.time_column + _unit(ds.units, ds.time_column)


def _experiment_color(b: int, n: int = 1):
    """Colour of experiment ``b`` of ``n``: a colour-blind-safe palette up to 8, then tab20, then viridis."""
    if n <= len(COLORS):
        return COLORS[b % len(COLORS)]
    import matplotlib

    if n <= 20:
        return matplotlib.colormaps["tab20"](b)
    return matplotlib.colormaps["viridis"](b / max(n - 1, 1))


def _validation_start(e) -> float | None:
    if e.train.all():
        return None
    first_val = int(np.argmax(~e.train))
    return float((e.t[first_val - 1] + e.t[first_val]) / 2) if first_val > 0 else float(e.t[0])


def _grid(plt, n: int, width: float = 6.4, height: float = 2.2):
    fig, axes = plt.subplots(n, 1, figsize=(width, max(2.6, height * n)), sharex=True, squeeze=False)
    return fig, axes[:, 0]


def fit_figure(result) -> Any:
    """Data (markers) and fitted trajectories (lines) per state."""
    plt = _pyplot()
    problem = result.problem
    ds = problem.dataset
    best = result.metrics.get("best_start", 0)
    with plt.rc_context(STYLE):
        fig, axes = _grid(plt, len(problem.states))
        multi = len(ds.experiments) > 1
        for j, (ax, s) in enumerate(zip(axes, problem.states, strict=True)):
            for b, e in enumerate(ds.experiments):
                c = _experiment_color(b, len(ds.experiments))
                t, y = result.trajectories[b]
                label = f"fit, {e.name}" if multi else "fit"
                ax.plot(t, y[:, best, j], color=c, lw=1.6, label=label)
                obs = e.values[:, j]
                if np.isfinite(obs).any():
                    tr = e.train & np.isfinite(obs)
                    va = ~e.train & np.isfinite(obs)
                    ax.plot(e.t[tr], obs[tr], "o", ms=4, color=c, label="data" + (f", {e.name}" if multi else ""))
                    if va.any():
                        ax.plot(e.t[va], obs[va], "o", ms=4, mfc="white", color=c,
                                label="held-out data" + (f", {e.name}" if multi else ""))
                v0 = _validation_start(e)
                if v0 is not None and b == 0:
                    ax.axvspan(v0, max(float(e.t[-1]), float(t[-1])), color="0.92", zorder=0,
                               label="validation window")
            ax.set_ylabel(state_label(problem, s))
            if j == 0:
                ax.legend(loc="best", frameon=False, ncol=2 if multi else 1)
        axes[-1].set_xlabel(time_label(problem))
        fig.suptitle(f"{result.name}: data and fit", fontsize=11)
    return fig


def residual_figure(result) -> Any:
    """Observed minus predicted, per observed state."""
    plt = _pyplot()
    problem = result.problem
    ds = problem.dataset
    observed = ds.observed
    pred = result.predictions
    with plt.rc_context(STYLE):
        fig, axes = _grid(plt, max(1, len(observed)), height=1.9)
        for ax, s in zip(axes, observed, strict=False):
            for b, e in enumerate(ds.experiments):
                rows = pred[pred["experiment"] == e.name]
                r = rows[f"{s}_residual"].to_numpy()
                t = rows["time"].to_numpy()
                train = (rows["split"] == "train").to_numpy()
                c = _experiment_color(b, len(ds.experiments))
                ax.plot(t[train], r[train], "o", ms=4, color=c, label=f"{e.name}" if len(ds.experiments) > 1 else "train")
                if (~train).any():
                    ax.plot(t[~train], r[~train], "o", ms=4, mfc="white", color=c, label="validation")
            ax.axhline(0, color="0.4", lw=0.8)
            ax.set_ylabel("residual\n" + state_label(problem, s))
        if len(ds.experiments) > 1 or not all(e.train.all() for e in ds.experiments):
            axes[0].legend(loc="best", frameon=False)
        axes[-1].set_xlabel(time_label(problem))
        fig.suptitle(f"{result.name}: residuals (observed - predicted)", fontsize=11)
    return fig


def loss_figure(result) -> Any:
    """Training loss against iteration, log scale, stages marked. Collocation stages (a derivative
    mismatch, not the data loss) get their own panel."""
    plt = _pyplot()
    h = result.history
    colloc = h[h["objective"] == "collocation"] if len(h) and "objective" in h else h.iloc[0:0]
    traj = h[h["objective"] != "collocation"] if len(h) and "objective" in h else h
    loss = result.problem.config.training.loss
    kind = "log-scale " if loss.log else ("scaled " if loss.scale == "std" else "")
    with plt.rc_context(STYLE):
        panels = [p for p in ((colloc, "collocation loss\n(scaled derivative mismatch)"),
                              (traj, f"training loss\n({kind}MSE)")) if len(p[0])]
        fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.4 if len(panels) < 2 else 9.0, 3.2),
                                 squeeze=False)
        for ax, (rows_all, ylabel) in zip(axes[0], panels, strict=False):
            for stage, rows in rows_all.groupby("stage", sort=True):
                opt = rows["optimizer"].iloc[0]
                ax.plot(rows["iteration"], rows["loss"], color=COLORS[int(stage) % len(COLORS)], lw=1.4,
                        label=f"stage {stage + 1}: {opt}")
            if (rows_all["loss"] > 0).all():
                ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel(ylabel)
            ax.legend(frameon=False)
        if not panels:
            axes[0, 0].set_xlabel("iteration")
            axes[0, 0].text(0.5, 0.5, "no iterations recorded", ha="center", transform=axes[0, 0].transAxes)
        fig.suptitle(f"{result.name}: training loss", fontsize=11)
    return fig


def terms_figure(result) -> Any | None:
    """Each learned term along the fitted trajectory, against time (None without networks)."""
    problem = result.problem
    terms = problem.learned_terms
    if not terms:
        return None
    plt = _pyplot()
    ds = problem.dataset
    best = result.metrics.get("best_start", 0)
    with plt.rc_context(STYLE):
        fig, axes = _grid(plt, len(terms), height=1.9)
        for ax, (net, idx) in zip(axes, terms, strict=True):
            label = problem.term_label(net, idx)
            where = [s for s, e in problem.equations.items()
                     if (net, idx) in e.network_refs or (idx == 0 and net in e.names)]
            for b, e in enumerate(ds.experiments):
                t, _ = result.trajectories[b]
                ax.plot(t, result.terms[b][net][:, best, idx], color=_experiment_color(b, len(ds.experiments)), lw=1.5,
                        label=e.name if len(ds.experiments) > 1 else None)
            ax.axhline(0, color="0.6", lw=0.7)
            ax.set_ylabel(label + (f"\n(in d{where[0]}/dt)" if len(where) == 1 else ""))
        if len(ds.experiments) > 1:
            axes[0].legend(frameon=False)
        axes[-1].set_xlabel(time_label(problem))
        fig.suptitle(f"{result.name}: learned terms along the fitted trajectory", fontsize=11)
    return fig


FIGURES = {"fit": fit_figure, "residuals": residual_figure, "loss": loss_figure, "terms": terms_figure}


def all_figures(result) -> dict[str, Any]:
    out = {}
    for name, make in FIGURES.items():
        fig = make(result)
        if fig is not None:
            out[name] = fig
    return out


def save_figure(fig, directory: Path, stem: str, dpi: int = 150) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically; close the figure."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for ext in ("png", "pdf"):
            path = directory / f"{stem}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=dpi, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def write_all(result, directory: Path, dpi: int = 150) -> list[Path]:
    paths = []
    for name, make in FIGURES.items():
        fig = make(result)
        if fig is not None:
            paths += save_figure(fig, Path(directory), name, dpi)
    return paths
