"""Figures of a fit, made to be put in a paper (matplotlib, Agg backend; PNG and PDF).

* ``fit``: data and fitted trajectory per state, the validation window shaded;
* ``residuals``: standardised residuals per observable (observed minus predicted over the noise sd);
* ``loss``: the training loss per iteration, stages marked;
* ``terms``: each learned term (network output) along the fitted trajectory.

Axes are labelled with the CSV's column names and units where the config gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .runs.rundir import atomic_path

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.constrained_layout.use": True,
}
#: TrueType fonts embedded in PDFs (Type 42): journals reject the default Type 3.
SAVE_STYLE = {"pdf.fonttype": 42, "ps.fonttype": 42}
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _unit(units: dict[str, str], key: str) -> str:
    u = units.get(key)
    return f" [{u}]" if u else ""


def given_label(problem, *keys: str) -> str | None:
    """The config's ``data.labels`` entry for the first of ``keys`` that has one (a state, then its column)."""
    labels = problem.config.data.labels
    return next((labels[k] for k in keys if k and k in labels), None)


def state_label(problem, state: str) -> str:
    """Axis label of a state: the config's label (data.labels) or else its CSV column, with the column's
    unit (data.units); a state without data and without a label says so."""
    ds = problem.dataset
    col = ds.columns.get(state)
    given = given_label(problem, state, col)
    if col is None and given is None:
        return f"{state} (not observed)"
    name = given if given is not None else (col if col == state else f"{col} ({state})")
    spec = problem.initial.get(state)  # a state without data may take its unit from the column of its start
    unit_column = col if col is not None else (spec.column if spec is not None else None)
    unit = _unit(ds.units, unit_column) if unit_column is not None else ""
    return name + ("\n" + unit.strip() if len(name + unit) > 18 and unit else unit)  # long: the unit below


def observable_label(problem, name: str) -> str:
    """Axis label of an observable: the config's label (or its name, with its formula and column) and unit."""
    o = problem.observables[name]
    if o.state is not None and o.label is None:
        return state_label(problem, o.state)
    given = given_label(problem, name, o.column) if o.label is None else None  # the config's data.labels
    text = o.label or given or f"{o.column} ({o.expression.text})"
    unit = f" [{o.unit}]" if o.unit else ""
    return text + ("\n" + unit.strip() if len(text + unit) > 18 and unit else unit)


#: an axis label wider than this many characters is wrapped (a rotated label longer than its panel runs into the
#: next one: an imported PEtab observable's formula, a long state name with "(not observed)")
LABEL_WIDTH = 28
LABEL_LINES = 3


def axis_label(text: str) -> str:
    """``text`` wrapped at spaces to :data:`LABEL_WIDTH` characters a line, at most :data:`LABEL_LINES` lines
    (the rest elided with ...); its own line breaks are kept."""
    import textwrap

    lines = [w for part in text.split("\n") for w in (textwrap.wrap(part, LABEL_WIDTH, break_long_words=False,
                                                                      break_on_hyphens=False) or [""])]
    if len(lines) > LABEL_LINES:
        lines = [*lines[:LABEL_LINES - 1], lines[LABEL_LINES - 1] + " ..."]
    return "\n".join(lines)


def rate_unit(problem, state: str) -> str:
    """`` [unit/time unit]`` of d(state)/dt when the config gives both units, else ''."""
    ds = problem.dataset
    col = ds.columns.get(state)
    unit, t_unit = ds.units.get(col) if col else None, ds.units.get(ds.time_column)
    if not unit or not t_unit:
        return ""
    return f" [{unit}/{t_unit}]"


def label_time_axis(ax, problem) -> None:
    """The time axis: its label, and whole-number ticks when every time in the data is whole
    (years, days: 1900, 1905, not 1902.5); a log axis when the data's times from 0 span decades."""
    from matplotlib.ticker import MaxNLocator

    from .fitting.model import log_time_threshold

    ax.set_xlabel(time_label(problem))
    times = np.concatenate([e.t for e in problem.dataset.experiments])
    t0 = min(float(e.t[0]) for e in problem.dataset.experiments)
    first = log_time_threshold(times, t0) if t0 == 0 else None
    if first is not None:  # times over many decades (stiff kinetics): a log axis, linear below the first time
        ax.set_xscale("symlog", linthresh=first, linscale=0.5)
        ax.set_xlim(-0.5 * first, ax.get_xlim()[1])  # autoscaling's left margin reaches far into negative times
    elif np.all(np.isfinite(times)) and np.all(times == np.round(times)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def time_label(problem) -> str:
    """The time axis: the config's label (data.labels of the time column) or else the column, and its unit."""
    ds = problem.dataset
    given = given_label(problem, ds.time_column)
    return (given if given is not None else ds.time_column) + _unit(ds.units, ds.time_column)


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


def _experiment_title(problem) -> str:
    """What the experiments are called in a legend: the CSV's experiment column, else 'file'."""
    data = problem.config.data
    return data.experiment or ("file" if data.files else "experiment")


def _experiments_legend(fig, problem, styles: list[tuple[Any, str]], limit: int = 20,
                        notes: dict[int, str] | None = None) -> None:
    """One legend beside the figure: a colour per experiment (titled by the experiment column), then
    the meaning of the line and marker styles, black. ``notes``: experiment -> a remark after its name."""
    from matplotlib.lines import Line2D

    ds = problem.dataset
    n = len(ds.experiments)
    notes = notes or {}
    handles = [Line2D([], [], color=_experiment_color(b, n), lw=2.5, ls=(0, (4, 3)) if b in notes else "-")
               for b in range(min(n, limit))]
    labels = [e.name + (f" ({notes[b]})" if b in notes else "") for b, e in enumerate(ds.experiments[:limit])]
    if n > limit:
        handles.append(Line2D([], [], color="none"))
        labels.append(f"... ({n - limit} more)")
    for handle, label in styles:
        handles.append(handle)
        labels.append(label)
    fig.legend(handles, labels, loc="outside right upper", frameon=False, title=_experiment_title(problem),
               alignment="left")


def _style_handles(*, fit: bool = False, data: bool = False, held_out: bool = False,
                   window: bool = False) -> list[tuple[Any, str]]:
    """Black legend entries that explain line and marker styles shared by every experiment."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    out: list[tuple[Any, str]] = []
    if fit:
        out.append((Line2D([], [], color="k", lw=1.6), "fit"))
    if data:
        out.append((Line2D([], [], color="k", marker="o", ms=4, ls="none"), "data"))
    if held_out:
        out.append((Line2D([], [], color="k", marker="o", mfc="white", ms=4, ls="none"), "held-out data"))
    if window:
        out.append((Patch(facecolor="0.90", edgecolor="0.6", lw=0.6), "validation window"))
    return out


def _validation_windows(ax, ds, t_end: float) -> bool:
    """Shade the validation window when every experiment has the same one; otherwise mark where each
    experiment's window starts with a dashed line in its colour. True when anything was drawn."""
    starts = [_validation_start(e) for e in ds.experiments]
    if all(v is None for v in starts):
        return False
    known = [v for v in starts if v is not None]
    if len(known) == len(starts) and np.allclose(known, known[0]):
        ax.axvspan(known[0], t_end, color="0.92", zorder=0, label="validation window")
        return True
    for b, v in enumerate(starts):
        if v is not None:
            ax.axvline(v, color=_experiment_color(b, len(starts)), lw=0.9, ls="--", zorder=0)
    return True


#: From this many experiments on, ``output.layout: auto`` draws one panel per experiment.
PANELS_FROM = 9


def title_text(text: str, width: int = 60) -> str:
    """A figure title wrapped to lines of at most ``width`` characters (a sweep point's long name), broken
    after '/', ',' or a space, so that it never runs into the legend beside the axes."""
    import re

    pieces = [p for p in re.split(r"(?<=[/, ])", text) if p]  # each piece ends with its break character
    lines, line = [], ""
    for piece in pieces:
        if line and len(line + piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def _state_axis_label(problem, state: str) -> str:
    """A state's label in the fit figure: the label of the observable that measures it directly, if any."""
    observed_as = [o for o in problem.dataset.observables if problem.observables[o].state == state]
    return observable_label(problem, observed_as[0]) if observed_as else state_label(problem, state)


def _drawn_states(problem) -> list[int]:
    """Indices of the states the fit figure draws (``output.unobserved: false`` leaves out states without data)."""
    observed = set(problem.dataset.observed)
    keep = [j for j, s in enumerate(problem.states) if problem.config.output.unobserved or s in observed]
    return keep or list(range(len(problem.states)))


def _same_curves(result, best: int, states: list[int]) -> dict[int, int]:
    """Experiment -> the first earlier experiment whose fitted trajectory it repeats (same times and values to
    1e-9 relative): drawn dashed and named in the legend, so that no curve hides another unsaid."""
    same: dict[int, int] = {}
    trajectories = result.trajectories
    for b in range(len(trajectories)):
        tb, yb = trajectories[b]
        for a in range(b):
            ta, ya = trajectories[a]
            if a not in same and ta.shape == tb.shape and np.allclose(ta, tb, rtol=1e-12, atol=0) and np.allclose(
                    ya[:, best, states], yb[:, best, states], rtol=1e-9, atol=1e-12):
                same[b] = a
                break
    return same


def _data_markers(ax, e, obs: np.ndarray, color, ms: float = 4) -> None:
    """An experiment's observations: filled in the training window, open in the validation window."""
    tr = e.train & np.isfinite(obs)
    va = ~e.train & np.isfinite(obs)
    if tr.any():
        ax.plot(e.t[tr], obs[tr], "o", ms=ms, color=color, label="data")
    if va.any():
        ax.plot(e.t[va], obs[va], "o", ms=ms, mfc="white", color=color, label="held-out data")


def _panels(problem) -> bool:
    """Whether the fit and residual figures draw one panel per experiment (``output.layout``)."""
    layout = problem.config.output.layout
    n = len(problem.dataset.experiments)
    return n > 1 and (layout == "panels" or (layout == "auto" and n >= PANELS_FROM))


def fit_figure(result) -> Any:
    """Data (markers) and fitted trajectories (lines) per state; with many experiments (``output.layout``)
    one panel per experiment."""
    problem = result.problem
    formulas = [o for o in problem.dataset.observables if problem.observables[o].state is None]
    if _panels(problem) and not formulas:
        return _fit_panels(result)  # (observables that are formulas of the states: overlay, their own panels)
    return _fit_overlay(result)


def _experiment_grid(plt, problem, panel_height: float) -> tuple[Any, Any, int]:
    """Small multiples: a panel per experiment titled by it (shared axes, 3 or 4 columns), the unused
    panels hidden and the time axis labelled under each column's last panel. Returns the figure, the
    axes ``(rows, cols)`` (experiment ``b`` at ``[b // cols, b % cols]``) and ``cols``."""
    import math

    experiments = problem.dataset.experiments
    n = len(experiments)
    cols = min(n, 4 if n > 9 else 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.35 * cols + 1.9, panel_height * rows + 0.7), sharex=True,
                             sharey=True, squeeze=False)
    for b, e in enumerate(experiments):
        axes[b // cols, b % cols].set_title(f"{_experiment_title(problem)} {e.name}", fontsize=9, pad=2)
    for b in range(n, rows * cols):
        axes[b // cols, b % cols].set_visible(False)
    for c in range(cols):
        last = max(r for r in range(rows) if r * cols + c < n)
        axes[last, c].set_xlabel(time_label(problem))
        axes[last, c].xaxis.set_tick_params(labelbottom=True)
    return fig, axes, cols


def _residual_panels(result, standardised: bool) -> Any:
    """Residuals as small multiples: one panel per experiment, a colour per observable; shared axes."""
    import re

    from matplotlib.lines import Line2D

    plt = _pyplot()
    problem = result.problem
    ds = problem.dataset
    observed = ds.observables
    pred = result.predictions
    held_out = any(not e.train.all() for e in ds.experiments)
    with plt.rc_context(STYLE):
        fig, axes, cols = _experiment_grid(plt, problem, panel_height=1.55)
        for b, e in enumerate(ds.experiments):
            ax = axes[b // cols, b % cols]
            here = pred[pred["experiment"] == e.name]
            train = (here["split"] == "train").to_numpy()
            for k, o in enumerate(observed):
                r = here[f"{o}_standardised" if standardised else f"{o}_residual"].to_numpy()
                t = here["time"].to_numpy()
                c = COLORS[k % len(COLORS)]
                ax.plot(t[train], r[train], "o", ms=3, color=c)
                if (~train).any():
                    ax.plot(t[~train], r[~train], "o", ms=3, mfc="white", color=c)
            ax.axhline(0, color="0.4", lw=0.8)
            if standardised:
                for level in (-2, 2):
                    ax.axhline(level, color="0.7", lw=0.7, ls="--")
        fig.supylabel("standardised residual" if standardised else "residual (observed - predicted)", fontsize=10)

        def name(o: str) -> str:  # standardised residuals have no unit
            label = observable_label(problem, o).replace("\n", " ")
            return re.sub(r"\s*\[[^\]]*\]\s*$", "", label) if standardised else label

        handles = [(Line2D([], [], color=COLORS[k % len(COLORS)], marker="o", ls="none", ms=4), name(o))
                   for k, o in enumerate(observed)]
        handles += _style_handles(data=False, held_out=held_out)
        fig.legend([h for h, _ in handles], [lab for _, lab in handles], loc="outside right upper", frameon=False,
                   alignment="left")
        title = (f"{result.name}: standardised residuals, (observed − predicted) / sd, one panel per "
                 f"{_experiment_title(problem)}" if standardised else
                 f"{result.name}: residuals (observed - predicted), one panel per {_experiment_title(problem)}")
        fig.suptitle(title_text(title, width=70), fontsize=11)
    return fig


def _fit_panels(result) -> Any:
    """Small multiples: one panel per experiment, titled by it, a colour per drawn state; shared axes."""

    from matplotlib.lines import Line2D

    plt = _pyplot()
    problem = result.problem
    ds = problem.dataset
    best = result.metrics.get("best_start", 0)
    states = _drawn_states(problem)
    held_out = any(not e.train.all() for e in ds.experiments)
    banded = False
    with plt.rc_context(STYLE):
        fig, axes, cols = _experiment_grid(plt, problem, panel_height=1.75)
        for b, e in enumerate(ds.experiments):
            ax = axes[b // cols, b % cols]
            t, y = result.trajectories[b]
            for k, j in enumerate(states):
                c = COLORS[k % len(COLORS)]
                ax.plot(t, y[:, best, j], color=c, lw=1.4)
                _data_markers(ax, e, e.values[:, j], c, ms=3)
                if result.curve_bands is not None:  # (not at the data times alone: too coarse for small panels)
                    banded = _draw_bands(ax, result, e, problem.states[j], c) or banded
            start = _validation_start(e)
            if start is not None:
                ax.axvspan(start, float(max(t[-1], e.t[-1])), color="0.92", zorder=0)
            _bands_in_view(ax)
        if len(states) == 1:
            for r in range(axes.shape[0]):
                axes[r, 0].set_ylabel(_state_axis_label(problem, problem.states[states[0]]))
        handles = [(Line2D([], [], color=COLORS[k % len(COLORS)], lw=2),
                    _state_axis_label(problem, problem.states[j]).replace("\n", " "))
                   for k, j in enumerate(states)] if len(states) > 1 else []
        handles += _style_handles(fit=True, data=True, held_out=held_out, window=held_out)
        if banded:
            handles += _band_handles(result)
        fig.legend([h for h, _ in handles], [lab for _, lab in handles], loc="outside right upper", frameon=False,
                   alignment="left")
        fig.suptitle(title_text(f"{result.name}: data and fit, one panel per {_experiment_title(problem)}",
                                width=70),
                     fontsize=11)
    return fig


def _finite_starts(result, n: int) -> np.ndarray:
    """The starts whose training loss is finite (every start when metrics.json does not say)."""
    per = result.metrics.get("loss_per_start")
    if not per or len(per) != n:
        return np.ones(n, dtype=bool)
    ok = np.array([v is not None and np.isfinite(v) for v in per])
    return ok if ok.any() else np.ones(n, dtype=bool)


def _band_handles(result) -> list:
    """The legend's entries for the confidence and prediction bands."""
    from matplotlib.patches import Patch

    level = (result.metrics.get("uncertainty") or {}).get("level", 0.95) * 100
    return [(Patch(color="0.2", alpha=0.28, lw=0), f"{level:g} % confidence band"),
            (Patch(color="0.2", alpha=0.10, lw=0), f"{level:g} % prediction band")]


#: a band drawn at most this many times the data's and curves' span beyond them (then cut, and said so)
BAND_VIEW = 1.0


def _bands_in_view(ax) -> bool:
    """Keep the y-axis on the data and the curves, with up to :data:`BAND_VIEW` of their span beyond them for the
    bands: a band of a value the data barely constrain (Wald draws of it over decades) would otherwise flatten
    everything else to a line. The bands are cut at the axis, which says so; True when cut."""
    from matplotlib.collections import PathCollection

    log = ax.get_yscale() == "log"
    values = [np.asarray(line.get_ydata(), dtype=float).ravel() for line in ax.get_lines()]
    values += [np.asarray(c.get_offsets(), dtype=float).reshape(-1, 2)[:, 1] for c in ax.collections
               if isinstance(c, PathCollection)]
    y = np.concatenate(values) if values else np.zeros(0)
    y = y[np.isfinite(y) & (y > 0)] if log else y[np.isfinite(y)]
    if not y.size:
        return False
    to, back = (np.log10, lambda v: 10.0 ** v) if log else ((lambda v: v), (lambda v: v))
    lo, hi = float(to(y.min())), float(to(y.max()))
    span = BAND_VIEW * (hi - lo if hi > lo else max(abs(hi), 1.0))
    low, high = (float(to(v)) for v in ax.get_ylim())
    new_low, new_high = max(low, lo - span), min(high, hi + span)
    if new_low <= low and new_high >= high:
        return False
    ax.set_ylim(back(new_low), back(new_high))
    ax.text(0.99, 0.97, "bands cut at the axis", transform=ax.transAxes, ha="right", va="top", fontsize=7,
            color="0.35")
    return True


def _draw_bands(ax, result, e, name: str, color) -> bool:
    """The confidence band (darker) and the prediction band (lighter) of observable ``name`` in experiment ``e``:
    along the fitted curve's dense grid (``result.curve_bands``), or (a run saved before those existed) at the
    data times, from predictions.csv's ``_ci_*`` / ``_pi_*`` columns; True when drawn."""
    b = [x.name for x in result.problem.dataset.experiments].index(e.name)
    along = result.curve_bands[b].get(name) if result.curve_bands is not None else None
    if along is not None and len(along) >= 2:
        t = result.trajectories[b][0]
        if along.shape[-1] == 4:
            ax.fill_between(t, along[:, 2], along[:, 3], color=color, alpha=0.10, lw=0, zorder=1)
        ax.fill_between(t, along[:, 0], along[:, 1], color=color, alpha=0.28, lw=0, zorder=1)
        return True
    pred = result.predictions
    if f"{name}_ci_lower" not in pred:
        return False
    rows = pred[pred["experiment"] == e.name]
    t = rows["time"].to_numpy()
    if len(t) < 2:
        return False
    if f"{name}_pi_lower" in pred:  # an unobserved state has a confidence band only
        ax.fill_between(t, rows[f"{name}_pi_lower"], rows[f"{name}_pi_upper"], color=color, alpha=0.10, lw=0,
                        zorder=1)
    ax.fill_between(t, rows[f"{name}_ci_lower"], rows[f"{name}_ci_upper"], color=color, alpha=0.28, lw=0, zorder=1)
    return True


def _observable_groups(problem, names: list[str]) -> list[list[str]]:
    """Observables drawn in one panel: those with the same label and the same formula, which differ only in their
    noise (a PEtab observable whose rows carry different noise parameters becomes ``OBS__1``, ``OBS__2``, ...
    labelled ``OBS``: Fujita_SciSignal2010 has 10 of each). Their curves are one curve; one panel each would
    repeat it."""
    groups: dict[tuple[str, str], list[str]] = {}
    for o in names:
        spec = problem.observables[o]
        groups.setdefault((observable_label(problem, o), spec.expression.text), []).append(o)
    return list(groups.values())


def _fit_overlay(result) -> Any:
    """One panel per drawn state, a colour per experiment."""
    plt = _pyplot()
    problem = result.problem
    ds = problem.dataset
    best = result.metrics.get("best_start", 0)
    n = len(ds.experiments)
    multi = n > 1
    held_out = any(not e.train.all() for e in ds.experiments)
    states = _drawn_states(problem)
    same = _same_curves(result, best, states) if multi else {}
    formulas = [o for o in ds.observables if problem.observables[o].state is None]
    groups = _observable_groups(problem, formulas)
    banded = starts_band = False
    with plt.rc_context(STYLE):
        fig, axes = _grid(plt, len(states) + len(groups))
        t_end = max(float(result.trajectories[b][0][-1]) for b in range(n))
        for k, members in enumerate(groups):  # what the data measure, below the states
            ax = axes[len(states) + k]
            columns = [ds.observables.index(o) for o in members]
            for b, e in enumerate(ds.experiments):
                c = _experiment_color(b, n)
                # the members share a formula: one curve; bands of the first member measured in this experiment
                seen = [o for o, j in zip(members, columns, strict=True) if np.isfinite(e.observations[:, j]).any()]
                o = seen[0] if seen else members[0]
                if result.observable_curves:
                    t, _ = result.trajectories[b]
                    ax.plot(t, result.observable_curves[b][o][:, best], color=c, lw=1.6, label="fit")
                banded = _draw_bands(ax, result, e, o, c) or banded
                for j in columns:
                    _data_markers(ax, e, e.observations[:, j], c)
            _validation_windows(ax, ds, max(t_end, max(float(e.t[-1]) for e in ds.experiments)))
            label = observable_label(problem, members[0])
            if len(members) > 1:
                label += f" ({len(members)} noise variants)"
            ax.set_ylabel(axis_label(label))
            _bands_in_view(ax)
        for ax, j in zip(axes, states, strict=False):
            s = problem.states[j]
            for b, e in enumerate(ds.experiments):
                c = _experiment_color(b, n)
                t, y = result.trajectories[b]
                ax.plot(t, y[:, best, j], color=c, lw=1.6, label="fit", ls=(0, (4, 3)) if b in same else "-",
                        zorder=3 if b in same else 2)
                if y.shape[1] > 1:  # --starts N: the range of the starts that fitted (finite loss)
                    ok = _finite_starts(result, y.shape[1])
                    for edge in (np.nanmin(y[:, ok, j], axis=1), np.nanmax(y[:, ok, j], axis=1)):
                        ax.plot(t, edge, color=c, lw=0.8, ls=":", zorder=2)
                    starts_band = True
                banded = _draw_bands(ax, result, e, s, c) or banded  # an unobserved state's: confidence only
                _data_markers(ax, e, e.values[:, j], c)
            _validation_windows(ax, ds, max(t_end, max(float(e.t[-1]) for e in ds.experiments)))
            ax.set_ylabel(axis_label(_state_axis_label(problem, s)))
            _bands_in_view(ax)
        any_data = any(np.isfinite(e.values[:, j]).any() for e in ds.experiments for j in states) or bool(formulas)
        styles = _style_handles(fit=True, data=any_data, held_out=held_out, window=held_out)
        if starts_band:
            from matplotlib.lines import Line2D

            styles += [(Line2D([], [], color="0.2", lw=0.8, ls=":"), f"range over the {result.model.n_starts} starts")]
        if banded:
            styles += _band_handles(result)
        if multi:
            _experiments_legend(fig, problem, styles, notes={b: f"same curve as {ds.experiments[a].name}"
                                                             for b, a in same.items()})
        else:  # one legend for the figure: "data" too when the first panel is a state without data
            axes[0].legend([h for h, _ in styles], [lab for _, lab in styles], loc="best", frameon=False)
        label_time_axis(axes[-1], problem)
        # beside a legend outside the axes, a shorter line: a centred title must end before the legend
        fig.suptitle(title_text(f"{result.name}: data and fit", width=45 if multi else 60), fontsize=11)
    return fig


def residual_figure(result) -> Any:
    """Standardised residuals per observable: (observed - predicted) / the noise model's standard deviation
    (Pearson residuals for counts, on log scale for log-normal noise; without a noise model, over the
    maximum-likelihood sigma of the squared-error fit). About 95 % lie within +-2 when the noise model fits."""
    import re

    plt = _pyplot()
    problem = result.problem
    ds = problem.dataset
    observed = ds.observables
    pred = result.predictions
    n = len(ds.experiments)
    held_out = any(not e.train.all() for e in ds.experiments)
    standardised = all(f"{o}_standardised" in pred for o in observed)
    if _panels(problem):
        return _residual_panels(result, standardised)
    with plt.rc_context(STYLE):
        fig, axes = _grid(plt, max(1, len(observed)), height=1.9)
        for ax, s in zip(axes, observed, strict=False):
            column = f"{s}_standardised" if standardised else f"{s}_residual"
            for b, e in enumerate(ds.experiments):
                rows = pred[pred["experiment"] == e.name]
                r = rows[column].to_numpy()
                t = rows["time"].to_numpy()
                train = (rows["split"] == "train").to_numpy()
                c = _experiment_color(b, n)
                ax.plot(t[train], r[train], "o", ms=4, color=c, label="training data")
                if (~train).any():
                    ax.plot(t[~train], r[~train], "o", ms=4, mfc="white", color=c, label="held-out data")
            ax.axhline(0, color="0.4", lw=0.8)
            if standardised:
                for level in (-2, 2):
                    ax.axhline(level, color="0.7", lw=0.7, ls="--")
            # standardised residuals have no unit: the label says what they are of
            label = observable_label(problem, s)
            bare = re.sub(r"\s*\[[^\]]*\]\s*$", "", label.replace("\n", " "))  # the unit dropped
            ax.set_ylabel(f"{bare}\n(standardised)" if standardised else label)
        if n > 1:
            _experiments_legend(fig, problem, _style_handles(data=True, held_out=held_out))
        elif held_out:
            axes[0].legend(loc="best", frameon=False)
        label_time_axis(axes[-1], problem)
        fig.suptitle(title_text(f"{result.name}: standardised residuals, (observed − predicted) / sd"
                                if standardised else f"{result.name}: residuals (observed - predicted)",
                                width=45 if n > 1 else 60), fontsize=11)
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
    what = "negative log-likelihood\nper observation" if result.problem.likelihood else f"training loss\n({kind}MSE)"
    with plt.rc_context(STYLE):
        panels = [p for p in ((colloc, "collocation loss\n(scaled derivative mismatch)"),
                              (traj, what)) if len(p[0])]
        fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.4 if len(panels) < 2 else 9.0, 3.2),
                                 squeeze=False)
        for ax, (rows_all, ylabel) in zip(axes[0], panels, strict=False):
            for stage, rows in rows_all.groupby("stage", sort=True):
                opt = rows["optimizer"].iloc[0]
                few = len(rows) <= 40  # LBFGS rows come a chunk of iterations apart: show where they were taken
                ax.plot(rows["iteration"], rows["loss"], color=COLORS[int(stage) % len(COLORS)], lw=1.4,
                        marker="o" if few else None, ms=3, label=f"stage {stage + 1}: {opt}")
            values = rows_all["loss"]
            if (values > 0).all() and values.max() > 10 * values.min():
                ax.set_yscale("log")  # a narrower range reads better on a plain axis
            else:
                ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_xlabel("iteration")
            ax.set_ylabel(ylabel)
            ax.legend(frameon=False)
        if not panels:
            axes[0, 0].set_xlabel("iteration")
            axes[0, 0].text(0.5, 0.5, "no iterations recorded", ha="center", transform=axes[0, 0].transAxes)
        fig.suptitle(title_text(f"{result.name}: training loss"), fontsize=11)
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
            for b, _e in enumerate(ds.experiments):
                t, _ = result.trajectories[b]
                ax.plot(t, result.terms[b][net][:, best, idx], color=_experiment_color(b, len(ds.experiments)), lw=1.5)
            ax.axhline(0, color="0.6", lw=0.7)
            ax.set_ylabel(label + (f"\nin d{where[0]}/dt{rate_unit(problem, where[0])}" if len(where) == 1 else ""))
        if len(ds.experiments) > 1:
            _experiments_legend(fig, problem, [])
        label_time_axis(axes[-1], problem)
        fig.suptitle(title_text(f"{result.name}: learned terms along the fitted trajectory",
                                width=45 if len(ds.experiments) > 1 else 60), fontsize=11)
    return fig


def profile_figure(result):
    """The profile likelihoods (``ude fit --profile``): one panel per value, the statistic 2 (PL - L_min)
    against the value, the threshold of the interval as a dashed line and the interval's ends marked."""
    unc = result.metrics.get("uncertainty") or {}
    profiles = unc.get("profiles") or []
    if not profiles:
        return None
    plt = _pyplot()
    n = len(profiles)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, p in zip(axes.flat, profiles, strict=False):
        pts = np.array(p["points"], dtype=float)
        ax.plot(pts[:, 0], pts[:, 1], "-o", color=COLORS[0], ms=3, lw=1.2)
        ax.axhline(p["threshold"], color="0.3", ls="--", lw=0.9)
        ax.axvline(p["value"], color="0.6", lw=0.8)
        for end in (p["lower"], p["upper"]):
            if end is not None:
                ax.axvline(end, color=COLORS[1], lw=0.9, ls=":")
        lo = "open" if p["lower"] is None else f"{p['lower']:.4g}"
        hi = "open" if p["upper"] is None else f"{p['upper']:.4g}"
        ax.set_title(f"{p['name']}: [{lo}, {hi}]" + ("" if p["identifiable"] else "  not identifiable"),
                     fontsize=9, color="black" if p["identifiable"] else "#b2182b")
        ax.set_xlabel(p["name"], fontsize=9)
        ax.set_ylabel("2 (PL - min)", fontsize=9)
        ax.set_ylim(bottom=min(0.0, float(pts[:, 1].min())), top=max(p["threshold"] * 1.6, 1.0))
        if p.get("log_scale") and (pts[:, 0] > 0).all() and pts[:, 0].max() > 10 * pts[:, 0].min():
            ax.set_xscale("log")  # stepped on log scale over decades: a linear axis would crowd all but one end
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{result.name}: profile likelihoods; dashed: the {unc['level'] * 100:g} % threshold", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"fit": fit_figure, "residuals": residual_figure, "loss": loss_figure, "terms": terms_figure,
           "profiles": profile_figure}


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
        with plt.rc_context(SAVE_STYLE):  # rc settings of the backends apply when saving, not drawing
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
