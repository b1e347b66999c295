"""Checkpoints of an interrupted fit, and resuming them.

An interrupted run directory holds ``run.json`` with ``"status": "incomplete"``, ``inputs/`` (the
resolved config and copies of the data) and ``checkpoint.pt``: the model's ``state_dict`` and the
training state (stage, iteration, optimiser state, best parameters so far), all plain tensors and
numbers, loaded back with ``weights_only=True``. Training is deterministic on one machine, so a
resumed fit reaches the same parameters as one that was never interrupted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from .rundir import RUN_FILE, Staging, atomic_write_bytes, atomic_write_json, check_target, run_status

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(out: Path, problem, model, state, info: dict, *, overwrite: bool) -> Path:
    """Write an incomplete run directory holding a resumable checkpoint (staged, then moved); return it.

    A complete run at ``out`` (a fit with ``--overwrite`` interrupted before it finished) is never
    replaced by an unfinished one: the checkpoint goes to ``OUT.interrupted`` beside it.
    """
    import torch

    from .results import write_inputs

    out = Path(out)
    if run_status(out) == "complete":
        out = out.with_name(f"{out.name}.interrupted")
    check_target(out, overwrite=True if run_status(out) == "incomplete" else overwrite)
    staging = Staging(out)
    try:
        write_inputs(problem, staging.path / "inputs")
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "train_state": state.to_dict(), "starts": model.n_starts}, buf)
        atomic_write_bytes(staging.path / CHECKPOINT, buf.getvalue())
        atomic_write_json(staging.path / RUN_FILE, {**info, "status": "incomplete",
                                                    "stopped_at": {"stage": state.stage, "iteration": state.iteration}})
        return staging.commit(overwrite=True)
    except BaseException:
        staging.discard()
        raise


@dataclass
class Resumable:
    """An interrupted run, ready to continue."""

    path: Path
    info: dict
    config: Any
    state_dict: dict
    train_state: Any
    starts: int


def load_checkpoint(path: str | Path) -> Resumable:
    """Read an interrupted run directory; raise :class:`RunDirError` if it cannot be resumed."""
    import torch

    from ..config import load_config
    from ..fitting.train import TrainState
    from .load import read_json

    path = Path(path)
    if not path.is_dir():
        raise RunDirError("no such run directory", where=str(path))
    info = read_json(path / RUN_FILE, "run.json")
    if info.get("status") == "complete":
        raise RunDirError("the run is already complete; nothing to resume", where=str(path))
    try:
        saved = torch.load(path / CHECKPOINT, weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"no {CHECKPOINT}: this run cannot be resumed", where=str(path)) from None
    except Exception as exc:  # corrupt or foreign file: torch's own text is pages long and says to unpickle it
        raise RunDirError(f"cannot read {CHECKPOINT}: the file is damaged or not a checkpoint of ude "
                          f"({type(exc).__name__})", where=str(path),
                          hint="fit again without --resume (--overwrite replaces this run)") from None
    config = load_config(path / "inputs" / "config.yaml")
    return Resumable(path=path, info=info, config=config, state_dict=saved["model"],
                     train_state=TrainState.from_dict(saved["train_state"]), starts=int(saved.get("starts", 1)))
