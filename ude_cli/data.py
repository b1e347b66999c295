"""CSV files -> checked experiments (time grids, observed values with gaps, validation windows).

pandas reads the files. An empty cell means "not observed": it is kept as NaN and masked out of
the loss, never read as zero. Each experiment (a value of the experiment column, or a file) has
its own time grid and initial state. Every problem is reported with the file, the line (as an
editor or spreadsheet numbers it, the header being line 1) and the column.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, Problems, did_you_mean, nearest

#: Largest CSV file read (bytes).
MAX_DATA_BYTES = 200_000_000
#: Cell texts read as "not observed".
MISSING_TOKENS = {"", "na", "nan", "n/a", "null", "none", "-", "?"}
#: Fewest time points an experiment needs to be fitted.
MIN_POINTS = 2


@dataclass
class Experiment:
    """One time series: its own time grid and initial state, sharing the parameters."""

    name: str
    file: str  # as reported in messages
    t: np.ndarray  # (n,) strictly increasing
    values: np.ndarray  # (n, n_states), NaN where not observed (or the state has no column)
    lines: np.ndarray  # (n,) line of each row in its file
    train: np.ndarray  # (n,) True for rows used in training, False for the validation window
    covariates: dict[str, float] = field(default_factory=dict)  # column -> value (constant per experiment)
    #: (n, n_observables): every observable's column (the directly observed states among them), NaN where none
    observations: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: column -> (times, values) of its rows with a value (model.events' dosing records)
    records: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.t)

    @property
    def observed(self) -> np.ndarray:
        """(n,) bool: the rows that observe something (not a dosing record's row alone, model.events)."""
        if self.observations.size:
            return np.isfinite(self.observations).any(axis=1)
        return np.isfinite(self.values).any(axis=1) if self.values.size else np.ones(self.n, dtype=bool)


@dataclass
class Dataset:
    """All experiments of a config, with the state -> column mapping."""

    experiments: list[Experiment]
    states: list[str]
    columns: dict[str, str]  # state -> column (observed states only)
    time_column: str
    files: list[Path]  # resolved paths, in the order given
    labels: list[str]  # the same paths as reported in messages
    units: dict[str, str] = field(default_factory=dict)
    #: observable -> CSV column, in the order of ``Experiment.observations``' columns
    observable_columns: dict[str, str] = field(default_factory=dict)

    @property
    def observed(self) -> list[str]:
        """The states observed directly (each is also an observable of the same name)."""
        return [s for s in self.states if s in self.columns]

    @property
    def observables(self) -> list[str]:
        return list(self.observable_columns)

    def observable_stats(self, train_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per-observable mean and spread (std, or |mean|, or 1) of its observations."""
        stacked = np.concatenate(
            [e.observations[e.train] if train_only else e.observations for e in self.experiments], axis=0)
        return _mean_spread(stacked)

    def state_stats(self, train_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per-state mean and spread (std, or |mean|, or 1) of the observations; 0/1 for unobserved."""
        stacked = np.concatenate(
            [e.values[e.train] if train_only else e.values for e in self.experiments], axis=0)
        return _mean_spread(stacked)

    @property
    def time_span(self) -> float:
        spans = [float(e.t[-1] - e.t[0]) for e in self.experiments if e.n > 1]
        return max(spans) if spans else 1.0


def _mean_spread(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: mean and spread (std, or |mean|, or 1) of the finite values; 0/1 for an empty column."""
    mean = np.zeros(stacked.shape[1])
    std = np.ones(stacked.shape[1])
    for j in range(stacked.shape[1]):
        col = stacked[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            mean[j] = col.mean()
            s = col.std()
            std[j] = s if s > 0 else (abs(mean[j]) if mean[j] != 0 else 1.0)
    return mean, std


def report_path(base_dir: Path, given: str) -> str:
    """How a data path is named in messages: the config's directory joined with the path as given,
    relative to the current directory when it lies below it."""
    if os.path.isabs(given):
        return given
    full = os.path.normpath(os.path.join(str(base_dir), given))
    if os.path.isabs(full):
        rel = os.path.relpath(full)
        return full if rel.startswith("..") else rel
    return full


def read_dataset(
    paths: Sequence[str],
    *,
    base_dir: Path,
    states: Sequence[str],
    columns: dict[str, str],
    time: str,
    experiment: str | None = None,
    covariates: Sequence[str] = (),
    delimiter: str = ",",
    decimal: str = ".",
    units: dict[str, str] | None = None,
    where: str = "data",
    observables: dict[str, str] | None = None,
    t0: float | None = None,
    records: Sequence[str] = (),
) -> Dataset:
    """Read and check every file; raise :class:`DataError` (or several at once) naming file, line, column.

    ``t0``: the model's start time (``model.t0``) when it is given: an experiment then needs only one time after
    it or at it (the solution from t0 reaches it, or is the initial value there), else :data:`MIN_POINTS`.
    ``records``: columns whose rows with a value are kept per experiment (:attr:`Experiment.records`)."""
    problems = Problems()
    observables = dict(observables) if observables is not None else {s: columns[s] for s in states if s in columns}
    experiments: list[Experiment] = []
    resolved: list[Path] = []
    labels: list[str] = []
    for given in paths:
        path = (base_dir / given) if not os.path.isabs(given) else Path(given)
        label = report_path(base_dir, given)
        resolved.append(path)
        labels.append(label)
        field_name = f"{where}.file" if len(paths) == 1 else f"{where}.files[{len(labels) - 1}]"
        try:
            frame = _read_table(path, label, delimiter, field_name=field_name, given=given, base_dir=base_dir)
            experiments.extend(
                _experiments(frame, label, states=states, columns=columns, time=time, experiment=experiment,
                             covariates=covariates, stem=Path(given).stem if len(paths) > 1 else None,
                             observables=observables, decimal=decimal, comma_option=delimiter != ",", t0=t0,
                             records=records))
        except DataError as exc:
            problems.add(exc)
    names = [e.name for e in experiments]
    for name in {n for n in names if names.count(n) > 1}:
        problems.add(DataError(f"experiment name '{name}' appears in more than one file", where=where))
    if experiments and not problems:
        _check_columns_hold_data(experiments, states, columns, observables, labels, problems)
    problems.raise_if_any()
    return Dataset(experiments=experiments, states=list(states), columns=dict(columns), time_column=time,
                   files=resolved, labels=labels, units=dict(units or {}), observable_columns=observables)


def split_validation(dataset: Dataset, *, last_fraction: float | None = None, after: float | None = None,
                     where: str = "data.validation") -> None:
    """Mark the validation window of each experiment (in place)."""
    problems = Problems()
    for e in dataset.experiments:
        train = np.ones(e.n, dtype=bool)
        rows = np.flatnonzero(e.observed)  # the last fraction of the observed rows (not of dosing rows alone)
        if last_fraction is not None:
            n_val = max(1, int(math.ceil(last_fraction * len(rows))))
            train[rows[-n_val] if n_val <= len(rows) else 0:] = False
        elif after is not None:
            train = e.t <= after
        kept = int((train & e.observed).sum())
        if kept < MIN_POINTS:
            problems.add(DataError(
                f"experiment '{e.name}' keeps {kept} time point(s) for training after the "
                f"validation window; at least {MIN_POINTS} are needed", where=where))
        e.train = train
    problems.raise_if_any()


# -- reading one file ------------------------------------------------------------------------------

def _read_table(path: Path, label: str, delimiter: str, *, field_name: str | None = None, given: str | None = None,
                base_dir: Path | None = None):
    import pandas as pd

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _not_found(path, label, field_name, given, base_dir) from None
    except OSError as exc:
        raise DataError(f"cannot read the data file: {exc.strerror}", where=label) from None
    if path.is_dir():
        raise DataError("is a directory, expected a CSV file", where=label)
    if not path.is_file():  # a pipe would block for ever, a device never end
        raise DataError("is not a regular file (a pipe or a device); expected a CSV file", where=label)
    if size > MAX_DATA_BYTES:
        raise DataError(f"file is {size} bytes; at most {MAX_DATA_BYTES} are read", where=label)
    try:
        with path.open("rb") as fh:  # at most the limit, even from a device that reports size 0
            raw = fh.read(MAX_DATA_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read the data file: {exc.strerror}", where=label) from None
    if len(raw) > MAX_DATA_BYTES:
        raise DataError(f"file is more than {MAX_DATA_BYTES} bytes; at most {MAX_DATA_BYTES} are read", where=label)
    if b"\x00" in raw[:8192]:
        raise DataError("not a text file (it contains NUL bytes); expected a CSV file", where=label)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8", where=label) \
            from None
    if not text.strip():
        raise DataError("the file is empty; expected a header row and data rows", where=label)

    rows, lines = _split_rows(text, delimiter, label)
    # blank lines before the header and at the end are ignored
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
        lines.pop()
    while rows and not any(cell.strip() for cell in rows[0]):
        rows.pop(0)
        lines.pop(0)
    if not rows:
        raise DataError("the file has only empty cells; expected a header row and data rows", where=label)
    header, header_line = rows[0], lines[0]
    if len(header) == 1:
        guess = _guess_delimiter(text, delimiter)
        if guess is not None:
            shown = {"\t": "tab", " ": "space"}.get(guess, f"'{guess}'")
            commas = guess != "," and any(_is_decimal_comma(cell.strip()) for row in
                                          _split_rows(text, guess, label)[0][1:6] for cell in row)
            raise DataError(
                f"line {header_line}: only one column found with delimiter '{delimiter}', but the file looks "
                f"{shown}-separated" + ("" if not commas else " with decimal commas")
                + f"; set data.delimiter to {shown}" + ("" if not commas else " and data.decimal to ','"),
                where=label)
    names = [h.strip() for h in header]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"line {header_line}: column '{dup[0]}' appears more than once in the header", where=label)
    if any(not n for n in names):
        raise DataError(f"line {header_line}: column {names.index('') + 1} of the header has no name", where=label)
    if len(rows) < 2:
        raise DataError("the file has a header but no data rows", where=label)
    for line, row in zip(lines[1:], rows[1:], strict=True):
        if len(row) != len(header) and any(cell.strip() for cell in row):
            raise DataError(
                f"line {line}: {len(row)} fields, but the header has {len(header)}; every row needs one "
                f"field per column (leave a cell empty for a missing value)", where=label)
    body = rows[1:]
    lines = lines[1:]
    keep = [k for k, r in enumerate(body) if any(cell.strip() for cell in r)]
    frame = pd.DataFrame([body[k] for k in keep], columns=names, dtype=object)
    frame.index = [lines[k] for k in keep]
    if frame.empty:
        raise DataError("the file has a header but no data rows", where=label)
    return frame


def _not_found(path: Path, label: str, field_name: str | None, given: str | None, base_dir: Path | None) -> DataError:
    """"data file not found", naming the config field and a file of a near name in the same folder."""
    where = field_name or label
    message = f"data file '{label}' not found" if field_name else "data file not found"
    folder = path.parent
    if not folder.is_dir():
        return DataError(f"{message}: the folder '{os.path.dirname(label) or '.'}' does not exist", where=where,
                         hint="paths are relative to the config file's folder")
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError:
        names = []
    near = nearest(path.name, names)
    if near is not None:
        return DataError(f"{message} (did you mean '{os.path.join(os.path.dirname(label), near)}'?)", where=where)
    if given is not None and base_dir is not None and not os.path.isabs(given) and Path(given).is_file() \
            and Path(given).resolve() != path.resolve():
        return DataError(message, where=where, hint=f"'{given}' exists relative to the current folder, but paths are "
                                                    f"relative to the config file's folder")
    return DataError(message, where=where)


def _split_rows(text: str, delimiter: str, label: str) -> tuple[list[list[str]], list[int]]:
    """The CSV's rows and the line each starts on (a quoted cell may span lines; ``\\r``, ``\\n`` and
    ``\\r\\n`` all end a line)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for row in reader:
            rows.append(row)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"line {start}: not valid CSV ({exc}); check the quotes in this row",
                        where=label) from None
    return rows, lines


def _guess_delimiter(text: str, current: str) -> str | None:
    sample = [line for line in text.splitlines() if line.strip()][:20]
    if not sample:
        return None
    for cand in (";", "\t", "|", ","):
        if cand != current and cand in sample[0]:
            counts = {line.count(cand) for line in sample}
            if len(counts) == 1 and counts != {0}:
                return cand
    if current != " " and " " in sample[0].strip():
        parts = {len(line.split()) for line in sample}
        if len(parts) == 1 and parts != {1}:
            return " "
    return None


#: Most cell problems reported per column (then a count of the rest).
MAX_CELL_PROBLEMS = 5


def _numeric(frame, column: str, label: str, problems: Problems, *, allow_missing: bool,
             decimal: str = ".", comma_option: bool = True) -> np.ndarray:
    """Parse one column as floats: missing tokens -> NaN; anything else non-numeric is a problem,
    added to ``problems`` (the first few of each column, then how many more). Cells written with a
    decimal comma make one problem per column, naming ``data.decimal``."""
    out = np.full(len(frame), np.nan)
    found = []
    commas: list[tuple[int, str]] = []  # (line, text) of cells with a decimal comma
    for k, (line, cell) in enumerate(zip(frame.index, frame[column], strict=True)):
        text = str(cell).strip()
        if text.lower() in MISSING_TOKENS:
            if not allow_missing:
                found.append(f"line {line}, column '{column}': empty, but every row needs a value here")
            continue
        if decimal == ",":
            if "." in text:  # '1.5' or '1.000,5' in a file read with decimal commas: ambiguous, not guessed
                found.append(f"line {line}, column '{column}': expected a number with a decimal comma "
                             f"(data.decimal is ','), got {text!r}")
                continue
            text = text.replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            if decimal != "," and _is_decimal_comma(text):
                commas.append((line, text))
            else:
                found.append(f"line {line}, column '{column}': expected a number, got {str(cell).strip()!r}")
            continue
        if not math.isfinite(value):
            if math.isnan(value):
                continue
            found.append(f"line {line}, column '{column}': infinite value {text!r}"
                         + ("; leave the cell empty if it was not observed" if allow_missing else ""))
            continue
        out[k] = value
    for text in found[:MAX_CELL_PROBLEMS]:
        problems.add(DataError(text, where=label))
    if len(found) > MAX_CELL_PROBLEMS:
        problems.add(DataError(f"column '{column}': {len(found) - MAX_CELL_PROBLEMS} more cell(s) like these",
                               where=label))
    if commas:
        (line, text), n = commas[0], len(commas)
        fix = "set data.decimal: ',' to read them (or use '.' as the decimal point)" if comma_option and n > 1 \
            else "set data.decimal: ',' (or use '.' as the decimal point)" if comma_option \
            else "use '.' as the decimal point"
        problems.add(DataError(
            (f"line {line}, column '{column}': expected a number, got {text!r}" if n == 1 else
             f"column '{column}': {n} cells written with a decimal comma (the first on line {line}: {text!r})")
            + f"; {fix}", where=label))
    return out


def _is_decimal_comma(text: str) -> bool:
    try:
        float(text.replace(",", "."))
        return "," in text
    except ValueError:
        return False


def _check_columns_hold_data(experiments: list[Experiment], states: Sequence[str], columns: Mapping[str, str],
                             observables: Mapping[str, str], labels: list[str], problems: Problems) -> None:
    """Every column a state or an observable is mapped to has a value in some row (an empty one would leave the
    state unobserved without a word, or make a noise model's loss not finite), and no column is mapped to two
    states (they would be fitted to the same numbers)."""
    where = labels[0] if len(labels) == 1 else ", ".join(labels)
    by_column: dict[str, list[str]] = {}
    for s, c in columns.items():
        by_column.setdefault(c, []).append(s)
    for c, mapped in by_column.items():
        if len(mapped) > 1:
            problems.add(DataError(f"column '{c}' is mapped to the states {' and '.join(mapped)} (data.columns): "
                                   f"each column observes one state; for a measurement of several, give an "
                                   f"observable with a formula (observables: {{{c}: {{formula: "
                                   f"{' + '.join(mapped)}}}}})", where=where))
    for j, s in enumerate(states):
        if s in columns and not any(np.isfinite(e.values[:, j]).any() for e in experiments):
            problems.add(DataError(f"column '{columns[s]}' (named by data.columns.{s}) has no value in any row: "
                                   f"map only columns with data (a state without data needs no column)", where=where))
    for k, (o, c) in enumerate(observables.items()):
        if o not in columns and not any(np.isfinite(e.observations[:, k]).any() for e in experiments):
            problems.add(DataError(f"column '{c}' (named by observables.{o}) has no value in any row", where=where))


def _experiments(frame, label: str, *, states, columns, time, experiment, covariates, stem,
                 observables, decimal: str = ".", comma_option: bool = True,
                 t0: float | None = None, records: Sequence[str] = ()) -> list[Experiment]:
    problems = Problems()
    available = list(frame.columns)
    wanted = [("data.time", time)] + [(f"data.columns.{s}", c) for s, c in columns.items()]
    wanted += [(f"observables.{o}", c) for o, c in observables.items() if o not in columns]
    if experiment is not None:
        wanted.append(("data.experiment", experiment))
    wanted += [("covariate", c) for c in covariates]
    wanted += [("model.events", c) for c in records]
    for field_name, col in wanted:
        if col not in available:
            what = "" if field_name == "covariate" else f" (named by {field_name})"
            problems.add(DataError(f"no column '{col}'{what}{did_you_mean(col, available)}; "
                                   f"the header has: {', '.join(available)}", where=label))
    problems.raise_if_any()

    t_all = _numeric(frame, time, label, problems, allow_missing=False, decimal=decimal, comma_option=comma_option)
    values_all = np.full((len(frame), len(states)), np.nan)
    parsed: dict[str, np.ndarray] = {}
    for j, s in enumerate(states):
        if s in columns:
            if columns[s] not in parsed:
                parsed[columns[s]] = _numeric(frame, columns[s], label, problems, allow_missing=True, decimal=decimal, comma_option=comma_option)
            values_all[:, j] = parsed[columns[s]]
    obs_all = np.full((len(frame), len(observables)), np.nan)
    for k, col in enumerate(observables.values()):
        if col not in parsed:
            parsed[col] = _numeric(frame, col, label, problems, allow_missing=True, decimal=decimal, comma_option=comma_option)
        obs_all[:, k] = parsed[col]
    cov_all = {c: _numeric(frame, c, label, problems, allow_missing=False, decimal=decimal, comma_option=comma_option) for c in covariates}
    rec_all = {c: _numeric(frame, c, label, problems, allow_missing=True, decimal=decimal, comma_option=comma_option)
               for c in records}
    problems.raise_if_any()
    lines_all = np.asarray(frame.index, dtype=int)

    if experiment is None:
        groups = [(stem or "1", np.arange(len(frame)))]
    else:
        keys = [str(v).strip() for v in frame[experiment]]
        for line, key in zip(lines_all, keys, strict=True):
            if not key:
                raise DataError(f"line {line}, column '{experiment}': empty experiment name", where=label)
        order = list(dict.fromkeys(keys))
        groups = [((f"{stem}:{k}" if stem else k), np.array([i for i, kk in enumerate(keys) if kk == k]))
                  for k in order]

    out = []
    for name, idx in groups:
        t = t_all[idx]
        lines = lines_all[idx]
        in_exp = f" in experiment '{name}'" if experiment is not None else ""
        steps = np.diff(t)
        if np.any(steps == 0):
            k = int(np.argmax(steps == 0))
            dose = ("; a dose and an observation at one time go in one row (the observation sees the states after "
                    "the dose; model.events' observed: before for a sample taken just before it)") if records else ""
            problems.add(DataError(f"lines {lines[k]} and {lines[k + 1]}: duplicate time {t[k]:g}{in_exp}; "
                                   f"times must be strictly increasing{dose}", where=label))
            continue
        if np.any(steps < 0):
            k = int(np.argmax(steps < 0))
            problems.add(DataError(f"line {lines[k + 1]}: time decreases from {t[k]:g} to {t[k + 1]:g}{in_exp}; "
                                   f"sort the rows by time", where=label))
            continue
        vals = values_all[idx]
        given = {c: np.isfinite(v[idx]) for c, v in rec_all.items()}
        # a dosing record's row alone (model.events) observes nothing: it is no time point of the data
        seen = np.isfinite(obs_all[idx]).any(axis=1) if rec_all and observables else np.ones(len(t), dtype=bool)
        n_seen = int(seen.sum())
        if n_seen == 0 and len(t):
            problems.add(DataError(f"experiment '{name}' observes nothing: its {len(t)} rows are dosing records "
                                   f"only (model.events' column), without an observed value", where=label))
            continue
        if n_seen < MIN_POINTS and not (n_seen == 1 and t0 is not None and t0 <= t[seen][0]):
            problems.add(DataError(f"experiment '{name}' has {n_seen} time point"
                                   f"{'s' if n_seen != 1 else ''}; at least {MIN_POINTS} are needed to fit (one "
                                   f"when model.t0 is given)", where=label))
            continue
        if observables and not np.isfinite(obs_all[idx]).any():
            problems.add(DataError(f"experiment '{name}' has no observed values in columns "
                                   f"{', '.join(dict.fromkeys(observables.values()))}", where=label))
            continue
        cov = {}
        for c, col_values in cov_all.items():
            v = col_values[idx]
            if np.any(v != v[0]):
                k = int(np.argmax(v != v[0]))
                problems.add(DataError(f"line {lines[k]}, column '{c}': {v[k]:g} differs from {v[0]:g} on line "
                                       f"{lines[0]}; it must be constant within experiment '{name}'",
                                       where=label))
                continue
            cov[c] = float(v[0])
        out.append(Experiment(name=name, file=label, t=t, values=vals, lines=lines,
                              train=np.ones(len(t), dtype=bool), covariates=cov, observations=obs_all[idx],
                              records={c: (t[g], rec_all[c][idx][g]) for c, g in given.items()}))
    problems.raise_if_any()
    return out
