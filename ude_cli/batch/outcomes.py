"""Fitting one config as a unit of a batch: never raises for the user's mistakes, reports an outcome.

``ude fit a.yaml b.yaml ...`` runs :func:`fit_one` for each config and keeps going past failures;
the same function runs in a worker process for parallel batches.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: error kinds, in the order of the exit codes the command line gives them
KINDS = ("bad_input", "fit_failed", "output", "interrupted", "internal")


@dataclass
class RunOutcome:
    """What became of one config in a batch (one JSON object with ``--json``)."""

    config: str
    status: str  # "ok" | "failed" | "interrupted"
    run_dir: str | None = None
    seconds: float = 0.0
    parameters: dict[str, float] | None = None
    metrics: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # {"kind": one of KINDS, "message": "...", "lines": [...]}
    warnings: list[str] = field(default_factory=list)
    discovery: dict[str, Any] | None = None  # with a `discover:` section: verdict, equations, directory

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return asdict(self)


def error_kind(exc: BaseException) -> str:
    from ..errors import ConfigError, DataError, FitError, Interrupted, MismatchError, RunDirError, UsageError

    if isinstance(exc, UsageError):
        return "usage"
    if isinstance(exc, MismatchError):
        return "mismatch"
    if isinstance(exc, ConfigError | DataError):
        return "bad_input"
    if isinstance(exc, FitError):
        return "fit_failed"
    if isinstance(exc, RunDirError):
        return "output"
    if isinstance(exc, Interrupted):
        return "interrupted"
    return "internal"


def internal_outcome(label: str, exc: BaseException, *, seconds: float = 0.0, warnings: list[str] | None = None,
                     traceback: str | None = None) -> RunOutcome:
    """The outcome of a config whose fit hit a bug in ude (not the user's mistake)."""
    text = f"internal error: {type(exc).__name__}: {exc} (this is a bug in ude; rerun with --debug and report it)"
    error = {"kind": "internal", "message": text, "lines": [f"{label}: {text}"]}
    if traceback is not None:
        error["traceback"] = traceback
    return RunOutcome(config=label, status="failed", seconds=round(seconds, 3), warnings=list(warnings or []),
                      error=error)


def fit_one(config, *, out: str | Path | None = None, overwrite: bool = False,
            resume: str | Path | None = None, stop_below: float | None = None, plots: bool | None = None,
            time_limit: float | None = None, should_stop=None, make_monitor=None,
            command: list[str] | None = None, debug: bool = False,
            n_starts: int | None = None, profile: bool = False) -> tuple[RunOutcome, Any]:
    """Fit one config (a path or a :class:`~ude_cli.config.Config`), or resume one run, into its run
    directory; return ``(outcome, result or None)``.

    ``make_monitor(config) -> monitor`` builds the progress display once the config is read. ``profile``
    asks for profile likelihoods of every learned value (``uncertainty.profile: true``; ``ude fit --profile``).
    Errors of the user's making become a failed outcome; with ``debug`` they are raised instead.
    """
    import contextlib

    from ..api import default_out, run_fit
    from ..config import Config
    from ..errors import UdeError
    from ..problem import resolve

    label = str(resume if resume is not None else (config.run_name if isinstance(config, Config) else config))
    t0 = time.perf_counter()
    warnings: list[str] = []
    stack = contextlib.ExitStack()  # a PEtab problem's translation lives in a temporary folder during the fit
    notes: list[str] = []
    try:
        cfg = problem = imported = None
        if resume is None:
            if isinstance(config, Config):
                cfg = config
            else:
                from ..sources import load_any

                cfg, imported = load_any(config, stack, notes)
            if profile and cfg.uncertainty.profile is False:
                cfg = cfg.model_copy(update={"uncertainty": cfg.uncertainty.model_copy(update={"profile": True})})
            problem = resolve(cfg)  # once: the fit below uses it as it is
            warnings = [*problem.warnings, *(f"{config}: {n}" for n in notes)]  # a PEtab translation's notes
        monitor = make_monitor(cfg) if make_monitor is not None else None
        target = None if cfg is None else (out if out is not None else default_out(cfg))  # cfg: no resume
        with monitor if monitor is not None else _Null():
            result, path = run_fit(problem, out=target, overwrite=overwrite, monitor=monitor, stop_below=stop_below,
                                   plots=plots, command=command, time_limit=time_limit, should_stop=should_stop,
                                   resume=resume, n_starts=n_starts)
        if imported is not None:  # the translated problem beside the run: `ude fit RUN/petab/config.yaml`
            import shutil

            shutil.copytree(imported, Path(path) / "petab", dirs_exist_ok=True)
    except UdeError as exc:
        if debug:
            raise
        kind = error_kind(exc)
        status = "interrupted" if kind == "interrupted" else "failed"
        return RunOutcome(config=label, status=status, run_dir=exc.where if kind == "interrupted" else None,
                          seconds=round(time.perf_counter() - t0, 3), warnings=warnings,
                          error={"kind": kind, "message": str(exc), "lines": exc.lines()}), None
    except Exception as exc:  # a bug in ude: this config fails, the batch goes on (as on Dask)
        if debug:
            raise
        return internal_outcome(label, exc, seconds=time.perf_counter() - t0, warnings=warnings), None
    finally:
        stack.close()
    outcome = RunOutcome(config=label, status="ok", run_dir=str(path), seconds=round(time.perf_counter() - t0, 3),
                         parameters={k: float(v) for k, v in result.values.items()}, metrics=result.metrics,
                         warnings=warnings)
    if result.problem.config.discover is not None:
        _discover_after_fit(outcome, result, path, plots=plots is not False, debug=debug)
    outcome.seconds = round(time.perf_counter() - t0, 3)
    return outcome, result


def _discover_after_fit(outcome: RunOutcome, result, path, *, plots: bool, debug: bool) -> None:
    """The config's ``discover:`` section: recover the learned terms right after the fit.

    A recovered model that diverges or fits clearly worse turns the outcome into a failure
    (kind ``fit_failed``): it must never pass for a success.
    """
    from ..discovery.files import discover_run
    from ..errors import UdeError

    try:
        discovery, directory = discover_run(path, plots=plots)
    except UdeError as exc:
        if debug:
            raise
        outcome.status = "failed"
        outcome.error = {"kind": error_kind(exc), "message": f"discovery: {exc}", "lines": [f"discovery: {line}"
                                                                                           for line in exc.lines()]}
        return
    result.discovery = discovery
    outcome.discovery = {"verdict": discovery.verdict, "success": discovery.success,
                         "message": discovery.messages[0], "directory": str(directory)}
    if not discovery.success:
        outcome.status = "failed"
        message = f"{path}: discovery: {discovery.verdict.upper()}: {discovery.messages[0]}"
        outcome.error = {"kind": "fit_failed", "message": message, "lines": [message]}


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
