"""``ude fit CONFIG...``: fit each config and write its run directory."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .common import fail, warn


def register(app: typer.Typer) -> None:
    app.command("fit", help=(
        "Fit a universal differential equation to the data named in each CONFIG and write a run "
        "directory: params.csv/json, predictions.csv, metrics.json, loss.csv, run.json, model.pt and "
        "figures (PNG + PDF)."))(fit_command)


def fit_command(
    configs: list[Path] = typer.Argument(..., help="YAML config file(s).", show_default=False),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default: runs/<config name>).", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors (for scripts)."),
    stop_below: float | None = typer.Option(
        None, "--stop-below", help="Stop training once the training loss is below this value.",
        show_default=False),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write figures."),
) -> None:
    from ..api import default_out, run_fit
    from ..config import load_config
    from ..errors import UdeError
    from ..problem import resolve
    from ..progress import make_monitor

    if out is not None and len(configs) > 1:
        raise typer.BadParameter("--out names one run directory; give one config with it", param_hint="--out")
    for path in configs:
        try:
            cfg = load_config(path)
            problem = resolve(cfg)
            for w in problem.warnings:
                if not quiet:
                    warn(w)
            target = out if out is not None else default_out(cfg)
            monitor = make_monitor(cfg.run_name, len(cfg.training.stages), quiet=quiet)
            with monitor:
                result, written = run_fit(cfg, out=target, overwrite=overwrite, monitor=monitor,
                                          stop_below=stop_below, plots=False if no_plots else None,
                                          command=["ude", *sys.argv[1:]])
        except UdeError as exc:
            fail(exc)
        if not quiet:
            print_result(result, written)


def print_result(result, path: Path) -> None:
    """The parameters table and the key metrics, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{result.name}: fitted parameters", title_justify="left")
    for col in ("parameter", "value", "initial", "learned", "bounds"):
        table.add_column(col, justify="right" if col in ("value", "initial") else "left")
    for row in result.parameters.to_dict(orient="records"):
        lo, hi = row["lower"], row["upper"]
        bounds = "" if _none(lo) and _none(hi) else f"[{_fmt(lo, '-inf')}, {_fmt(hi, 'inf')}]"
        table.add_row(str(row["name"]), f"{row['value']:.6g}", f"{row['init']:.6g}",
                      "yes" if row["learned"] else "fixed", bounds)
    console.print(table)
    m = result.metrics
    line = f"train {m['loss_kind']} {m['loss']:.4g}"
    if m.get("validation_loss") is not None:
        line += f", validation {m['validation_loss']:.4g}"
    line += f"; {m['iterations']} iterations, {m['wall_seconds']:.1f} s, {m['solver_evaluations']} solver evaluations"
    console.print(line, highlight=False)
    console.print(f"run directory: {path}", highlight=False)


def _none(x) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def _fmt(x, infinite: str) -> str:
    return infinite if _none(x) else f"{x:g}"
