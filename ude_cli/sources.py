"""What ``ude fit`` and ``ude check`` read: a ``ude`` config, or a PEtab problem translated on the fly.

Outside :mod:`ude_cli.petab` so that it is light to import (no pandas, sympy or libsbml until a PEtab problem
is actually given): every ``ude fit`` goes through :func:`load_any`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_petab(path: str | Path) -> bool:
    """Whether ``path`` is a PEtab problem YAML (it has ``format_version`` and names a parameter file)."""
    from .config import read_yaml

    raw = read_yaml(Path(path))
    return isinstance(raw, dict) and "format_version" in raw and any(
        k in raw for k in ("parameter_file", "parameter_files", "problems"))


def load_any(path: str | Path, stack, notes: list[str] | None = None) -> tuple[Any, Path | None]:
    """``(config, imported folder or None)`` of ``path``: a ``ude`` config, or a PEtab problem YAML translated
    (as :func:`~ude_cli.petab.convert.import_problem` does) into a temporary folder that lives as long as
    ``stack`` (a :class:`contextlib.ExitStack`). The translation's notes are appended to ``notes``."""
    import tempfile

    from .config import load_config

    path = Path(path)
    if not is_petab(path):  # (a missing or unreadable file: read_yaml's error, as for any config)
        return load_config(path), None
    from .petab.convert import import_problem

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ude-petab-"))) / "import"
    config = import_problem(path, folder, notes=notes)
    return load_config(config), folder
