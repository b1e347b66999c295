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
                     observable_curves=Objective(model).curves(dense))
