"""Figures of a discovery, drawn from the files ``ude discover`` wrote (so ``ude report`` can
redraw them without refitting): PNG and PDF, axes labelled with the CSV's columns and units.

* ``terms``: each learned term along the fitted trajectories: network, recovered, pysindy's proposal;
* ``recovered_fit``: data with the UDE, the recovered and the mechanistic-only models;
* ``extrapolation``: the same models simulated far beyond the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..plots import COLORS, STYLE, label_time_axis, observable_label, save_figure, state_label, title_text
from .extrapolate import runaway_bound

#: Line styles of the models, shared by every figure.
MODEL_STYLES = {
    "UDE": {"color": COLORS[0], "lw": 1.8, "ls": "-"},
    "recovered": {"color": COLORS[1], "lw": 1.8, "ls": "--"},
    "mechanistic only": {"color": "0.45", "lw": 1.3, "ls": ":"},
    "pysindy": {"color": COLORS[2], "lw": 1.3, "ls": "-."},
    "network": {"color": COLORS[0], "lw": 1.8, "ls": "-"},
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _joined(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Time and values of ``column`` with NaN between experiments, so one line never joins two."""
    ts: list[np.ndarray | list[float]] = []
    ys: list[np.ndarray | list[float]] = []
    for _, rows in frame.groupby("experiment", sort=False):
        ts += [rows["time"].to_numpy(float), [np.nan]]
        ys += [rows[column].to_numpy(float), [np.nan]]
    return np.concatenate(ts), np.concatenate(ys)


def terms_figure(problem, terms: pd.DataFrame):
    """Each learned term against time: the network, the recovered expression, pysindy's proposal."""
    plt = _pyplot()
    labels = list(dict.fromkeys(terms["term"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(labels), 1, figsize=(8.0, max(2.6, 2.1 * len(labels))), sharex=True,
                                 squeeze=False)
        for ax, label in zip(axes[:, 0], labels, strict=True):
            rows = terms[terms["term"] == label]
            for column, name in (("network", "network (learned term)"), ("recovered", "recovered, refitted to data"),
                                 ("pysindy", "pysindy on the network")):
                t, y = _joined(rows, column)
                ax.plot(t, y, label=name, **MODEL_STYLES[column])
            ax.axhline(0, color="0.75", lw=0.6)
            ax.set_ylabel(label)
        axes[0, 0].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        label_time_axis(axes[-1, 0], problem)
        fig.suptitle(title_text(f"{problem.config.run_name}: learned terms and their recovered equations"), fontsize=11)
    return fig


def _limits(values: list[np.ndarray]) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values if v.size] or [np.zeros(1)])
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return lo - pad, hi + pad


def _leaves(t: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float | None:
    out = ~np.isfinite(y) | (y < lo) | (y > hi)
    out &= np.isfinite(t)
    return float(t[np.argmax(out)]) if out.any() else None


def leaving_label(name: str, t: np.ndarray, y: np.ndarray, lo: float, hi: float, bound: float | None = None) -> str:
    """A legend entry that says where a curve diverges (with ``bound``: the time every message gives,
    :func:`ude_cli.discovery.extrapolate.divergence_time`), or else where it leaves the axes, or where its solution
    stops (a solve that failed, or another state that diverged)."""
    from .extrapolate import divergence_time, time_text

    if bound is not None:
        diverges = divergence_time(t, y, bound)
        if diverges is not None:
            return f"{name} (diverges at t ≈ {time_text(diverges)})"
    when = _leaves(t, y, lo, hi)
    if when is None:
        return name
    k = int(np.argmax(np.isclose(t, when)))
    what = "stops" if not np.isfinite(y[k]) else "leaves the axes"
    return f"{name} ({what} at t ≈ {time_text(when)})"


def _near_data(v: np.ndarray, data: list[np.ndarray], factor: float = 3.0) -> bool:
    """Whether a curve is finite and within ``factor`` times the data's largest magnitude, so that it
    may set the axis limits (a curve that runs away must not squash the data)."""
    finite = np.concatenate([d[np.isfinite(d)] for d in data] or [np.zeros(0)])
    ref = float(np.max(np.abs(finite))) if finite.size else None
    return bool(v.size) and bool(np.all(np.isfinite(v))) and (ref is None or float(np.max(np.abs(v))) <= factor * ref)


def models_figure(problem, extrapolation: pd.DataFrame, *, until_data: bool, title: str):
    """Data and the models' trajectories per state (and per observable given by a formula, with its data),
    over the data window or to the horizon.

    The y axis is set by the data and the models that stay near them; a model that leaves the
    axes says where in its legend entry.
    """
    plt = _pyplot()
    ds = problem.dataset
    end = max(float(e.t[-1]) for e in ds.experiments)
    frame = extrapolation[extrapolation["time"] <= end + 1e-9] if until_data else extrapolation
    models = [m for m in MODEL_STYLES if m in set(frame["model"])]
    multi = len(ds.experiments) > 1
    # (column in the frame, its data per experiment, axis label): the states, then the observables given by a formula
    panels = [(s, [e.values[:, j] for e in ds.experiments], state_label(problem, s)) for j, s in enumerate(problem.states)]
    panels += [(o, [e.observations[:, k] for e in ds.experiments], observable_label(problem, o))
               for k, o in enumerate(ds.observables) if o not in problem.states and o in frame.columns]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(panels), 1, figsize=(8.0, max(2.6, 2.3 * len(panels))), sharex=True, squeeze=False)
        for j, (ax, (s, data, ylabel)) in enumerate(zip(axes[:, 0], panels, strict=True)):
            curves = {m: frame[frame["model"] == m][s].to_numpy(float) for m in models}
            # the recovered model sets the axes when it stays finite (its cycles may go beyond the data's
            # range: that is what the figure is for); the others only when they stay near the data
            anchors = data + [v for m, v in curves.items()
                              if (m == "recovered" and v.size and np.all(np.isfinite(v))) or _near_data(v, data)]
            lo, hi = _limits(anchors)
            for m in models:
                rows = frame[frame["model"] == m]
                t, y = _joined(rows, s)
                label = leaving_label(m, t, y, lo, hi, bound=runaway_bound(problem))
                ax.plot(t, np.clip(y, lo - (hi - lo), hi + (hi - lo)), label=label, **MODEL_STYLES[m])
            for b, e in enumerate(ds.experiments):
                obs = data[b]
                ok = np.isfinite(obs)
                if not ok.any():
                    continue
                tag = f", {e.name}" if multi else ""
                ax.plot(e.t[ok & e.train], obs[ok & e.train], "o", ms=3.8, color="k", label=f"data{tag}" if b == 0 else None)
                if (ok & ~e.train).any():
                    ax.plot(e.t[ok & ~e.train], obs[ok & ~e.train], "o", ms=3.8, mfc="white", color="k",
                            label="held-out data" if b == 0 else None)
            if not until_data:
                ax.axvspan(min(float(e.t[0]) for e in ds.experiments), end, color="0.93", zorder=0,
                           label="data window" if j == 0 else None)
            ax.set_ylim(lo, hi)
            ax.set_ylabel(ylabel)
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        label_time_axis(axes[-1, 0], problem)
        fig.suptitle(title_text(title), fontsize=11)
    return fig


def figures(problem, directory: str | Path) -> dict:
    """The discovery's figures, drawn from ``terms.csv`` and ``extrapolation.csv`` in ``directory``."""
    directory = Path(directory)
    out = {}
    if (directory / "terms.csv").is_file():
        out["terms"] = terms_figure(problem, pd.read_csv(directory / "terms.csv"))
    ext_path = directory / "extrapolation.csv"
    if ext_path.is_file() and ext_path.stat().st_size > 1:
        ext = pd.read_csv(ext_path)
        if len(ext):
            name = problem.config.run_name
            out["recovered_fit"] = models_figure(problem, ext, until_data=True,
                                                 title=f"{name}: UDE, recovered and mechanistic-only models")
            horizon = float(ext["time"].max())
            out["extrapolation"] = models_figure(problem, ext, until_data=False,
                                                 title=f"{name}: beyond the data, to t = {horizon:g}")
    return out


def write_all(problem, directory: str | Path, dpi: int = 150) -> list[Path]:
    """Write the discovery's figures to ``directory/figures`` (PNG and PDF)."""
    directory = Path(directory)
    paths = []
    for stem, fig in figures(problem, directory).items():
        paths += save_figure(fig, directory / "figures", stem, dpi)
    return paths
