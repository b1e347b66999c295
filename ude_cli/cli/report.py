"""``ude report RUN``: redraw every figure of a saved run and write one self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Command, fail


def register(app: typer.Typer) -> None:
    app.command("report", cls=Command, short_help="Write report.html and redraw the figures of a run.", help=(
        "Redraw every figure of a fitted RUN from its saved files (no refitting) and write report.html: one "
        "self-contained file (images embedded, equations drawn without any CDN; it opens offline) with the "
        "parameters, the metrics, the figures, the recovered equations and the verdict of `ude discover`."))(
        report_command)


def report_command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `ude fit`.", show_default=False),
    out: Path | None = typer.Option(None, "--out", "-o", help="The HTML file [RUN/report.html].",
                                    show_default=False),
) -> None:
    from ..errors import UdeError
    from ..runs.report import write_report

    try:
        path = write_report(run, out=out)
    except UdeError as exc:
        fail(exc)
    typer.echo(f"written: {path}")
