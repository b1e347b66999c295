"""The errors `ude` raises for problems a user can fix.

Every error carries *where* the problem is (a file, a config field, a CSV row) and *what* was
expected, so that the command line can print it as one line with no traceback. Exit codes are not
decided here: only :mod:`ude_cli.cli` maps error classes to exit codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fitting.model import UDEModel
    from .fitting.train import TrainState
    from .problem import Problem


class UdeError(Exception):
    """Base class of every error caused by the user's input or by a failed fit.

    Arguments:
        message: what is wrong and what was expected, in one sentence.
        where: the place: ``"configs/lv.yaml: training.stages[0].lr"``, ``"data/x.csv: row 7"``.
        hint: what to try, appended after ``"; "``.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return one_line(f"{text}; {self.hint}" if self.hint else text)

    def lines(self) -> list[str]:
        """The error as printable lines (one, except for :class:`ProblemList`)."""
        return [str(self)]


class ConfigError(UdeError):
    """The YAML config is malformed, incomplete or inconsistent."""

    #: Set on the schema's errors: pydantic's locations of the values that failed (see config.load_config).
    schema_locations: list[tuple] | None = None


class ExpressionError(ConfigError):
    """An equation string uses something outside the whitelist, or an unknown name."""


class DataError(UdeError):
    """A data file cannot be read, or its contents do not fit the config."""


class ProblemList(ConfigError):
    """Several problems found in one pass; each is one line with its place."""

    def __init__(self, problems: Iterable[UdeError]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problems found")

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        out: list[str] = []
        for p in self.problems:
            out.extend(p.lines())
        return out

    @property
    def is_data_problem(self) -> bool:
        return all(isinstance(p, DataError) for p in self.problems)


class FitError(UdeError):
    """The fit failed numerically (NaN loss, solver step-size underflow, blow-up)."""


class Interrupted(UdeError):
    """Training was asked to stop (Ctrl-C, SIGTERM) and stopped between iterations.

    ``problem``, ``model`` and ``state`` are attached by :func:`ude_cli.api.fit`, so that a
    checkpoint can be written.
    """

    problem: Problem | None = None
    model: UDEModel | None = None
    state: TrainState | None = None


class RunDirError(UdeError):
    """The output run directory exists, is not writable, or is not a run directory."""


class UsageError(UdeError):
    """A command-line option's value cannot be used (an unreachable ``--scheduler``): exit code 2."""


class MismatchError(UdeError):
    """A run differs from the expected results beyond the tolerances (``ude compare``)."""


class Problems:
    """Collects problems so that a whole config can be checked in one pass.

    Use :meth:`add` for each problem found and :meth:`raise_if_any` at the end.
    """

    def __init__(self) -> None:
        self.items: list[UdeError] = []

    def add(self, error: UdeError) -> None:
        if isinstance(error, ProblemList):
            self.items.extend(error.problems)
        else:
            self.items.append(error)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if len(self.items) == 1:
            raise self.items[0]
        if self.items:
            raise ProblemList(self.items)


def one_line(text: str) -> str:
    """``text`` with line breaks, tabs and other invisible characters written as escapes (``\\r``), so that
    a key or cell copied from a user's file can never split an error over several lines."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (difflib ratio >= 0.6), or None."""
    import difflib

    best, best_score = None, 0.6
    word = str(word).lower()  # 'LBFGS' is as near to 'lbfgs' as 'Tanh' to 'tanh'
    for cand in (str(c) for c in candidates):  # the first of equally close candidates wins
        score = difflib.SequenceMatcher(None, word, cand.lower()).ratio()
        if score > best_score or (best is None and score >= best_score):
            best, best_score = cand, score
    return best


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest candidate, or ``""`` when none is close."""
    best = nearest(word, candidates)
    return f" (did you mean '{best}'?)" if best is not None else ""


def one_of(candidates: Iterable[str]) -> str:
    """``"one of a, b, c"`` for messages."""
    return "one of " + ", ".join(sorted(str(c) for c in candidates))
