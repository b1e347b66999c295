"""``ude predict``: simulate a fitted run beyond its data, for the UDE and the recovered model.

Options change what is simulated: one experiment, new initial states, changed parameter values.
When the run holds several fits (a multistart), the band they span is drawn around the best one.
Writes ``RUN/forecast/``: ``forecast.csv`` (one row per model, experiment and time; ``STATE_lower``
and ``STATE_upper`` give the band), ``forecast.json`` (what was asked) and ``figures/forecast``
(PNG and PDF).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ConfigError, RunDirError

if TYPE_CHECKING:
    from .problem import Problem

#: The sub-directory of a run that ``ude predict`` writes.
FORECAST_DIR = "forecast"


@dataclass
class Forecast:
    """Simulated trajectories of a run's models beyond its data.

    Attributes:
        problem: the run's resolved problem.
        until: the end time.
        frame: one row per model, experiment and time: the states (best start) and, for the UDE,
            ``STATE_lower`` / ``STATE_upper`` over the starts.
        notes: what the reader must know (changed values, missing or failed recovered model).
        changed: the options used (experiment, initial states, parameter values).
    """

    problem: Problem
    until: float
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    changed: dict = field(default_factory=dict)


def parse_assignments(items: list[str] | None, option: str) -> dict[str, float]:
    """``["alpha=1.2", "x=0.5,y=2"]`` -> ``{"alpha": 1.2, "x": 0.5, "y": 2.0}``.

    Raises:
        ConfigError: an item is not ``name=number``.
    """
    out: dict[str, float] = {}
    for item in items or []:
        for part in str(item).split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not sep or not name.isidentifier() or not math.isfinite(number):
                raise ConfigError(f"expected NAME=NUMBER, got {part.strip()!r}", where=option)
            out[name] = number
    return out


def _experiment_indices(problem, experiment: str | None) -> list[int]:
    names = [e.name for e in problem.dataset.experiments]
    if experiment is None:
        return list(range(len(names)))
    if experiment not in names:
        from .errors import did_you_mean

        raise ConfigError(f"no experiment '{experiment}'{did_you_mean(experiment, names)}; the run's experiments "
                          f"are: {', '.join(names)}", where="--experiment")
    return [names.index(experiment)]


def _set_parameters(model, values: Mapping[str, float]) -> None:
    """Overwrite parameter values of a UDE model in place (every start)."""
    import torch

    from .fitting.parameters import to_unconstrained

    ps = model.parameters_
    with torch.no_grad():
        for name, v in values.items():
            spec = ps.specs[name]
            lo, hi = spec.lower, spec.upper
            if (spec.positive and v <= 0) or (lo is not None and v <= lo) or (hi is not None and v >= hi):
                raise ConfigError(f"{name} = {v:g} is outside its allowed range"
                                  f"{' (> 0)' if spec.positive else ''} [{lo}, {hi}]", where=f"--set {name}")
            if spec.fixed:
                getattr(ps, f"fixed_{name}").fill_(v)
            else:
                ps.raw[name].fill_(to_unconstrained(spec, v))


def _set_initial(model, b: int, initial: Mapping[str, float]) -> None:
    """Overwrite experiment ``b``'s initial states of a UDE model in place (every start)."""
    import torch

    states = model.initial.states
    with torch.no_grad():
        for s, v in initial.items():
            j = states.index(s)
            spec = model.initial.specs[s]
            if spec.learn:
                if spec.positive and v <= 0:
                    raise ConfigError(f"{s} = {v:g}: this initial state is kept > 0", where=f"--initial {s}")
                model.initial.raw[s][:, b] = math.log(v) if spec.positive else v
            else:
                model.initial.base[b, j] = v


def ude_frame(problem, model, until: float, experiments: list[int], n_points: int, best: int,
              ok_starts: np.ndarray | None = None, notes: list[str] | None = None,
              level: float | None = None) -> pd.DataFrame:
    """The UDE's trajectories (best start, and the band over the starts) to ``until``, or as far
    as the solver gets (then a line goes to ``notes``). With ``level``, the starts are draws of the learned
    values and the band is their central ``level`` quantile range (a confidence band) instead of min to max."""
    from .discovery.extrapolate import dense_as_far_as_possible

    t0 = min(problem.t0 if problem.t0 is not None else float(problem.dataset.experiments[b].t[0])
             for b in experiments)
    data_end = max(float(problem.dataset.experiments[b].t[-1]) for b in experiments)
    dense, reached, failure = dense_as_far_as_possible(model, n_points, until, t0, data_end)
    if failure and notes is not None:
        notes.append(f"the UDE {failure}" + (f"; shown to t = {reached:g}" if dense is not None else ""))
    if dense is None:
        return pd.DataFrame(columns=["model", "experiment", "time", *problem.states])
    from .likelihood.objective import Objective

    objective = Objective(model)
    curves = objective.curves(dense)  # model.dense: every experiment
    frames = []
    for b in experiments:
        t, y = dense[b]  # y: (T, S, n)
        ys = y if ok_starts is None else y[:, ok_starts, :]
        d: dict = {"model": "UDE", "experiment": problem.dataset.experiments[b].name, "time": t}
        def low(v):
            return np.min(v, axis=1) if level is None else np.nanquantile(v, (1 - level) / 2, axis=1)

        def high(v):
            return np.max(v, axis=1) if level is None else np.nanquantile(v, (1 + level) / 2, axis=1)

        for j, s in enumerate(problem.states):
            d[s] = y[:, best, j]
            d[f"{s}_lower"] = low(ys[:, :, j])
            d[f"{s}_upper"] = high(ys[:, :, j])
        for o, values in curves[b].items():  # what the data measure (observables given by a formula)
            vs = values if ok_starts is None else values[:, ok_starts]
            d[o] = values[:, best]
            d[f"{o}_lower"] = low(vs)
            d[f"{o}_upper"] = high(vs)
        if level is not None:  # the starts are draws: observations drawn around each give the prediction band
            d.update(_prediction_band(problem, objective, y, curves[b], level))
        frames.append(pd.DataFrame(d))
    return pd.concat(frames, ignore_index=True)


def _prediction_band(problem, objective, y: np.ndarray, curves: Mapping[str, np.ndarray], level: float) -> dict:
    """``{observable}_pi_lower/_pi_upper``: the central ``level`` range of observations drawn from the noise model
    around each draw's prediction (``y``: states ``(T, S, n)``, ``curves``: formula observables ``(T, S)``)."""
    from .identifiability.bands import prediction_quantiles

    mus = []
    for name in objective.names:
        o = problem.observables[name]
        mus.append(y[:, :, problem.states.index(o.state)] if o.state is not None else curves[name])
    sigma = math.nan
    if not objective.likelihood:  # squared errors: the fit's sigma, from the first start (the fit itself)
        sigma = float(run_sigma(objective))
    # around the draws (starts 1..; start 0 is the fit), several observations per draw and time
    q = prediction_quantiles(problem, objective, np.stack(mus, -1)[:, 1:],
                             np.random.default_rng(problem.config.training.seed), sigma, level, nan=True)
    out = {}
    for i, name in enumerate(objective.names):
        out[f"{name}_pi_lower"], out[f"{name}_pi_upper"] = q[:, i, 0], q[:, i, 1]
    return out


def run_sigma(objective) -> float:
    """The maximum-likelihood sigma of a squared-error fit, from start 0 (the fit; the other starts are draws)."""
    import torch

    with torch.no_grad():
        return objective.noise_estimates(objective.model(), 0)["sigma"]


def _ok_starts(metrics: Mapping, n_starts: int) -> np.ndarray | None:
    per = metrics.get("loss_per_start")
    if not per or len(per) != n_starts:
        return None
    ok = np.array([v is not None and math.isfinite(v) for v in per])
    return ok if ok.any() else None


def recovered_frame(run_dir: Path, discovery: dict, until: float, experiments: list[int], n_points: int,
                    values: Mapping[str, float], initial: Mapping[str, float]) -> tuple[pd.DataFrame, str]:
    """The recovered model's trajectories to ``until``, from ``RUN/discovery``; and a note."""
    from .config import load_config
    from .discovery.refit import OdeSystem
    from .problem import resolve

    path = run_dir / "discovery" / "recovered.yaml"
    try:
        problem = resolve(load_config(path))
    except FileNotFoundError:
        raise RunDirError("discovery.json exists but recovered.yaml does not", where=str(path.parent)) from None
    system = OdeSystem(problem)
    chosen = discovery["chosen"]
    vals = {**chosen["parameters"], **{k: v for k, v in values.items() if k in chosen["parameters"]}}
    frames, note = [], ""
    for b in experiments:
        e = problem.dataset.experiments[b]
        y0 = np.array([chosen["initial"][str(e.name)][s] for s in problem.states], dtype=float)
        for s, v in initial.items():
            y0[problem.states.index(s)] = v
        times = np.linspace(system.t0[b], until, n_points)  # the solver's own steps keep it accurate in between
        sim = system.simulate(b, vals, times, y0=y0)
        if not sim.ok and not note:
            note = f"the recovered model fails in experiment '{e.name}': {sim.message}"
        d: dict = {"model": recovered_name(discovery.get("verdict")), "experiment": e.name, "time": times}
        for j, s in enumerate(problem.states):
            d[s] = sim.y[:, j]
        frames.append(pd.DataFrame(d))
    return pd.concat(frames, ignore_index=True), note


def recovered_name(verdict: str | None) -> str:
    """What ``ude discover``'s model is called in forecasts: with the verdict ``none`` no term was recovered,
    and the model is the mechanism alone, refitted to the data."""
    return "mechanistic refit" if verdict == "none" else "recovered"


def forecast(run, until: float, *, experiment: str | None = None, initial: Mapping[str, float] | None = None,
             values: Mapping[str, float] | None = None, n_points: int = 400, recovered: bool = True) -> Forecast:
    """Simulate a saved run's UDE (and recovered model, when ``ude discover`` has run) to ``until``.

    Arguments:
        run: a :class:`~ude_cli.runs.load.SavedRun` (with its model).
        until: the end time; it must be after the start of the experiments simulated.
        experiment: simulate only this experiment (default: all).
        initial: new initial states by state name (applied to every experiment simulated).
        values: new parameter values by name (mechanistic parameters, or coefficients of the
            recovered model).
        n_points: time points per experiment.
        recovered: include the recovered model when there is one.

    Returns:
        The forecast; its ``notes`` say what was changed and what is missing or failed.

    Raises:
        ConfigError: an unknown experiment, state or parameter, or a value outside its range.
    """
    from .discovery.files import read_discovery

    problem = run.problem
    initial = dict(initial or {})
    values = dict(values or {})
    experiments = _experiment_indices(problem, experiment)
    t_start = max(problem.t0 if problem.t0 is not None else float(problem.dataset.experiments[b].t[0])
                  for b in experiments)
    if not math.isfinite(until) or until <= t_start:
        raise ConfigError(f"must be after the start of the experiments ({t_start:g}), got {until:g}", where="--until")
    for s in initial:
        if s not in problem.states:
            from .errors import did_you_mean

            raise ConfigError(f"unknown state '{s}'{did_you_mean(s, problem.states)}; states are: "
                              f"{', '.join(problem.states)}", where=f"--initial {s}")
    if initial and problem.preequilibration is not None:
        raise ConfigError("the experiments start at a steady state (model.preequilibration), not at given initial "
                          "values: --initial is not supported for them yet", where=f"--initial {next(iter(initial))}")
    discovery = read_discovery(run.path) if recovered else None
    known = set(problem.parameters) | set(discovery["chosen"]["parameters"] if discovery else ())
    for name in values:
        if name not in known:
            from .errors import did_you_mean

            raise ConfigError(f"unknown parameter '{name}'{did_you_mean(name, known)}; parameters are: "
                              f"{', '.join(sorted(known))}", where=f"--set {name}")
    model = copy.deepcopy(run.model)
    _set_parameters(model, {k: v for k, v in values.items() if k in problem.parameters})
    for b in experiments:
        _set_initial(model, b, initial)
    notes = []
    if values:
        notes.append("changed parameters: " + ", ".join(f"{k} = {v:g}" for k, v in values.items()))
    if initial:
        notes.append("changed initial states: " + ", ".join(f"{k}(t0) = {v:g}" for k, v in initial.items()))
    notes += _jumps_note(problem, experiments, until)
    sampled, how = (None, "") if model.n_starts > 1 else _parameter_draws(problem, model, run)
    if sampled is not None:
        level = problem.config.uncertainty.level
        tried: list[str] = []
        frames = [ude_frame(problem, sampled, until, experiments, n_points, 0, None, tried, level=level)]
        if tried:  # some draw cannot be simulated to the end (the batch fails with it): the fit alone, no band
            sampled = None
            frames = [ude_frame(problem, model, until, experiments, n_points, 0, None, notes)]
            first = tried[0].removeprefix(f"the UDE cannot be simulated to t = {until:g}: ").split(";")[0]
            notes.append(f"no band: some of the {problem.config.uncertainty.band_samples} draws of the learned values "
                         f"from their Wald distribution cannot be simulated to t = {until:g} (the first that fails "
                         f"stops their batched solve: {first}); the line is the fit")
        else:
            notes.append(how)
    else:
        frames = [ude_frame(problem, model, until, experiments, n_points, run.best_start,
                            _ok_starts(run.metrics, model.n_starts), notes)]
        if how:
            notes.append(how)
    if model.n_starts > 1:
        notes.append(f"the band spans the {model.n_starts} starts of the multistart; the line is the best start")
    if discovery is not None:
        rec, note = recovered_frame(run.path, discovery, until, experiments, n_points, values, initial)
        frames.append(rec)
        if discovery["verdict"] in ("worse", "failed"):
            notes.append(f"the recovered model's verdict is {discovery['verdict'].upper()}: "
                         f"{discovery['messages'][0]}")
        elif discovery["verdict"] == "none":
            notes.append("ude discover recovered no term (verdict NONE): 'mechanistic refit' is the mechanism "
                         "alone, refitted to the data")
        if note:
            notes.append(note)
    elif recovered:
        notes.append("no recovered model: run `ude discover RUN` to add it")
    frame = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    # a recovered model that failed has said when (its solver's own time): not again from the grid
    failed = {recovered_name(discovery.get("verdict"))} if discovery is not None and note else set()
    notes += _runaway_notes(problem, frame[~frame["model"].isin(failed)])
    return Forecast(problem=problem, until=until, frame=frame, notes=notes,
                    changed={"experiment": experiment, "initial": initial, "values": values, "until": until,
                             "band": (f"{problem.config.uncertainty.level * 100:g} % confidence band"
                                      if sampled is not None else None),
                             "verdict": discovery["verdict"] if discovery else None})


def _jumps_note(problem, experiments: list[int], until: float) -> list[str]:
    """What a forecast past the data says of model.events: the states jump at the given times (or dosing rows)
    only, so none happens after the last of them; said where the forecast runs past it."""
    from .fitting.events import schedule

    if not problem.events:
        return []
    last = max((t for b in experiments for t, _ in schedule(problem.events, problem.dataset.experiments[b])),
               default=None)
    if last is not None and until <= last:
        return []
    when = f"the last at t = {last:g}" if last is not None else "none in these experiments"
    return [f"the states jump only at the times model.events gives ({when}): none is repeated up to t = {until:g}"]


def _parameter_draws(problem, model, run):
    """A model of the fit plus draws of its learned values from their Wald distribution (the confidence band of
    the forecast), and a note saying how it was made; ``(None, reason)`` when there is none."""
    spec = problem.config.uncertainty
    if not spec.bands or spec.hessian == "off":
        return None, ""
    from .identifiability import assess
    from .identifiability.bands import sampled_model

    unc = assess(problem, model, 0, profile=[])  # the fit's Wald distribution, computed again from the model
    if unc.wald is None or unc.wald.cov_u is None or not len(unc.wald.targets):
        return None, ""
    samples = spec.band_samples
    many = sampled_model(problem, model, 0, unc.wald, samples, problem.config.training.seed)
    net = f", network {unc.wald.network}" if unc.wald.network != "none" else ""
    return many, (f"the band is the central {spec.level * 100:g} % of {samples} draws of the learned values from "
                  f"their Wald distribution ({unc.wald.intervals[0].method.split(';')[0]}{net}): a confidence band "
                  "of the trajectory, without the observation noise; forecast.csv's *_pi_lower/_pi_upper add it "
                  "(prediction bands of what the data measure); the line is the fit")


def _runaway_notes(problem, frame: pd.DataFrame) -> list[str]:
    """A note for each model whose forecast diverges (:func:`ude_cli.discovery.extrapolate.divergence_time`)."""
    from .discovery.extrapolate import RUNAWAY_FACTOR, divergence_time, runaway_bound, time_text

    bound = runaway_bound(problem)
    notes = []
    for model, rows in frame.groupby("model", sort=False):
        found = [divergence_time(r["time"].to_numpy(float), r[problem.states].to_numpy(float), bound)
                 for _, r in rows.groupby("experiment", sort=False)]
        times = [d for d in found if d is not None]
        if times:
            notes.append(f"the {model} forecast diverges (leaves {RUNAWAY_FACTOR:g} times the data's largest value) "
                         f"at t = {time_text(min(times))}")
    return notes


def write_forecast(fc: Forecast, directory: str | Path, dpi: int = 150) -> Path:
    """Write ``forecast.csv``, ``forecast.json`` and ``figures/forecast.{png,pdf}`` into ``directory``."""
    from .plots import save_figure
    from .runs.rundir import atomic_write_json, atomic_write_text

    directory = Path(directory)
    figure = forecast_figure(fc.problem, fc.frame, fc.changed, fc.notes)  # first: a failure here writes nothing
    directory.mkdir(parents=True, exist_ok=True)
    save_figure(figure, directory / "figures", "forecast", dpi)
    atomic_write_text(directory / "forecast.csv", fc.frame.to_csv(index=False))
    atomic_write_json(directory / "forecast.json", {**fc.changed, "notes": fc.notes})
    return directory


def forecast_figure(problem, frame: pd.DataFrame, changed: Mapping | None = None, notes: list[str] | None = None):
    """Per state: data, the UDE (with its band over starts) and the recovered model."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from .discovery.plots import MODEL_STYLES
    from .plots import STYLE, axis_label, label_time_axis, title_text

    changed = dict(changed or {})
    ds = problem.dataset
    names = list(dict.fromkeys(frame["experiment"].astype(str)))
    verdict = changed.get("verdict")
    panels = _panels(problem, frame)
    fitted = "UDE" if problem.networks else "fit"  # a model without networks is no UDE
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(panels), 1, figsize=(8.0, max(2.6, 2.3 * len(panels))),
                                 sharex=True, squeeze=False)
        ends = {str(e.name): float(e.t[-1]) for e in ds.experiments if str(e.name) in names}
        end = max(ends.values())
        for ax, (s, axis_text, data_of) in zip(axes[:, 0], panels, strict=True):
            lo, hi = _axis_limits(frame, s, [data_of(e) for e in ds.experiments],
                                  show_data=not changed.get("initial"))
            for k, name in enumerate(names):
                tag = f", {name}" if len(names) > 1 else ""
                rows = frame[(frame["experiment"].astype(str) == name)]
                if s in rows:
                    rows = rows[rows[s].notna()]  # a model without this observable (the recovered one's)
                ude = rows[rows["model"] == "UDE"]
                style = dict(MODEL_STYLES["UDE"])
                if len(names) > 1:
                    style["color"] = plt.rcParams["axes.prop_cycle"].by_key()["color"][k % 10]
                span = hi - lo
                if len(ude) and f"{s}_lower" in ude and not np.allclose(ude[f"{s}_lower"], ude[f"{s}_upper"]):
                    ax.fill_between(ude["time"], np.clip(ude[f"{s}_lower"], lo - span, hi + span),
                                    np.clip(ude[f"{s}_upper"], lo - span, hi + span), color=style["color"],
                                    alpha=0.18, lw=0, label=f"{fitted}, {(changed or {}).get('band') or 'range over starts'}{tag}")
                if len(ude):
                    ax.plot(ude["time"], np.clip(ude[s], lo - span, hi + span),
                            label=_leaving(f"{fitted}{tag}", ude, s, lo, hi, problem), **style)
                rec = rows[rows["model"] == recovered_name(verdict)]
                if len(rec):
                    rstyle = dict(MODEL_STYLES["recovered"])
                    if len(names) > 1:
                        rstyle["color"] = style["color"]
                    label = ("mechanistic, refitted (no term recovered)" if verdict == "none" else "recovered"
                             + (f" ({verdict.upper()})" if verdict in ("worse", "failed", "approximation") else "")) + tag
                    ax.plot(rec["time"], np.clip(rec[s], lo - span, hi + span), label=_leaving(label, rec, s, lo, hi, problem),
                            **rstyle)
                e = next(e for e in ds.experiments if str(e.name) == name)
                obs = data_of(e)
                ok = np.isfinite(obs)
                if ok.any() and not changed.get("initial"):
                    ax.plot(e.t[ok], obs[ok], "o", ms=3.8, color="k", label="data" if k == 0 else None)
            for t_end in sorted(set(ends.values()) - {end}):  # an experiment whose data end earlier: dotted
                ax.axvline(t_end, color="0.5", lw=0.8, ls=":")
            ax.axvline(end, color="0.5", lw=0.8, ls="--")
            ax.set_ylim(lo, hi)
            ax.set_ylabel(axis_label(axis_text))
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        axes[0, 0].annotate("end of data" + (" (dotted: an experiment's own)" if len(set(ends.values())) > 1 else ""),
                            (end, 1.0), xycoords=("data", "axes fraction"), ha="right", va="bottom",
                            fontsize=8, color="0.4", xytext=(-3, 0), textcoords="offset points")
        label_time_axis(axes[-1, 0], problem)
        title = f"{problem.config.run_name}: forecast to t = {changed.get('until', frame['time'].max()):g}"
        fig.suptitle(title_text(title), fontsize=11)
        if notes:
            import textwrap

            lines = [w for note in notes for w in textwrap.wrap(note, 130)]  # wrapped here: the layout knows the height
            fig.text(0.01, 0.0, "\n".join(lines), fontsize=7.5, color="0.3", va="bottom", ha="left")
            height = fig.get_figheight()
            engine = fig.get_layout_engine()
            assert isinstance(engine, ConstrainedLayoutEngine)  # STYLE: figure.constrained_layout.use
            engine.set(rect=(0, min(0.5, (0.16 * len(lines) + 0.1) / height), 1,
                             1 - min(0.5, (0.16 * len(lines) + 0.1) / height)))
    return fig


def _panels(problem, frame: pd.DataFrame) -> list[tuple[str, str, Any]]:
    """The forecast figure's panels: every state, then every observable given by a formula that the forecast
    holds (what the data measure): (its column in ``frame``, its axis label, the data of an experiment)."""
    from .plots import observable_label, state_label

    ds = problem.dataset
    out: list[tuple[str, str, Any]] = []
    for j, s in enumerate(problem.states):
        out.append((s, state_label(problem, s), lambda e, j=j: e.values[:, j]))
    for i, o in enumerate(ds.observables):
        if o not in problem.states and o in frame:
            out.append((o, observable_label(problem, o), lambda e, i=i: e.observations[:, i]))
    return out


def _axis_limits(frame: pd.DataFrame, state: str, observed: list[np.ndarray], show_data: bool
                 ) -> tuple[float, float]:
    """y limits set by the data (``observed``: per experiment) and by the forecasts that stay within 20 times the
    data's range; a forecast that runs away leaves the axes (its legend entry says when)."""
    from .discovery.plots import _limits

    data = observed if show_data else []
    finite = np.concatenate([d[np.isfinite(d)] for d in observed] or [np.zeros(0)])
    ref = float(np.max(np.abs(finite))) if finite.size else None  # the data's scale, drawn or not
    anchors = list(data)
    for _, rows in frame.groupby(["model", "experiment"], sort=False):
        v = rows[state].to_numpy(float)
        if v.size and np.all(np.isfinite(v)) and (ref is None or float(np.max(np.abs(v))) <= 20 * ref):
            anchors.append(v)
    if len(anchors) == len(data):  # every forecast runs away: show them anyway
        v = frame[state].to_numpy(float)
        anchors += [v[np.isfinite(v)]] if np.isfinite(v).any() else []
    return _limits(anchors)


def _leaving(label: str, rows: pd.DataFrame, state: str, lo: float, hi: float, problem=None) -> str:
    from .discovery.extrapolate import runaway_bound
    from .discovery.plots import leaving_label

    return leaving_label(label, rows["time"].to_numpy(float), rows[state].to_numpy(float), lo, hi,
                         bound=runaway_bound(problem) if problem is not None else None)
