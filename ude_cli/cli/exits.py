"""Exit codes of ``ude``: the only place that maps error classes to numbers."""

from __future__ import annotations

OK = 0
INTERNAL = 1  # a bug in ude: please report it (run with --debug for a traceback)
USAGE = 2  # bad command-line usage (unknown option, missing argument, an unreachable --scheduler)
BAD_INPUT = 3  # the config or the data is wrong
FIT_FAILED = 4  # the fit failed numerically (NaN loss, solver failure, blow-up), or is poor under --strict
MISMATCH = 5  # `ude compare`: results differ from the expected beyond tolerance
OUTPUT = 6  # a run directory: the output exists (without --overwrite) or cannot be written, or RUN is missing/incomplete
INTERRUPTED = 130  # stopped by Ctrl-C / SIGTERM; a resumable checkpoint was saved

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (a bug: rerun with --debug); 2 usage error (or an unreachable "
    "--scheduler); "
    "3 bad config or data; 4 the fit failed numerically (or, with --strict, is poor); 5 regression mismatch (ude compare); "
    "6 run directory problem (the output exists or cannot be written, or RUN is missing or incomplete); 130 interrupted (resume with --resume)."
)


def code_for(error: BaseException) -> int:
    from ..errors import ConfigError, DataError, FitError, Interrupted, MismatchError, RunDirError, UsageError

    if isinstance(error, Interrupted):
        return INTERRUPTED
    if isinstance(error, UsageError):
        return USAGE
    if isinstance(error, ConfigError | DataError):
        return BAD_INPUT
    if isinstance(error, FitError):
        return FIT_FAILED
    if isinstance(error, MismatchError):
        return MISMATCH
    if isinstance(error, RunDirError):
        return OUTPUT
    return INTERNAL


def for_kind(kind: str) -> int:
    """Exit code of a batch outcome's error kind (see :mod:`ude_cli.batch.outcomes`)."""
    return {"bad_input": BAD_INPUT, "fit_failed": FIT_FAILED, "output": OUTPUT, "interrupted": INTERRUPTED,
            "mismatch": MISMATCH, "usage": USAGE}.get(kind, INTERNAL)
