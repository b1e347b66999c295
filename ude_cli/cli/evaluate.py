"""``ude evaluate PROBLEM.yaml|CONFIG``: log-likelihood, gradient and simulations at the nominal values."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Command, fail


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=Command, short_help="Log-likelihood, gradient and simulations at given values.", help=(
        "Evaluate a PEtab problem (its YAML file) or a ude config at the nominal parameter values (the "
        "config's init): the log-likelihood with every normalising constant (PEtab's and AMICI's number), its "
        "gradient with respect to the estimated parameters, and the simulations at the measurements. The ODE "
        "is solved at rtol 1e-10, atol 1e-12 (unless the config's are tighter)."))(evaluate_command)


def evaluate_command(
    source: Path = typer.Argument(..., metavar="PROBLEM|CONFIG", help="PEtab problem YAML or ude config.",
                                  show_default=False),
    json_file: Path = typer.Option(None, "--json", metavar="FILE", help="Also write everything (simulations "
                                   "included) to FILE as one JSON document.", show_default=False),
    rtol: float = typer.Option(1e-10, "--rtol", min=0, help="Relative tolerance of the ODE solver."),
    atol: float = typer.Option(1e-12, "--atol", min=0, help="Absolute tolerance of the ODE solver."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    from ..errors import UdeError
    from ..petab import evaluate

    try:
        result = evaluate(source, rtol=rtol, atol=atol)
    except UdeError as exc:
        fail(exc)
        return
    if json_file is not None:
        import json

        from .common import plain

        json_file.write_text(json.dumps(plain(result.to_json()), indent=1, allow_nan=False) + "\n")
    if quiet:
        return
    import numpy as np

    sim = result.simulations
    typer.echo(f"{source}: log-likelihood {result.llh:.10g} (negative: {-result.llh:.10g}) over {len(sim)} "
               f"measurements; solver {result.solver['method']} ({result.solver['engine']} engine), rtol "
               f"{result.solver['rtol']:g}, atol {result.solver['atol']:g}; {result.seconds:.2f} s")
    if result.log_prior is not None:
        typer.echo(f"log-prior {result.log_prior:.10g} (the parameter table's priors), log-posterior "
                   f"{result.log_posterior:.10g}; the gradients below are of the log-posterior")
    if result.gradient:
        scaled = result.gradient_scaled
        width = max(len(n) for n in result.gradient)
        f = "llh" if result.log_prior is None else "lpost"
        head = f"{'parameter':<{width}}  {'value':>14}  {f'd {f} / d value':>16}"
        typer.echo(head + (f"  {f'd {f} / d scaled':>16}" if scaled is not None else ""))
        for name, g in result.gradient.items():
            line = f"{name:<{width}}  {result.values.get(name, float('nan')):>14.7g}  {g:>16.7g}"
            if scaled is not None:
                line += f"  {scaled[name]:>16.7g}"
            typer.echo(line)
    if result.finite_differences:
        names = ", ".join(result.finite_differences)
        typer.echo(f"the gradient of {names}: central finite differences (step 1e-4 |value|): "
                   f"{'it sets' if len(result.finite_differences) == 1 else 'they set'} where a where(...) of the "
                   "right-hand side switches, which the solvers' gradient does not see")
    for net, layers in result.gradient_networks.items():
        size = sum(len(np.ravel(v)) for arrays in layers.values() for v in arrays.values())
        typer.echo(f"network {net}: d llh / d weights over {size} learned values (largest magnitude "
                   f"{max((abs(float(x)) for a in layers.values() for v in a.values() for x in np.ravel(v)), default=0):.4g})"
                   + ("; every array in --json" if json_file is None else ""))
    if json_file is not None:
        typer.echo(f"wrote {json_file} (log-likelihood, gradient, {len(sim)} simulations)")
