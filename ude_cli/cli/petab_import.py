"""``ude import PROBLEM.yaml --out DIR``: a PEtab problem as a ``ude`` config + data CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Command, fail


def register(app: typer.Typer) -> None:
    app.command("import", cls=Command, short_help="Translate a PEtab problem into a ude config and data CSV.", help=(
        "Translate the PEtab v1 problem PROBLEM (its YAML file) into DIR/config.yaml, DIR/data.csv and "
        "DIR/petab.json (how the PEtab ids map to the config's names). `ude fit DIR/config.yaml` fits it; "
        "`ude evaluate` gives its log-likelihood. What the translation cannot express is reported in one line "
        "naming the file and the feature (exit code 3), and nothing is written."))(import_command)


def import_command(
    problem: Path = typer.Argument(..., metavar="PROBLEM", help="The PEtab problem's YAML file.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must be empty or absent).", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    from ..errors import UdeError
    from ..petab import import_problem

    try:
        notes: list[str] = []
        config = import_problem(problem, out, overwrite=overwrite, notes=notes)
    except UdeError as exc:
        fail(exc)
        return
    if not quiet:
        for note in notes:
            typer.echo(f"note: {note}")
        typer.echo(f"wrote {config} (and data.csv, petab.json); fit it with: ude fit {config}")
