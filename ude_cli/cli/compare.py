"""``ude compare RUN EXPECTED``: regression check of a run against expected results."""

from __future__ import annotations

from pathlib import Path

import typer

from . import exits
from .common import Command, console, fail, fail_json, json_option, nonnegative, print_json


def register(app: typer.Typer) -> None:
    app.command("compare", cls=Command, short_help="Compare a run with expected values (regression check).", help=(
        "Compare the run directory RUN with EXPECTED (another run directory, or a JSON file of parameters and "
        "metrics with tolerances) and print what differs. Exit code 5 on a mismatch. --save writes an "
        "EXPECTED file from RUN instead."))(compare_command)


def compare_command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory to check.", show_default=False),
    expected: Path = typer.Argument(..., metavar="EXPECTED", help="Expected results: a run directory or a JSON file.",
                                    show_default=False),
    rtol: float = typer.Option(1e-6, "--rtol", callback=nonnegative,
                               help="Relative tolerance (when EXPECTED does not give one)."),
    atol: float = typer.Option(0.0, "--atol", callback=nonnegative,
                               help="Absolute tolerance (when EXPECTED does not give one)."),
    save: bool = typer.Option(False, "--save", help="Write EXPECTED (JSON) from RUN with these tolerances."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only mismatches."),
    json_out: bool = json_option("status, and each quantity: expected, actual, difference, tolerance, status"),
) -> None:
    from ..errors import RunDirError, UdeError
    from ..runs.compare import compare, expected_from_run
    from ..runs.rundir import atomic_write_json, write_failure_safe

    fields = {"run": str(run), "expected": str(expected)}
    try:
        if save:
            if expected.is_dir():
                raise RunDirError("is a directory; --save writes a JSON file", where=str(expected))
            data = expected_from_run(run, rtol=rtol, atol=atol)
            write_failure_safe(atomic_write_json, expected, data, where=str(expected))
            if json_out:
                print_json({"status": "ok", **fields, "written": str(expected)})
            elif not quiet:
                typer.echo(f"wrote {expected}")
            return
        rows = compare(run, expected, rtol=rtol, atol=atol)
    except UdeError as exc:
        (fail_json(exc, **fields) if json_out else fail(exc))
    bad = [r for r in rows if not r.ok]
    shown = bad if quiet else rows
    if json_out:
        print_json({"status": "mismatch" if bad else "ok", **fields, "within_tolerance": len(rows) - len(bad),
                    "quantities": len(rows),
                    "rows": [{"kind": r.kind, "name": r.name, "expected": r.expected, "actual": r.actual,
                              "difference": r.difference, "rtol": r.rtol, "atol": r.atol, "status": r.status}
                             for r in rows]})
    elif shown:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{run} vs {expected}: {len(rows) - len(bad)} of {len(rows)} within tolerance",
                      title_justify="left")
        for col in ("quantity", "expected", "actual", "difference", "tolerance", "status"):
            table.add_column(col, justify="left" if col in ("quantity", "status") else "right")
        for r in shown:
            tol = f"{r.atol:g} + {r.rtol:g}·|expected|" if r.atol else f"rtol {r.rtol:g}"
            table.add_row(escape(f"{r.kind} {r.name}"), _num(r.expected), _num(r.actual), _num(r.difference), tol,
                          r.status)
        console().print(table)
    if bad:
        typer.echo(f"error: {run}: {len(bad)} of {len(rows)} quantities differ from {expected} beyond tolerance: "
                   + ", ".join(r.name for r in bad[:5]) + (" ..." if len(bad) > 5 else ""), err=True)
        raise typer.Exit(exits.MISMATCH)


def _num(x) -> str:
    return "-" if x is None else f"{x:.6g}"
