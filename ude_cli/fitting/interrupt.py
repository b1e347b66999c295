"""Stop a fit between iterations on Ctrl-C or SIGTERM, so that a checkpoint can be saved.

The first signal only sets a flag that training reads between iterations (never half-way through
an update); a second Ctrl-C or SIGTERM stops at once (no checkpoint). A wall-time limit works the
same way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator


class StopFlag:
    """Why training should stop (None while it should go on)."""

    def __init__(self, time_limit: float | None = None):
        self.reason: str | None = None
        self.deadline = time.monotonic() + time_limit if time_limit else None
        self.time_limit = time_limit

    def __call__(self) -> str | None:
        if self.reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            return f"time limit of {self.time_limit:g} s reached"
        return self.reason

    @property
    def interrupted(self) -> bool:
        return self.reason is not None


@contextlib.contextmanager
def graceful_stop(time_limit: float | None = None,
                  notify: Callable[[str], None] | None = None) -> Iterator[Callable[[], str | None]]:
    """Within the block, SIGINT and SIGTERM set a stop flag instead of killing the process.

    Yields the flag: call it to learn whether (and why) to stop. ``notify(text)`` hears at once what
    a signal does (an iteration can take long, and the user should not wonder). Outside the main
    thread (where signal handlers cannot be installed) only the time limit applies.
    """
    flag = StopFlag(time_limit)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if flag.reason is not None:  # asked twice: stop now, without a checkpoint
            if notify is not None:
                notify(f"{name} again: stopping at once, without a checkpoint")
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        flag.reason = f"interrupted by {name}"
        if notify is not None:
            notify(f"{name}: stopping after the current iteration to save a checkpoint "
                   f"({'Ctrl-C' if signum == signal.SIGINT else name} again stops at once, without one)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
