"""Shared plumbing of the commands: error reporting, output streams, running the app."""

from __future__ import annotations

import contextlib
import sys
import traceback
from dataclasses import dataclass

import typer

from . import exits


@dataclass
class _State:
    debug: bool = False


state = _State()


def error_line(text: str) -> None:
    """Print an error (one or several lines) to stderr."""
    for line in str(text).splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)


def warn(text: str) -> None:
    typer.echo(f"warning: {text}", err=True)


def fail(error: BaseException) -> None:
    """Report a UdeError (or anything else) and exit with its code."""
    from ..errors import UdeError

    if isinstance(error, UdeError):
        for line in error.lines():
            typer.echo(f"error: {line}", err=True)
        if state.debug:
            traceback.print_exception(error, file=sys.stderr)
        raise typer.Exit(exits.code_for(error))
    raise error


class Command(typer.core.TyperCommand):
    """A command whose help names values as a user writes them: ``CONFIG...`` and ``--starts <int>``,
    not typer's ``{CONFIG}``, ``CONFIG <list[Path]>`` and ``<int range>``. An option's ``metavar``
    (``NAME=VALUE``) names its value; the ranges stay in the option's help text."""

    def __init__(self, *args, **kwargs):
        import types

        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                setattr(param, "display_type_rich", types.MethodType(lambda self, ctx: "", param))  # noqa: B010
                setattr(param, "_usage_display_name", types.MethodType(_argument_usage, param))  # noqa: B010
            elif isinstance(param, typer.core.TyperOption):
                setattr(param, "display_type_rich", types.MethodType(_option_type, param))  # noqa: B010


def _argument_usage(param) -> str:
    name = param.display_name_raw
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def _option_type(param, ctx) -> str:
    if param.metavar is not None:
        return f"<{param.metavar}>"
    label = typer.core.TyperOption.display_type_rich(param, ctx) or ""
    return {"<list[str]>": "<text>", "<str>": "<text>", "<int range>": "<int>", "<float range>": "<float>",
            "<list[Path]>": "<path>", "<list[path]>": "<path>"}.get(label, label)


def json_option(what: str):
    """The ``--json`` option of a command: one JSON document of ``what`` on stdout, logs on stderr."""
    return typer.Option(False, "--json", help=f"Print one JSON document ({what}) on stdout; logs and errors go to "
                                               f"stderr. For scripts and CI.")


def plain(value):
    """``value`` as JSON-ready data: numpy scalars and arrays as numbers and lists, paths as text, NaN and
    infinities as null (JSON has no such numbers)."""
    import math
    from pathlib import PurePath

    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return str(value)
    return value


def print_json(document: dict) -> None:
    """One JSON document on stdout."""
    import json

    typer.echo(json.dumps(plain(document), allow_nan=False))


def error_record(error: BaseException) -> dict:
    """``{"kind", "message", "lines"}`` of a UdeError, as ``ude fit --json`` reports one."""
    from ..batch.outcomes import error_kind
    from ..errors import UdeError

    lines = error.lines() if isinstance(error, UdeError) else [str(error)]
    return {"kind": error_kind(error), "message": str(error), "lines": lines}


def fail_json(error: BaseException, **fields) -> None:
    """With ``--json``: the error's lines on stderr, ``{"status": "failed", "error": ..., **fields}`` on
    stdout, and its exit code. Not a UdeError: raised as it is (a bug)."""
    from ..errors import UdeError

    if isinstance(error, UdeError):
        print_json({"status": "failed", **fields, "error": error_record(error)})
    fail(error)


def run_app(app: typer.Typer) -> None:
    """Run the typer app; unexpected exceptions become one line (traceback with --debug)."""
    debug = "--debug" in sys.argv[1:]
    _terminate_like_interrupt()
    if not debug:
        _one_line_warnings()
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise SystemExit(exits.INTERRUPTED) from None
    except Exception as exc:  # a bug: keep it to one line unless --debug
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        elif _out_of_memory(exc):
            typer.echo(f"error: out of memory ({type(exc).__name__}: {exc}): the problem is too large for this "
                       f"machine's memory as it is solved (many states or starts on the torchdiffeq engine, whose "
                       f"gradient keeps every solver step)", err=True)
        else:
            typer.echo(f"error: internal error: {type(exc).__name__}: {exc} (this is a bug in ude; rerun with "
                       f"--debug and report the traceback)", err=True)
        raise SystemExit(exits.INTERNAL) from None


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: Python's MemoryError, or C++'s std::bad_alloc (torch, CasADi) and
    torch's "not enough memory" as RuntimeError."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError)
                                            and ("bad_alloc" in text or "not enough memory" in text))


#: numpy's floating-point warnings, as a user reads them (the arithmetic went out of range somewhere).
_NUMPY_WARNINGS = {
    "overflow encountered": "a computation overflowed (a value beyond 1e308 became infinite)",
    "invalid value encountered": "a computation gave NaN (0/0, inf - inf, or a log or sqrt of a negative value)",
    "divide by zero encountered": "a computation divided by zero",
    "underflow encountered": None,  # a value below 1e-308 became 0: harmless, not shown
}


def translate_warning(message: str, category: type, filename: str) -> str | None:
    """A library's warning as one line of ours, or None when it means nothing to a user.

    numpy's floating-point warnings name what happened in plain words and where (the module); torch's and
    other libraries' deprecation and future warnings are for developers and are not shown (``--debug``
    shows every warning as Python would)."""
    import os

    from ..errors import one_line

    text = one_line(str(message))
    if issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning):
        return None
    if issubclass(category, RuntimeWarning):
        for start, plain in _NUMPY_WARNINGS.items():
            if text.startswith(start):
                if plain is None:
                    return None
                where = os.path.splitext(os.path.basename(filename))[0]
                return f"{plain} (in {where}: {text}); the results may hold inf or NaN where it happened"
    return text


def _one_line_warnings() -> None:
    """Python warnings from the libraries (a solver's "did not converge", numpy overflow) as one
    ``warning:`` line each, like ours, instead of a file path, a line number and a source line;
    translated where they mean something (:func:`translate_warning`), and each shown once."""
    import warnings

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = translate_warning(str(message), category, filename)
        if text is not None and text not in shown:
            shown.add(text)
            typer.echo(f"warning: {text}", err=True)

    warnings.showwarning = show


def _terminate_like_interrupt() -> None:
    """SIGTERM before (or outside) a fit's own handling ends the command as Ctrl-C does: exit code 130
    and one line, instead of a silent kill. A fit replaces this with its checkpointing handler."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError, OSError):  # not the main thread, or no signals here
        signal.signal(signal.SIGTERM, handler)


def console(stderr: bool = False):
    """A rich console: the terminal's width on a terminal, wide enough for tables in logs and pipes."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    width = None if tty else int(os.environ.get("COLUMNS", 160))
    return Console(file=stream, width=width)


def _finite_option(strict: bool):
    """An option callback: a finite number > 0 (``strict``) or >= 0 (click's ranges let NaN through)."""
    import math

    def check(value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value < 0 or (strict and value == 0)):
            raise typer.BadParameter(f"must be a finite number {'>' if strict else '>='} 0, got {value:g}")
        return value

    return check


nonnegative = _finite_option(strict=False)
positive = _finite_option(strict=True)
