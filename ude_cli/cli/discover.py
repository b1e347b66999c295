"""``ude discover RUN``: recover equations for the learned terms, refit them to the data, check them."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Command, fail, fail_json, json_option, print_json, warn


def register(app: typer.Typer) -> None:
    app.command("discover", cls=Command, short_help="Recover equations for the learned terms of a fitted run.", help=(
        "Recover equations for the learned terms of a fitted RUN: sample each network along the fitted "
        "trajectories, regress it on a library of candidates (pysindy, threshold path), then let the data "
        "decide: each candidate is refitted to the data by ODE least squares and ranked by BIC. The recovered "
        "model is scored beside the UDE and the mechanistic-only model, simulated far beyond the data, and "
        "given a verdict. Writes RUN/discovery/: equations.md, recovered.yaml (a config `ude fit` runs), "
        "discovery.json, CSVs and figures. Settings default to the config's `discover:` section. Exits with "
        "code 4 when the recovered model fails or fits clearly worse."))(discover_command)


def discover_command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `ude fit`.", show_default=False),
    degree: int | None = typer.Option(None, "--degree", help="Highest degree of the polynomial candidates [2].",
                                      show_default=False),
    functions: list[str] | None = typer.Option(
        None, "--function", "-f", metavar="EXPRESSION", help="An extra candidate, e.g. 'exp(-x)' or 'x/(1+x)' (repeatable).",
        show_default=False),
    max_terms: int | None = typer.Option(None, "--max-terms", help="Most library terms per learned term [4].",
                                         show_default=False),
    horizon: float | None = typer.Option(
        None, "--horizon", help="End time of the extrapolation check [t0 + 10 x the data's span].",
        show_default=False),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory [RUN/discovery].",
                                    show_default=False),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write figures."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the verdict line and errors."),
    json_out: bool = json_option("verdict, equations, learned terms with their fidelity, scores, output directory"),
) -> None:
    from ..discovery.files import discover_run
    from ..errors import ConfigError, UdeError

    def log(text: str) -> None:
        if not quiet:
            typer.echo(text, err=True)

    failing = (lambda exc: fail_json(exc, run=str(run))) if json_out else fail
    if degree is not None and not 0 <= degree <= 6:
        failing(ConfigError(f"must be between 0 and 6, got {degree}", where="--degree"))
    if max_terms is not None and max_terms < 1:
        failing(ConfigError(f"must be >= 1, got {max_terms}", where="--max-terms"))
    try:
        discovery, path = discover_run(run, out=out, log=log, plots=not no_plots, degree=degree,
                                       functions=functions or None, max_terms=max_terms, horizon=horizon)
    except UdeError as exc:
        failing(exc)
    if json_out:
        from ..discovery.files import equation_forms

        if not discovery.success:
            warn(f"{discovery.verdict.upper()}: {discovery.messages[0]}")
        print_json({"status": "ok" if discovery.success else "failed", "run": str(run), "directory": str(path),
                    "verdict": discovery.verdict, "success": discovery.success, "messages": discovery.messages,
                    "equations": equation_forms(discovery),
                    "terms": [{"term": t.label, "expression": t.expression(),
                               "r2": None if t.degenerate else t.fidelity.r2, "max_error": t.fidelity.max_error,
                               "degenerate": t.degenerate,
                               "intervals": {n: iv.as_dict() for n, iv in t.intervals.items()}}
                              for t in discovery.terms]})
    else:
        print_discovery(discovery, path, quiet=quiet)
    if not discovery.success:
        from .exits import FIT_FAILED

        raise typer.Exit(FIT_FAILED)


def print_discovery(discovery, path: Path, quiet: bool = False) -> None:
    """The verdict, the recovered equations, their coefficients and the scores, on stdout."""
    from ..discovery.files import equation_forms

    headline = f"{discovery.verdict.upper()}: {discovery.messages[0]}"
    if not discovery.success:
        warn(headline)  # loud, on stderr; stdout names the verdict without repeating it
        headline = f"verdict: {discovery.verdict.upper()} (see the warning)"
    typer.echo(headline)
    if quiet:
        return
    typer.echo("")
    for s, form in equation_forms(discovery).items():
        typer.echo(f"  d{s}/dt = {form['numeric']}")
    typer.echo("")
    for t in discovery.terms:
        against = (f"R² {t.fidelity.r2:.4g}, " if not t.degenerate else "") + f"max error {t.fidelity.max_error:.3g}"
        typer.echo(f"  {t.label} = {t.expression()}   (against the network: {against})")
        for iv in t.intervals.values():
            factor = getattr(iv, "adjustment", 1.0)
            robust = (f"; the statistic scaled by {factor:.3g}: the noise's variance differs between observations"
                      if factor < 1 else "")
            typer.echo(f"    {iv.name} = {iv.text()}  ({100 * iv.level:g} % interval{robust})")
    methods = sorted({iv.method for t in discovery.terms for iv in t.intervals.values()})
    if methods:
        typer.echo(f"  intervals: {'; '.join(methods)}")
    own = discovery.recovered_intervals or {}
    if own.get("intervals"):
        typer.echo(f"  the recovered model's own {100 * own['level']:g} % intervals ({own['method']}; its noise model's "
                   "likelihood as it is, not scaled):")
        for name, iv in own["intervals"].items():
            lo = "-inf" if iv["lower"] is None else f"{iv['lower']:.4g}"
            hi = "inf" if iv["upper"] is None else f"{iv['upper']:.4g}"
            flag = "  not identifiable" if iv["identifiable"] is False else ""
            typer.echo(f"    {name} = {iv['value']:.6g} [{lo}, {hi}]{flag}")
    elif own.get("note"):
        typer.echo(f"  {own['note']}")
    typer.echo("")
    for line in discovery.messages[1:]:
        typer.echo(line)
    typer.echo(f"written: {path} (equations.md, recovered.yaml, discovery.json, figures/)")
