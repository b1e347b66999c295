"""Regression checks: compare a run with expected results within tolerances (``ude compare``).

EXPECTED is another run directory, or a JSON file::

    {"rtol": 1e-3, "atol": 0,                      # defaults for every entry (optional)
     "parameters": {"alpha": 0.54, "beta": {"value": 0.0272, "rtol": 0.01}},
     "metrics": {"loss": {"value": 0.048, "rtol": 0.1}, "train_mse.x": 25.9}}

Parameters are matched by name (params.csv); metrics by dotted path into metrics.json, intervals too
(``uncertainty.intervals.beta.lower``, ``.upper``, ``.se``). A value passes when
``|actual - expected| <= atol + rtol * |expected|``; an interval's open end (null) matches only an open end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problems, RunDirError, did_you_mean, one_of

#: metrics compared when EXPECTED is a run directory
RUN_METRICS = ("loss", "validation_loss", "train_mse", "validation_mse", "likelihood")


@dataclass
class Row:
    """One compared quantity."""

    kind: str  # "parameter" | "metric"
    name: str
    expected: float | None
    actual: float | None
    rtol: float
    atol: float

    @property
    def difference(self) -> float | None:
        if self.expected is None or self.actual is None:
            return None
        return self.actual - self.expected

    @property
    def ok(self) -> bool:
        if self.expected is None and self.actual is None:
            return True
        if self.expected is None or self.actual is None:
            return False
        if math.isnan(self.expected) or math.isnan(self.actual):
            return math.isnan(self.expected) and math.isnan(self.actual)
        return abs(self.actual - self.expected) <= self.atol + self.rtol * abs(self.expected)

    @property
    def status(self) -> str:
        if self.actual is None:
            return "missing"
        return "ok" if self.ok else "MISMATCH"


def _read_run(path: Path) -> tuple[dict[str, float], dict]:
    from .load import read_json

    if not path.is_dir():
        raise RunDirError("no such run directory", where=str(path))
    if not (path / "params.csv").is_file():
        raise RunDirError("no params.csv: not a complete run directory", where=str(path))
    import csv

    with open(path / "params.csv", newline="") as fh:
        params = {row["name"]: float(row["value"]) for row in csv.DictReader(fh)}
    return params, read_json(path / "metrics.json", "metrics.json")


def _flatten(metrics: dict, keys=RUN_METRICS) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    intervals = (metrics.get("uncertainty") or {}).get("intervals") or {}
    for name, i in intervals.items():  # every end and standard error, null where open or not computed
        for end in ("lower", "upper", "se"):
            out[f"uncertainty.intervals.{name}.{end}"] = None if i.get(end) is None else float(i[end])
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, dict):  # numbers only (likelihood: nll, aic, bic, ...; not its texts)
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"{key}.{sub}"] = float(v)
                elif v is None and key != "likelihood":
                    out[f"{key}.{sub}"] = None
        elif value is not None:
            out[key] = float(value)
    return out


def _lookup(metrics: dict, dotted: str) -> float | None:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None else float(value)


#: keys of an expected-results JSON file, and of one entry in it
FILE_KEYS = ("rtol", "atol", "parameters", "metrics")
ENTRY_KEYS = ("value", "rtol", "atol")


def load_expected(path: Path, rtol: float, atol: float) -> list[tuple[str, str, float | None, float, float]]:
    """(kind, name, value, rtol, atol) for every expected quantity.

    A JSON file is checked strictly, every problem reported: a misspelt key or a value that is not a
    finite number would otherwise make a regression check pass while checking nothing.
    """
    path = Path(path)
    if path.is_dir():
        params, metrics = _read_run(path)
        rows: list[tuple[str, str, float | None, float, float]] = [
            ("parameter", n, v, rtol, atol) for n, v in params.items()]
        rows += [("metric", n, v, rtol, atol) for n, v in _flatten(metrics).items()]
        return rows
    where = str(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("expected-results file not found", where=where) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read expected results: {exc}", where=where) from None
    if not isinstance(spec, dict) or not ({"parameters", "metrics"} & set(spec)):
        raise ConfigError("expected a JSON object with 'parameters' and/or 'metrics'", where=where)
    problems = Problems()
    _unknown_keys(spec, FILE_KEYS, where, problems)
    rtol = _tolerance(spec.get("rtol", rtol), "rtol", where, problems)
    atol = _tolerance(spec.get("atol", atol), "atol", where, problems)
    rows = []
    for kind, section in (("parameter", "parameters"), ("metric", "metrics")):
        entries = spec.get(section) or {}
        if not isinstance(entries, dict):
            problems.add(ConfigError("expected a mapping of name to value", where=f"{where}: {section}"))
            continue
        for name, entry in entries.items():
            field = f"{where}: {section}.{name}"
            e_rtol, e_atol = rtol, atol
            if isinstance(entry, dict):
                _unknown_keys(entry, ENTRY_KEYS, field, problems)
                if "value" not in entry:
                    problems.add(ConfigError("needs a 'value'", where=field))
                    continue
                e_rtol = _tolerance(entry.get("rtol", rtol), "rtol", field, problems)
                e_atol = _tolerance(entry.get("atol", atol), "atol", field, problems)
                entry = entry["value"]
            if entry is not None and not _finite_number(entry):
                problems.add(ConfigError(f"expected a finite number (or null), got {entry!r}", where=field))
                continue
            rows.append((kind, name, entry, e_rtol, e_atol))
    problems.raise_if_any()
    return rows


def _unknown_keys(mapping: dict, allowed: tuple[str, ...], where: str, problems: Problems) -> None:
    for key in mapping:
        if key not in allowed:
            problems.add(ConfigError(f"unknown key '{key}'{did_you_mean(key, allowed)}; expected "
                                     f"{one_of(allowed)}", where=where))


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _tolerance(value: Any, name: str, where: str, problems: Problems) -> float:
    if not _finite_number(value) or value < 0:
        problems.add(ConfigError(f"{name} must be a finite number >= 0, got {value!r}", where=where))
        return 0.0
    return float(value)


def compare(run: str | Path, expected: str | Path, *, rtol: float = 1e-6, atol: float = 0.0) -> list[Row]:
    """Compare run directory ``run`` with ``expected``; one :class:`Row` per quantity."""
    run = Path(run)
    params, metrics = _read_run(run)
    rows = []
    for kind, name, value, rt, at in load_expected(Path(expected), rtol, atol):
        actual = params.get(name) if kind == "parameter" else _lookup(metrics, name)
        rows.append(Row(kind, name, None if value is None else float(value), actual, rt, at))
    return rows


def expected_from_run(run: str | Path, *, rtol: float, atol: float = 0.0) -> dict:
    """An expected-results JSON object from a run (to commit, and compare later runs with)."""
    params, metrics = _read_run(Path(run))
    return {"rtol": rtol, "atol": atol, "parameters": params,
            "metrics": {k: v for k, v in _flatten(metrics).items() if v is not None}}
