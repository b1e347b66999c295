"""Progress of a fit: a rich progress bar on a terminal, one line per stage in logs, or nothing.

Bars appear only when stderr is a terminal and the ``CI`` environment variable is not set; in
scripts and CI a line per stage goes to stderr (or nothing with ``--quiet``). Standard output is
left to results (tables, JSON).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID


def interactive(stream: TextIO | None = None) -> bool:
    """True when progress bars make sense: a terminal, and not CI."""
    stream = stream or sys.stderr
    if os.environ.get("CI"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class SilentMonitor:
    """Shows nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def stage_started(self, index, n_stages, stage, done):
        pass

    def advanced(self, index, done, loss):
        pass

    def stage_finished(self, index):
        pass

    def message(self, text):
        pass


class LogMonitor(SilentMonitor):
    """One line per stage (and each warning) to a stream: for logs of scripts and CI jobs."""

    def __init__(self, name: str, stream: TextIO | None = None):
        self.name, self.n_stages = name, 0
        self.stream = stream or sys.stderr
        self._t = time.perf_counter()
        self._last: tuple[int, float] | None = None
        self._stage = None

    def stage_started(self, index, n_stages, stage, done):
        self._stage = stage
        self.n_stages = n_stages
        self._t = time.perf_counter()
        self._last = None

    def advanced(self, index, done, loss):
        self._last = (done, loss)

    def stage_finished(self, index):
        if self._last is None:
            return
        done, loss = self._last
        self._print(f"{self.name}: stage {index + 1}/{self.n_stages} ({_describe(self._stage)}) "
                    f"{done} iterations, loss {loss:.4g}, {time.perf_counter() - self._t:.1f} s")

    def message(self, text):
        self._print(f"{self.name}: {text}")

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class RichMonitor(SilentMonitor):
    """A rich progress bar per stage: stage, iteration, loss, elapsed and remaining time."""

    def __init__(self, name: str, stream: TextIO | None = None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.name = name
        self.console = Console(file=stream or sys.stderr)
        # fits an 80-column terminal: the run's name goes in a header line, not in every bar
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("left"), TimeRemainingColumn(),
            console=self.console, transient=False)
        self._tasks: dict[int, TaskID] = {}

    def __enter__(self):
        self.console.print(f"[bold]{self.name}[/bold]: fitting", highlight=False)
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def stage_started(self, index, n_stages, stage, done):
        desc = f"stage {index + 1}/{n_stages} {_describe(stage)}"
        self._tasks[index] = self.progress.add_task(desc, total=stage.iterations, completed=done, loss="-")

    def advanced(self, index, done, loss):
        self.progress.update(self._tasks[index], completed=done, loss=f"{loss:.4g}")

    def stage_finished(self, index):
        task = self._tasks.get(index)
        if task is not None:
            t = self.progress.tasks[[x.id for x in self.progress.tasks].index(task)]
            self.progress.update(task, total=t.completed or 1)

    def message(self, text):
        from rich.markup import escape

        # escaped: a message names things like U[1] and inputs: [t], which rich would read as markup
        self.console.print(f"[yellow]{escape(f'{self.name}: {text}')}", highlight=False)


def _describe(stage) -> str:
    return stage.optimizer + (" (collocation)" if stage.objective == "collocation" else "")


def make_monitor(name: str, *, quiet: bool = False, stream: TextIO | None = None):
    """The monitor that suits where we run: bars on a terminal, log lines otherwise, nothing if quiet."""
    if quiet:
        return SilentMonitor()
    if interactive(stream):
        return RichMonitor(name, stream)
    return LogMonitor(name, stream)
