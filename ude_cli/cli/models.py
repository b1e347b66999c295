"""``ude models``: the built-in mechanistic models with their equations and parameters."""

from __future__ import annotations

import typer

from .common import Command


def register(app: typer.Typer) -> None:
    app.command("models", cls=Command, short_help="List the built-in models: equations, parameters, citations.", help="List the built-in mechanistic models: states, equations, parameters, citation.")(
        models_command)


def models_command(
    name: str | None = typer.Argument(None, metavar="NAME", help="Show only this model.", show_default=False),
) -> None:
    from ..errors import UdeError
    from ..mechanistic import MODELS, get_model
    from .common import fail

    try:
        chosen = [get_model(name)] if name else list(MODELS.values())
    except UdeError as exc:
        fail(exc)
    for k, m in enumerate(chosen):
        if k:
            typer.echo("")
        typer.echo(f"{m.name}: {m.summary}")
        for s, eq in m.equations.items():
            typer.echo(f"  d{s}/dt = {eq}")
        typer.echo("  states:     " + ", ".join(f"{s} ({d})" for s, d in m.states.items()))
        params = []
        for p, d in m.parameters.items():
            extra = ", fixed" if d.fixed else ""
            params.append(f"{p} = {d.init:g} ({d.description}{extra})")
        typer.echo("  parameters: " + "; ".join(params))
        if m.constants:
            typer.echo("  constants:  " + ", ".join(
                f"{c} ({m.constant_descriptions.get(c, '')}{', required' if v is None else f' = {v:g}'})"
                for c, v in m.constants.items()))
        typer.echo(f"  citation:   {m.citation}")
