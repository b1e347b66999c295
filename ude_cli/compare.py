"""Regression checks: compare a run with expected results within tolerances (``ude compare``).

EXPECTED is another run directory, or a JSON file::

    {"rtol": 1e-3, "atol": 0,                      # defaults for every entry (optional)
     "parameters": {"alpha": 0.54, "beta": {"value": 0.0272, "rtol": 0.01}},
     "metrics": {"loss": {"value": 0.048, "rtol": 0.1}, "train_mse.x": 25.9}}

Parameters are matched by name (params.csv); metrics by dotted path into metrics.json. A value
passes when ``|actual - expected| <= atol + rtol * |expected|``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunDirError

#: metrics compared when EXPECTED is a run directory
RUN_METRICS = ("loss", "validation_loss", "train_mse", "validation_mse")


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
    from .runs import read_json

    if not (path / "params.csv").is_file():
        raise RunDirError("no params.csv: not a complete run directory", where=str(path))
    import csv

    with open(path / "params.csv", newline="") as fh:
        params = {row["name"]: float(row["value"]) for row in csv.DictReader(fh)}
    return params, read_json(path / "metrics.json", "metrics.json")


def _flatten(metrics: dict, keys=RUN_METRICS) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = None if v is None else float(v)
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


def load_expected(path: Path, rtol: float, atol: float) -> list[tuple[str, str, float | None, float, float]]:
    """(kind, name, value, rtol, atol) for every expected quantity."""
    path = Path(path)
    if path.is_dir():
        params, metrics = _read_run(path)
        rows = [("parameter", n, v, rtol, atol) for n, v in params.items()]
        rows += [("metric", n, v, rtol, atol) for n, v in _flatten(metrics).items()]
        return rows
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("expected-results file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read expected results: {exc}", where=str(path)) from None
    if not isinstance(spec, dict) or not ({"parameters", "metrics"} & set(spec)):
        raise ConfigError("expected a JSON object with 'parameters' and/or 'metrics'", where=str(path))
    rtol = float(spec.get("rtol", rtol))
    atol = float(spec.get("atol", atol))
    rows = []
    for kind, section in (("parameter", "parameters"), ("metric", "metrics")):
        for name, entry in (spec.get(section) or {}).items():
            if isinstance(entry, dict):
                if "value" not in entry:
                    raise ConfigError(f"{section}.{name}: needs a 'value'", where=str(path))
                rows.append((kind, name, entry["value"], float(entry.get("rtol", rtol)), float(entry.get("atol", atol))))
            else:
                rows.append((kind, name, entry, rtol, atol))
    return rows


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
