"""A :class:`~ude_cli.runs.results.FitResult` rebuilt from a saved run, without refitting.

The tables come from the run's CSV files; the dense trajectories and learned terms are simulated
again from the saved model (``model.pt``), as :func:`ude_cli.api.build_result` made them. With
it, :mod:`ude_cli.plots` draws every figure of the run again (``ude report``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RunDirError


def _csv(path: Path, **kwargs):
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise RunDirError(f"no {path.name} in the run directory", where=str(path.parent)) from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot read {path.name}: {exc}", where=str(path)) from None


def result_from_run(run):
    """The :class:`~ude_cli.runs.results.FitResult` of a :class:`~ude_cli.runs.load.SavedRun` (with its model).

    Raises:
        RunDirError: a table of the run is missing or unreadable.
    """
    from ..likelihood.objective import Objective
    from .results import FitResult

    model = run.model
    dense = model.dense()
    terms = [model.terms_along(t, y) for t, y in dense]
    parameters = _csv(run.path / "params.csv")
    predictions = _csv(run.path / "predictions.csv", dtype={"experiment": str})
    history = _csv(run.path / "loss.csv")
    return FitResult(problem=run.problem, model=model, parameters=parameters, predictions=predictions,
                     metrics=dict(run.metrics), history=history, trajectories=dense, terms=terms, info=dict(run.info),
                     observable_curves=Objective(model).curves(dense), curve_bands=_curve_bands(run, dense))


def _curve_bands(run, dense) -> list[dict] | None:
    """The bands along the dense grid from trajectory.csv (as the fit wrote them), or None: no bands, a run
    written before they were, or a grid that is not the one simulated again."""
    import numpy as np

    from ..identifiability.bands import SUFFIXES

    path = run.path / "trajectory.csv"
    if not path.is_file():
        return None
    frame = _csv(path, dtype={"experiment": str})
    names = [*run.problem.dataset.observables, *run.problem.states]
    out = []
    for e, (t, _) in zip(run.problem.dataset.experiments, dense, strict=True):
        rows = frame[frame["experiment"] == e.name]
        if len(rows) != len(t) or not np.allclose(rows["time"].to_numpy(float), t, rtol=1e-9, atol=1e-12):
            return None
        along = {}
        for name in dict.fromkeys(names):
            suffixes = [s for s in SUFFIXES if f"{name}_{s}" in rows]
            if len(suffixes) in (2, 4):
                along[name] = np.stack([rows[f"{name}_{s}"].to_numpy(float) for s in suffixes], -1)
        out.append(along)
    return out if any(out) else None
