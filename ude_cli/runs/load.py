"""Reading a saved run directory back: its config, data, metrics and the fitted model.

Commands that work on a finished run (``ude discover``, ``ude predict``, ``ude report``,
``ude compare``) start here. The model is rebuilt from ``inputs/config.yaml`` (the resolved config,
reading the copies of the data) and its weights are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from .rundir import RUN_FILE


@dataclass
class SavedRun:
    """A run directory, read back: the same names as a :class:`~ude_cli.runs.results.FitResult` where they
    mean the same thing (``values``, ``parameters``, ``predictions``, ``metrics``)."""

    path: Path
    info: dict = field(repr=False)  # run.json
    metrics: dict = field(repr=False)  # metrics.json
    config: Any = field(repr=False)  # Config rebuilt from inputs/config.yaml
    problem: Any = field(repr=False)  # Problem (config + data)
    model: Any = field(repr=False)  # UDEModel with the fitted weights

    @property
    def name(self) -> str:
        return self.info.get("name") or self.path.name

    @property
    def best_start(self) -> int:
        return int(self.metrics.get("best_start", 0))

    @functools.cached_property
    def parameters(self):
        """params.csv: name, value, init, learned, bounds."""
        import pandas as pd

        return pd.read_csv(self.path / "params.csv")

    @property
    def values(self) -> dict[str, float]:
        """Fitted parameter values by name."""
        rows = self.parameters[self.parameters["kind"] == "parameter"]
        return dict(zip(rows["name"], rows["value"].astype(float), strict=True))

    @functools.cached_property
    def predictions(self):
        """predictions.csv: experiment, time, split, observed / predicted / residual per state."""
        import pandas as pd

        return pd.read_csv(self.path / "predictions.csv")


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"no {path.name}: not a complete run directory", where=str(path.parent)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"cannot read {what}: {exc}", where=str(path)) from None


def load_run(path: str | Path, *, with_model: bool = True) -> SavedRun:
    """Read the run directory ``path``; rebuild the fitted model unless ``with_model`` is false.

    Raises:
        RunDirError: not a run directory, an incomplete run, or unreadable files.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError("no such run directory", where=str(path))
    info = read_json(path / RUN_FILE, "run.json")
    if info.get("status") != "complete":
        raise RunDirError(f"the run is {info.get('status', 'incomplete')}, not complete", where=str(path),
                          hint="finish it with `ude fit --resume` first")
    metrics = read_json(path / "metrics.json", "metrics.json")
    from ..config import load_config
    from ..problem import resolve

    config = load_config(path / "inputs" / "config.yaml")
    problem = resolve(config)
    model = None
    if with_model:
        import torch

        from ..fitting.model import UDEModel

        model = UDEModel(problem, n_starts=int(metrics.get("starts", 1)))
        try:
            state = torch.load(path / "model.pt", weights_only=True)
        except FileNotFoundError:
            raise RunDirError("no model.pt in the run directory", where=str(path)) from None
        except Exception as exc:  # a corrupt or foreign file
            raise RunDirError(f"cannot load model.pt: {exc}", where=str(path)) from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RunDirError(f"model.pt does not match the run's config: {str(exc).splitlines()[0]}",
                              where=str(path)) from None
        model.eval()
    return SavedRun(path=path, info=info, metrics=metrics, config=config, problem=problem, model=model)
