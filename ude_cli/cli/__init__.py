"""The ``ude`` command: a thin typer shell over the library.

Each command parses its options, calls one library function, and turns a
:class:`~ude_cli.errors.UdeError` into one line on stderr and an exit code (see :mod:`.exits`).
Heavy libraries (torch, pandas, matplotlib) are imported only inside the commands that need them.
"""

from __future__ import annotations

import typer

from .common import state
from .exits import EXIT_CODES_HELP

app = typer.Typer(
    name="ude",
    help="Fit universal differential equations (a mechanistic ODE + neural corrections) to CSV time series.\n\n"
         + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for errors (for bug reports)."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from .. import __version__

        typer.echo(f"ude {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:  # `ude --debug` alone: what `ude` alone shows
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    state.debug = debug


from . import check as _check  # noqa: E402
from . import compare as _compare  # noqa: E402
from . import discover as _discover  # noqa: E402
from . import evaluate as _evaluate  # noqa: E402
from . import export as _export  # noqa: E402
from . import fit as _fit  # noqa: E402
from . import models as _models  # noqa: E402
from . import petab_import as _petab_import  # noqa: E402
from . import predict as _predict  # noqa: E402
from . import report as _report  # noqa: E402

for _module in (_fit, _check, _compare, _models, _discover, _predict, _report, _petab_import, _evaluate,
                _export):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    from .common import run_app

    run_app(app)
