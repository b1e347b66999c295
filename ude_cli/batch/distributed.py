"""Many fits on Dask (``distributed``): a LocalCluster on this machine, or an existing cluster.

Each task is one :func:`ude_cli.batch.outcomes.fit_one` call; a worker process imports torch once and runs
many fits, so a batch amortises start-up and uses every core. Results land in the run directories
exactly as from a local run (on a real cluster the run directories must be on a file system the
workers share). A failing task is reported as a failed outcome and does not stop the others.

On Slurm or PBS, start a cluster with ``dask-jobqueue`` (e.g. ``SLURMCluster(cores=1, memory="4GB")``,
``cluster.scale(jobs=20)``) and pass its scheduler address to ``ude fit --scheduler``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import Interrupted
from .outcomes import RunOutcome

#: Seconds to wait for an existing Dask scheduler to answer.
CONNECT_SECONDS = 10


def run_task(task: dict) -> RunOutcome:
    """Run one fit (in a worker); never raises: a crash becomes an ``internal`` outcome.

    ``task["own_worker"]``: the worker belongs to a LocalCluster of ours, which compiles nothing, so it
    is spared torch._dynamo (see :mod:`ude_cli.fitting.lean_torch`); a shared cluster's workers are left alone.
    """
    from .outcomes import fit_one

    task = dict(task)
    if task.pop("own_worker", False):
        from ..fitting.lean_torch import skip_compile_machinery

        skip_compile_machinery()
    try:
        outcome, _ = fit_one(**task)
        return outcome
    except BaseException as exc:  # noqa: BLE001  (a worker must always report back)
        from .outcomes import internal_outcome

        return internal_outcome(str(task.get("config") or task.get("resume")), exc, traceback=traceback.format_exc())


@contextmanager
def client(jobs: int | None = None, scheduler: str | None = None):
    """A Dask client: connected to ``scheduler``, or to a new LocalCluster of ``jobs`` processes."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        from ..errors import UsageError

        try:
            c = Client(scheduler, timeout=f"{CONNECT_SECONDS}s")
        except (OSError, TimeoutError, ValueError) as exc:
            timed_out = "Timed out" in str(exc) or isinstance(exc, TimeoutError)
            reason = f"no answer within {CONNECT_SECONDS} s" if timed_out else str(exc)
            raise UsageError(f"cannot connect to the Dask scheduler {scheduler} ({reason})", where="--scheduler",
                             hint="check the address and that the scheduler runs (dask scheduler), or use --jobs N "
                                  "for a local cluster") from None
        try:
            yield c
        finally:
            c.close()
        return
    cluster = LocalCluster(n_workers=jobs or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def run_many(tasks: list[dict], *, jobs: int | None = None, scheduler: str | None = None,
             on_result: Callable[[int, RunOutcome], None] | None = None,
             on_start: Callable[[], None] | None = None) -> list[RunOutcome]:
    """Run tasks on Dask; call ``on_start()`` once connected and ``on_result(index, outcome)`` as each
    finishes; outcomes in task order."""
    from dask.distributed import as_completed

    outcomes: list[RunOutcome | None] = [None] * len(tasks)
    with client(jobs, scheduler) as c:
        if on_start is not None:
            on_start()
        own = scheduler is None
        futures = [c.submit(run_task, {**_portable(t), "own_worker": own}, pure=False, key=f"ude-fit-{i}")
                   for i, t in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in _as_they_finish(as_completed(futures)):
                i = index[future.key]
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker died
                    label = str(tasks[i].get("config") or tasks[i].get("resume"))
                    outcome = RunOutcome(config=label, status="failed", error={
                        "kind": "internal", "message": f"worker failed: {exc}", "lines": [f"{label}: worker failed: {exc}"]})
                if isinstance(tasks[i].get("config"), str | Path):
                    outcome.config = str(tasks[i]["config"])  # as the user gave it, not the worker's absolute path
                outcomes[i] = outcome
                if on_result is not None:
                    on_result(i, outcome)
        except KeyboardInterrupt:
            c.cancel(futures)
            done = sum(o is not None for o in outcomes)
            raise Interrupted(f"interrupted: {done} of {len(tasks)} fits had finished; the others were cancelled "
                              f"(fits on Dask keep no checkpoint: run those again)") from None
    return [o for o in outcomes if o is not None]


def _as_they_finish(completed, poll: float = 0.2):
    """The futures of a dask ``as_completed`` as they finish, waiting in short sleeps: a blocking wait
    would hold Ctrl-C and SIGTERM until the next fit finishes, which can be hours."""
    while not completed.is_empty():
        batch = completed.next_batch(block=False)
        if not batch:
            time.sleep(poll)
        yield from batch


def _portable(task: dict) -> dict:
    """Absolute paths, so that a worker with another working directory finds the files."""
    out: dict[str, Any] = dict(task)
    for key in ("config", "out", "resume"):
        value = out.get(key)
        if isinstance(value, str | Path):
            out[key] = str(Path(value).resolve())
    return out


def labels(tasks: Iterable[dict]) -> list[str]:
    return [str(t.get("config") or t.get("resume")) for t in tasks]
