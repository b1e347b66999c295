"""Helpers shared by tests: build problems and models from small config dicts."""

from __future__ import annotations

from pathlib import Path

import yaml

from ude_cli.config import config_from_dict
from ude_cli.problem import resolve


def config(raw: dict | str, directory: Path):
    """A Config from a dict (or YAML text) whose data paths are relative to ``directory``."""
    if isinstance(raw, str):
        raw = yaml.safe_load(raw)
    path = Path(directory) / "config.yaml"
    return config_from_dict(raw, label=str(path), path=path)


def problem(raw: dict | str, directory: Path):
    return resolve(config(raw, directory))


def model(raw: dict | str, directory: Path, n_starts: int = 1):
    from ude_cli.fitting.model import UDEModel

    return UDEModel(problem(raw, directory), n_starts=n_starts)


def write_csv(path: Path, header: str, rows) -> Path:
    lines = [header] + [",".join("" if v is None else f"{v:.12g}" if isinstance(v, float) else str(v) for v in row)
                        for row in rows]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
