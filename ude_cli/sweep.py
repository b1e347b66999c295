"""Hyper-parameter sweeps: a small grid over config fields, one fit per grid point.

A config's ``sweep`` section maps dotted paths to lists of values::

    sweep:
      networks.U.hidden: [[8, 8], [16, 16]]
      training.weight_decay: [0, 1.0e-4, 1.0e-3]

``ude fit CONFIG --sweep`` fits the 6 combinations into ``runs/<name>/<point>/`` and writes
``runs/<name>/sweep.csv``; with ``--jobs`` or ``--scheduler`` the points run as Dask tasks.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from .config import Config, config_from_dict
from .errors import ConfigError, Problems


def _label_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_label_value(v) for v in value)
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def _set(tree: dict, path: list[str], value: Any, where: str) -> None:
    node = tree
    for k, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"no element {part} at '{'.'.join(path[:k + 1])}'", where=where)
            node = node[int(part)]
        elif isinstance(node, dict) and part in node and node[part] is not None:
            node = node[part]
        else:
            raise ConfigError(f"no field '{'.'.join(path[:k + 1])}' in the config", where=where)
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"no element {last} in '{'.'.join(path[:-1])}'", where=where)
        node[int(last)] = value
    elif isinstance(node, dict) and last in node:
        node[last] = value
    else:
        raise ConfigError(f"no field '{'.'.join(path)}' in the config", where=where)


def expand(config: Config) -> list[tuple[str, Config]]:
    """The grid points of ``config.sweep``: ``(label, config)`` pairs, each config fully validated."""
    label = config.label
    grid = config.sweep or {}
    if not grid:
        raise ConfigError("--sweep needs a 'sweep' section (dotted path: [values, ...])", where=label)
    base = config.resolved()
    base.pop("sweep", None)
    keys = list(grid)
    points = []
    problems = Problems()
    for values in itertools.product(*(grid[k] for k in keys)):
        raw = _deep_copy(base)
        try:
            for key, value in zip(keys, values, strict=True):
                _set(raw, key.split("."), value, where=f"{label}: sweep.{key}")
        except ConfigError as exc:
            problems.add(exc)
            break
        name = ",".join(f"{k.split('.')[-1]}={_label_value(v)}" for k, v in zip(keys, values, strict=True))
        raw["name"] = f"{config.run_name}/{name}"
        try:
            point = config_from_dict(raw, label=f"{label} (sweep point {name})", path=config.path)
        except ConfigError as exc:
            problems.add(exc)
            continue
        points.append((name, point))
    problems.raise_if_any()
    return points


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree


def summary_table(config: Config, points: list[tuple[str, Config]], outcomes) -> Any:
    """One row per grid point: the swept values, status, train and validation loss, run directory."""
    import pandas as pd

    keys = list(config.sweep or {})
    rows = []
    for (name, _), outcome in zip(points, outcomes, strict=True):
        row = {"point": name}
        for key, part in zip(keys, name.split(","), strict=True):
            row[key] = part.split("=", 1)[1]
        m = outcome.metrics or {}
        row.update({"status": outcome.status, "loss": m.get("loss"), "validation_loss": m.get("validation_loss"),
                    "run_dir": outcome.run_dir, "error": (outcome.error or {}).get("message")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    score = "validation_loss" if frame["validation_loss"].notna().any() else "loss"
    return frame.sort_values(score, na_position="last", kind="stable").reset_index(drop=True), score
