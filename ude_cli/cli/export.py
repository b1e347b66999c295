"""``ude export RUN|CONFIG --out DIR``: a fitted run or a config as a PEtab SciML problem."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Command, fail


def register(app: typer.Typer) -> None:
    app.command("export", cls=Command, short_help="Write a run or config as a PEtab SciML problem.", help=(
        "Write the fitted run RUN (its fitted values and weights) or the config CONFIG (its starting values and "
        "the networks' initial weights) as a PEtab SciML problem in DIR: problem.yaml, an SBML model, the "
        "PEtab tables, network YAML files and HDF5 weights, for PEtab.jl or AMICI. The problem is re-imported "
        "and evaluated before it is moved into place, and both log-likelihoods are printed. What PEtab cannot "
        "express is reported in one line naming the config field (exit code 3), and nothing is written."
    ))(export_command)


def export_command(
    source: Path = typer.Argument(..., metavar="RUN|CONFIG", help="A run directory or a ude config.",
                                  show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must be empty or absent).", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    check: bool = typer.Option(True, "--check/--no-check", help="Re-import the written problem and evaluate its "
                               "log-likelihood before moving it into place."),
    version: int = typer.Option(2, "--petab-version", min=1, max=2, help="2: PEtab v2 with the SciML extension; 1: "
                                "PEtab v1 (for tools that read only v1; no networks)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    from ..errors import UdeError
    from ..petab import export

    try:
        result = export(source, out, overwrite=overwrite, check=check, version=version)
    except UdeError as exc:
        fail(exc)
        return
    if quiet:
        return
    typer.echo(f"wrote {result.problem} ({', '.join(f for f in result.files if f != 'problem.yaml')})")
    typer.echo(f"log-likelihood of {source}: {result.llh_source:.12g} (ude's objective at the exported values)")
    if result.llh_exported is not None:
        typer.echo(f"log-likelihood of the exported problem, re-imported: {result.llh_exported:.12g} "
                   f"(difference {result.difference:.2g}; both at rtol {result.rtol:g}, atol {result.atol:g}: "
                   f"ude evaluate {result.problem} --rtol {result.rtol:g} --atol {result.atol:g})")
        if abs(result.llh_exported - result.llh_source) > 1e-6 * max(1.0, abs(result.llh_source)):
            typer.echo("warning: they differ by more than 1e-6 (relative): the exported problem does not reproduce "
                       "the source; please report it (ude export --debug)", err=True)
    for note in result.notes:
        typer.echo(f"note: {note}")
