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

from ..config import Config, config_from_dict
from ..errors import ConfigError, Problems, did_you_mean

#: Most grid points a sweep may have.
MAX_POINTS = 1000


def _label_value(value: Any, exact: bool = False) -> str:
    """A value as it appears in a grid point's directory name (``exact``: floats with every digit)."""
    if isinstance(value, list | tuple):
        return "x".join(_label_value(v, exact) for v in value)
    text = (repr(value) if exact else f"{value:g}") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def _check_grid(config: Config, base: dict) -> None:
    """Every path exists, no list repeats a value, and the grid is not too large: all problems at once."""
    label = config.label
    problems = Problems()
    size = 1
    for key, values in (config.sweep or {}).items():
        where = f"{label}: sweep.{key}"
        size *= max(len(values), 1)
        if not values:
            problems.add(ConfigError("needs at least one value", where=where))
        try:
            _set(_deep_copy(base), key.split("."), values[0] if values else None, where=where)
        except ConfigError as exc:
            problems.add(exc)
        repeated = [v for k, v in enumerate(values) if v in values[:k]]
        if repeated:
            problems.add(ConfigError(f"the value {repeated[0]!r} appears twice", where=where))
    if size > MAX_POINTS:
        problems.add(ConfigError(f"the grid has {size} points; at most {MAX_POINTS} are fitted", where=f"{label}: sweep"))
    problems.raise_if_any()


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
            raise ConfigError(f"no field '{'.'.join(path[:k + 1])}' in the config{_suggest(node, part)}", where=where)
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"no element {last} in '{'.'.join(path[:-1])}'", where=where)
        node[int(last)] = value
    elif isinstance(node, dict) and last in node:
        node[last] = value
    else:
        raise ConfigError(f"no field '{'.'.join(path)}' in the config{_suggest(node, last)}", where=where)


def _suggest(node: Any, part: str) -> str:
    return did_you_mean(part, [str(k) for k in node]) if isinstance(node, dict) else ""


def expand(config: Config) -> list[tuple[str, Config]]:
    """The grid points of ``config.sweep``: ``(label, config)`` pairs, each config fully validated."""
    label = config.label
    grid = config.sweep or {}
    if not grid:
        raise ConfigError("--sweep needs a 'sweep' section (dotted path: [values, ...])", where=label)
    base = config.resolved()
    base.pop("sweep", None)
    _check_grid(config, base)
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    names = [_point_name(keys, values, exact=False) for values in combos]
    if len(set(names)) < len(names):  # 0.05 and 0.05000001 both print as 0.05: name them in full
        names = [_point_name(keys, values, exact=True) for values in combos]
    if len(set(names)) < len(names):
        same = next(n for k, n in enumerate(names) if n in names[:k])
        raise ConfigError(f"two grid points would share the directory '{same}'; make the values differ in "
                          f"letters or digits", where=f"{label}: sweep")
    points = []
    problems = Problems()
    for values, name in zip(combos, names, strict=True):
        raw = _deep_copy(base)
        for key, value in zip(keys, values, strict=True):
            _set(raw, key.split("."), value, where=f"{label}: sweep.{key}")
        raw["name"] = f"{config.run_name}/{name}"
        try:
            point = config_from_dict(raw, label=f"{label} (sweep point {name})", path=config.path)
        except ConfigError as exc:
            problems.add(exc)
            continue
        points.append((name, point))
    problems.raise_if_any()
    return points


def _point_name(keys: list[str], values: tuple, *, exact: bool) -> str:
    return ",".join(f"{k.split('.')[-1]}={_label_value(v, exact)}" for k, v in zip(keys, values, strict=True))


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
        row: dict[str, str | float | None] = {"point": name}
        for key, part in zip(keys, name.split(","), strict=True):
            row[key] = part.split("=", 1)[1]
        m = outcome.metrics or {}
        row.update({"status": outcome.status, "loss": m.get("loss"), "validation_loss": m.get("validation_loss"),
                    "run_dir": outcome.run_dir, "error": (outcome.error or {}).get("message")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    score = "validation_loss" if frame["validation_loss"].notna().any() else "loss"
    return frame.sort_values(score, na_position="last", kind="stable").reset_index(drop=True), score
