"""``ude fit CONFIG...``: fit each config and write its run directory; keep going past failures."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from . import exits
from .common import Command, console, fail, positive, print_json, state, warn


def register(app: typer.Typer) -> None:
    app.command("fit", cls=Command, short_help="Fit each CONFIG and write its run directory.", help=(
        "Fit a universal differential equation to the data named in each CONFIG and write a run "
        "directory: params.csv/json, predictions.csv, metrics.json, loss.csv, run.json, model.pt and "
        "figures (PNG + PDF). With several configs (or a shell glob) each is fitted in turn, a failure "
        "does not stop the others, and a summary table follows; the exit code is that of the first "
        "failure. Ctrl-C or SIGTERM saves a checkpoint: continue it with --resume RUN."))(fit_command)


def fit_command(
    configs: list[Path] = typer.Argument(None, metavar="CONFIG", help="YAML config file(s).", show_default=False),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default: runs/<config name>).", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue an interrupted run directory from its checkpoint.", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors (for scripts)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object per run on stdout (status, run_dir, parameters, metrics, "
                              "error); logs go to stderr."),
    stop_below: float | None = typer.Option(
        None, "--stop-below", callback=positive, help="Stop training once the training loss is below this value.",
        show_default=False),
    time_limit: float | None = typer.Option(
        None, "--time-limit", callback=positive,
        help="Seconds of training per run; then keep the best parameters so far.", show_default=False),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write figures."),
    starts: int | None = typer.Option(
        None, "--starts", min=1, max=1024, help="Independent starts fitted at once, batched (default: "
                                                "training.starts); the best is reported, starts.csv lists all.",
        show_default=False),
    sweep: bool = typer.Option(
        False, "--sweep", help="Fit every combination of the config's 'sweep' grid into runs/<name>/<point>/ and "
                               "write sweep.csv."),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", min=1, help="Run the fits as Dask tasks on a local cluster of this many worker "
                                          "processes.", show_default=False),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 4 when a fit is poor (its training loss far above the data's estimated noise "
                                "level; see metrics.json fit_quality): for CI."),
    profile: bool = typer.Option(
        False, "--profile", help="Profile likelihoods of every learned mechanistic, observation, noise and initial "
                                 "value (network re-fitted at each point): intervals, identifiability and profile "
                                 "figures (uncertainty.profile in the config chooses some)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", metavar="ADDRESS", help="Run the fits on an existing Dask cluster (e.g. tcp://host:8786; the run "
                                  "directories must be on a shared file system).", show_default=False),
) -> None:
    from ..api import default_out
    from ..batch.outcomes import RunOutcome, error_kind

    if resume is not None and configs:
        raise typer.BadParameter("give either CONFIG files or --resume RUN, not both", param_hint="--resume")
    if resume is None and not configs:
        raise typer.BadParameter("give at least one CONFIG file (or --resume RUN)", param_hint="CONFIGS")
    if out is not None and len(configs or []) > 1:
        raise typer.BadParameter("--out names one run directory; give one config with it", param_hint="--out")
    common = dict(overwrite=overwrite, stop_below=stop_below, plots=False if no_plots else None,
                  time_limit=time_limit, command=["ude", *sys.argv[1:]], n_starts=starts, profile=profile)
    tasks: list[dict] = []
    sweeps: list[tuple] = []  # (config, points, first task index, out)
    early: list[RunOutcome] = []  # configs that failed before any task could be made
    if resume is not None:
        tasks.append(dict(config=None, resume=resume, **common))
    shared = _shared_run_dirs(configs or []) if not sweep and out is None and len(configs or []) > 1 else {}
    for path in configs or []:
        if not sweep:
            if path in shared:  # a second config writing the first's run directory: it would fail or replace it
                message = (f"would write the same run directory as {shared[path][0]} ({shared[path][1]}); give "
                           f"one of them another 'name' in its config")
                early.append(RunOutcome(config=str(path), status="failed", error={
                    "kind": "output", "message": f"{path}: {message}", "lines": [f"{path}: {message}"]}))
                continue
            tasks.append(dict(config=path, out=out, **common))
            continue
        from ..batch.sweep import expand
        from ..config import load_config
        from ..errors import UdeError

        try:
            cfg = load_config(path)
            points = expand(cfg)
        except UdeError as exc:
            early.append(RunOutcome(config=str(path), status="failed",
                                    error={"kind": error_kind(exc), "message": str(exc), "lines": exc.lines()}))
            continue
        base = out if out is not None else default_out(cfg)
        sweeps.append((cfg, points, len(tasks), base))
        tasks += [dict(config=pc, out=base / name, **common) for name, pc in points]

    for o in early:
        _report(o, None, quiet=quiet, json_out=json_out, single=False)
    single = len(tasks) == 1 and not early and not sweeps
    if jobs or scheduler:
        from ..batch.distributed import run_many

        for t in tasks:
            t["make_monitor"] = None
        from ..errors import UdeError

        # the workers' progress stays in the workers: log the start and each finished fit here
        where = f"the Dask cluster at {scheduler}" if scheduler else f"a local Dask cluster of {jobs} worker(s)"
        try:
            outcomes = run_many(tasks, jobs=jobs, scheduler=scheduler,
                                on_start=None if quiet else
                                lambda: typer.echo(f"fitting {len(tasks)} run(s) on {where}", err=True),
                                on_result=lambda i, o: _report(o, None, quiet=quiet, json_out=json_out, single=False,
                                                               finished=(i, len(tasks))))
        except UdeError as exc:  # interrupted, or the cluster cannot be reached
            fail(exc)
    else:
        outcomes = _run_here(tasks, quiet=quiet, json_out=json_out, single=single)
    all_outcomes = early + outcomes
    for cfg, points, first, _base in sweeps:
        _write_sweep(cfg, points, outcomes[first:first + len(points)], quiet=quiet or json_out, base=_base)
    skipped = [str(t.get("config") or t.get("resume")) for t in tasks[len(outcomes):]]  # after an interrupt
    if (len(all_outcomes) > 1 or skipped) and not json_out and not quiet:
        print_summary(all_outcomes, skipped=skipped)
    failed = [o for o in all_outcomes if not o.ok]
    if failed:
        error = failed[0].error
        assert error is not None  # every outcome but "ok" carries its error
        raise typer.Exit(exits.for_kind(error["kind"]))
    if strict and any(_poor(o) for o in all_outcomes):
        raise typer.Exit(exits.FIT_FAILED)


def _poor(outcome) -> bool:
    """The fit ran and its quality check calls it poor."""
    quality = (outcome.metrics or {}).get("fit_quality") or {}
    return bool(quality.get("poor"))


def _shared_run_dirs(paths: list[Path]) -> dict[Path, tuple[Path, Path]]:
    """Configs of one batch whose run directory (runs/<name>) an earlier config of the batch already
    writes: config -> (the earlier config, the directory). Configs that cannot be read are left to the fit,
    which reports them."""
    from ..api import default_out
    from ..config import load_config
    from ..errors import UdeError

    first: dict[Path, Path] = {}
    shared = {}
    for path in paths:
        try:
            target = default_out(load_config(path))
        except UdeError:
            continue
        key = Path(target).resolve()
        if key in first:
            shared[path] = (first[key], target)
        else:
            first[key] = path
    return shared


def _run_here(tasks: list[dict], *, quiet: bool, json_out: bool, single: bool):
    """Run the tasks one after another in this process; Ctrl-C checkpoints the running one."""
    from ..batch.outcomes import fit_one
    from ..fitting.interrupt import graceful_stop
    from ..fitting.lean_torch import skip_compile_machinery
    from ..progress import make_monitor

    skip_compile_machinery()  # this process compiles nothing: spare it torch._dynamo (~1 s, 70 MiB)

    outcomes = []
    with graceful_stop(notify=lambda text: typer.echo(f"warning: {text}", err=True)) as stop:
        for task in tasks:
            def monitor_for(cfg, task=task):
                name = cfg.run_name if cfg is not None else Path(task["resume"]).name
                return make_monitor(name, quiet=quiet)

            outcome, result = fit_one(**task, should_stop=stop, make_monitor=monitor_for, debug=state.debug)
            outcomes.append(outcome)
            _report(outcome, result, quiet=quiet, json_out=json_out, single=single)
            if outcome.status == "interrupted":
                break
            late = stop()
            if late is not None:  # the signal came after training: the run was finished and written
                signal_name = late.removeprefix("interrupted by ")
                typer.echo(f"warning: {signal_name} came after training had finished: the complete run was written"
                           + ("; the remaining configs are not started" if task is not tasks[-1] else ""), err=True)
                break
    return outcomes


def _report(outcome, result, *, quiet: bool, json_out: bool, single: bool, finished: tuple | None = None) -> None:
    if not quiet:
        for w in outcome.warnings:
            warn(w)
        if finished is not None and outcome.ok:
            loss = outcome.metrics.get("loss")
            typer.echo(f"{outcome.config}: {outcome.status}" + (f", loss {loss:.4g}" if loss is not None else "")
                       + f", {outcome.seconds:.1f} s, written to {outcome.run_dir}", err=True)
    if outcome.error:
        for line in outcome.error["lines"]:
            typer.echo(f"error: {line}", err=True)
    if _poor(outcome) and not quiet and not (result is not None and single and not json_out):
        warn(f"{outcome.config}: {outcome.metrics['fit_quality']['line']}")
    if json_out:
        print_json(outcome.to_json())  # NaN and infinities as null: JSON has no such numbers
    elif result is not None and not quiet and single:
        print_result(result, Path(outcome.run_dir))
        if getattr(result, "discovery", None) is not None:
            from .discover import print_discovery

            print_discovery(result.discovery, Path(outcome.discovery["directory"]))


def _write_sweep(cfg, points, outcomes, *, quiet: bool, base: Path) -> None:
    from ..batch.sweep import summary_table
    from ..runs.rundir import atomic_write_text

    table, score = summary_table(cfg, points, outcomes)
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base / "sweep.csv", table.to_csv(index=False))
    if not quiet:
        best = table.iloc[0]
        typer.echo(f"{cfg.run_name}: sweep of {len(points)} points written to {base / 'sweep.csv'}; best by {score}: "
                   f"{best['point']} ({score} {best[score]:.4g})" if best["status"] == "ok" else
                   f"{cfg.run_name}: sweep written to {base / 'sweep.csv'}; no point succeeded")


def print_result(result, path: Path) -> None:
    """The parameters table and the key metrics, on stdout."""
    from rich.markup import escape
    from rich.table import Table

    out = console()
    if len(result.parameters):
        unc = result.metrics.get("uncertainty") or {}
        level = unc.get("level")
        header = f"value [{level * 100:g} % interval]" if level and unc.get("intervals") else "value"
        table = Table(title=f"{result.name}: fitted parameters", title_justify="left")
        for col in ("parameter", header, "initial", "learned", "bounds"):
            table.add_column(col, justify="right" if col in (header, "initial") else "left")
        methods: dict[str, str] = {}
        for row in result.parameters.to_dict(orient="records"):
            lo, hi = row["lower"], row["upper"]
            bounds = "" if _none(lo) and _none(hi) else f"[{_fmt(lo, '-inf')}, {_fmt(hi, 'inf')}]"
            value = f"{row['value']:.6g}"
            method = row.get("ci_method") or ""
            if method:
                mark = methods.setdefault(method, "*" * (len(methods) + 1))
                flag = {False: " !", None: " ?"}.get(row.get("identifiable"), "")
                value += f" [{_fmt(row['ci_lower'], '-inf', 4)}, {_fmt(row['ci_upper'], 'inf', 4)}]{mark}{flag}"
            table.add_row(escape(str(row["name"])), escape(value), f"{row['init']:.6g}",  # ka[subject 1]
                          "yes" if row["learned"] else "fixed", escape(bounds))
        out.print(table)
        for method, mark in methods.items():
            out.print(escape(f"{mark} {method}"), highlight=False)
        print_identifiability(out, unc)
    else:
        out.print(f"{result.name}: no mechanistic parameters (a neural ODE)", highlight=False)
    m = result.metrics
    line = f"train {m['loss_kind']} {m['loss']:.4g}"
    if m.get("validation_loss") is not None:
        line += f", validation {m['validation_loss']:.4g}"
    line += (f"; {m['iterations']} iterations, {m['wall_seconds']:.1f} s, {m['solver_evaluations']} solver evaluations"
             f" ({m['solver_engine']} engine{', native code' if m.get('native_code') else ''})")
    if m.get("solver_method") == "bdf" and m.get("solver_method_reason", "").startswith("solver.method: auto"):
        line += f"; {m['solver_method_reason'].removeprefix('solver.method: ')}"
    if m["stop_reason"] not in ("completed", "converged"):
        line += f"; stopped: {m['stop_reason']}"
    out.print(line, highlight=False, markup=False)
    if m.get("log_prior") is not None:  # the config's priors: the fit maximised the log-posterior
        lp = {k: (-math.inf if v is None else v) for k, v in m["log_prior"].items()}  # (JSON's null: -inf)
        out.print(f"log-prior {lp['log_prior']:.6g}, log-posterior {lp['log_posterior']:.6g} (log-likelihood "
                  f"{-m['likelihood']['nll']:.6g} + log-prior): the fit maximised the log-posterior",
                  highlight=False, markup=False)
    if m.get("preequilibration") is not None:
        out.print(preequilibration_line(m["preequilibration"], len(result.problem.dataset.experiments)),
                  highlight=False, markup=False)
    quality = m.get("fit_quality")
    if quality is not None:
        out.print(f"[yellow]{escape(quality['line'])}[/yellow]" if quality["poor"] else escape(quality["line"]),
                  highlight=False)
    out.print(f"run directory: {escape(str(path))}", highlight=False)


def preequilibration_line(summary: dict, n_experiments: int, when: str = "") -> str:
    """``pre-equilibration: ...``: which experiments settle, with what, into how many steady states, with how many
    conservation laws (metrics.json ``preequilibration``)."""
    settled = summary["experiments"]
    who = "every experiment starts" if len(settled) == n_experiments else (
        f"{len(settled)} of {n_experiments} experiments ({', '.join(settled[:4])}{', ...' if len(settled) > 4 else ''}) "
        f"{'starts' if len(settled) == 1 else 'start'}")
    values = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} per experiment"
                       for k, v in summary["constants"].items()) or "its own constants"
    line = f"pre-equilibration{when}: {who} at the steady state the model reaches with {values}"
    reset = summary.get("reset") or []
    if reset:
        line += (f", then {reset[0]} takes its initial value again" if len(reset) == 1 else
                 f", then {', '.join(reset)} take their initial values again")
    if "distinct_steady_states" in summary:
        laws = "/".join(str(n) for n in summary["conservation_laws"])
        line += (f" ({summary['distinct_steady_states']} distinct, {laws} conservation law"
                 f"{'' if laws == '1' else 's'}; {summary['solves']} solve{'' if summary['solves'] == 1 else 's'})")
    return line


def print_summary(outcomes, skipped: list[str] | None = None) -> None:
    """One row per config: status, loss, time, run directory or error; then the configs not started."""
    from rich.table import Table

    skipped = skipped or []
    table = Table(title=f"{len(outcomes) + len(skipped)} run(s): {sum(o.ok for o in outcomes)} ok, "
                        f"{sum(not o.ok for o in outcomes)} failed"
                        + (f", {len(skipped)} not started" if skipped else ""), title_justify="left")
    for col in ("config", "status", "loss", "time", "run directory / error"):
        table.add_column(col, justify="right" if col in ("loss", "time") else "left")
    for o in outcomes:
        loss = f"{o.metrics['loss']:.4g}" if o.ok and o.metrics.get("loss") is not None else ""
        detail = o.run_dir if o.ok else o.error["message"].splitlines()[0]
        table.add_row(o.config, o.status + (", poor fit" if _poor(o) else ""), loss, f"{o.seconds:.1f} s", detail)
    for label in skipped:
        table.add_row(label, "not started", "", "", "")
    console().print(table)


def _none(x) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def _fmt(x, infinite: str, digits: int = 6) -> str:
    if _none(x) or x in (float("inf"), float("-inf")):
        return infinite
    return f"{x:.{digits}g}"


def print_identifiability(out, uncertainty: dict) -> None:
    """The values the data cannot identify, in a box the reader cannot miss, and the notes on how the
    intervals were computed."""
    from rich.markup import escape
    from rich.panel import Panel

    if any(i.get("identifiable") is None for i in (uncertainty.get("intervals") or {}).values()):
        out.print("? the network was held fixed: the interval is a lower bound on the uncertainty, and whether the "
                  "network can compensate the value is not checked (ude fit --profile checks it)", highlight=False)
    for name, d in (uncertainty.get("derived") or {}).items():
        lo, hi = _fmt(d["lower"], "-inf", 4), _fmt(d["upper"], "inf", 4)
        out.print(escape(f"{name} = {d['formula']} = {d['value']:.6g} [{lo}, {hi}] ({d['method']})"), highlight=False)
    bad = uncertainty.get("not_identifiable") or []
    if bad:
        lines = [f"{b['name']}: {b['reason']}" for b in bad]
        out.print(Panel(escape("\n".join(lines)), title=f"not identifiable ({len(bad)}; marked !)",
                        title_align="left", border_style="red"), highlight=False)
    for warning in uncertainty.get("warnings") or []:
        out.print(f"[yellow]{escape(f'warning: {warning}')}[/yellow]", highlight=False)
    for note in uncertainty.get("notes") or []:
        out.print(escape(f"note: {note}"), highlight=False)
