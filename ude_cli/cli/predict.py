"""``ude predict RUN --until T``: forecast the UDE and the recovered model beyond the data."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Command, fail, fail_json, json_option, print_json, warn


def register(app: typer.Typer) -> None:
    app.command("predict", cls=Command, short_help="Forecast a fitted run beyond the data.", help=(
        "Simulate a fitted RUN to time --until, for the UDE and (after `ude discover`) the recovered model, "
        "optionally for one experiment, new initial states or changed parameter values. Writes "
        "RUN/forecast/: forecast.csv, forecast.json and figures/forecast.png/.pdf. A multistart run draws "
        "the band its starts span."))(predict_command)


def predict_command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `ude fit`.", show_default=False),
    until: float = typer.Option(..., "--until", "-u", help="End time of the forecast.", show_default=False),
    experiment: str | None = typer.Option(None, "--experiment", "-e", metavar="NAME", help="Only this experiment [all].",
                                          show_default=False),
    initial: list[str] | None = typer.Option(
        None, "--initial", "-i", metavar="STATE=VALUE", help="New initial state, STATE=VALUE (repeatable, or x=1,y=2).",
        show_default=False),
    set_values: list[str] | None = typer.Option(
        None, "--set", "-s", metavar="NAME=VALUE", help="New parameter value, NAME=VALUE (repeatable).", show_default=False),
    points: int = typer.Option(400, "--points", min=10, max=100_000, help="Time points per experiment."),
    no_recovered: bool = typer.Option(False, "--no-recovered", help="Leave out the recovered model."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory [RUN/forecast].",
                                    show_default=False),
    json_out: bool = json_option("the output directory, what was changed, notes, and the last state of each model "
                                 "and experiment"),
) -> None:
    from ..errors import UdeError
    from ..forecast import FORECAST_DIR, forecast, parse_assignments, write_forecast
    from ..runs.load import load_run
    from ..runs.rundir import write_failure_safe

    try:
        init = parse_assignments(initial, "--initial")
        values = parse_assignments(set_values, "--set")
        saved = load_run(run)
        fc = forecast(saved, until, experiment=experiment, initial=init, values=values, n_points=points,
                      recovered=not no_recovered)
        target = out if out is not None else Path(run) / FORECAST_DIR
        path = write_failure_safe(write_forecast, fc, target, dpi=saved.config.output.dpi, where=str(target))
    except UdeError as exc:
        (fail_json(exc, run=str(run)) if json_out else fail(exc))
    alarming = ("FAILED", "WORSE", "fails", "diverges", "cannot be simulated")
    for note in fc.notes:
        if any(word in note for word in alarming):
            warn(note)
        else:
            typer.echo(note, err=json_out)  # with --json, stdout holds the document alone
    last = fc.frame.sort_values("time").groupby(["model", "experiment"], sort=False).tail(1)
    if json_out:
        print_json({"status": "ok", "run": str(run), "directory": str(path), "changed": fc.changed,
                    "notes": fc.notes,
                    "final": [{"model": row["model"], "experiment": str(row["experiment"]), "time": row["time"],
                               **{s: row[s] for s in fc.problem.states}}
                              for row in last.to_dict(orient="records")]})
        return
    for row in last.to_dict(orient="records"):
        states = ", ".join(f"{s} = {row[s]:.4g}" for s in fc.problem.states)
        typer.echo(f"{row['model']}, experiment {row['experiment']}, t = {row['time']:g}: {states}")
    typer.echo(f"written: {path} (forecast.csv, forecast.json, figures/forecast.png/.pdf)")
