"""What a training strategy is: the stages it runs when a config names none.

A strategy decides how the default stages see the data: all of the trajectory at once (single shooting),
segments with free initial states (multiple shooting), or a growing time window (curriculum). Every
strategy ends with stages on the whole trajectory, so that the loss a fit reports is the real one.
"""

from __future__ import annotations

from ...config import StageSpec, TrainingSpec


class Strategy:
    """One member of the family: a name and the stages it runs."""

    name = ""

    def stages(self, training: TrainingSpec, warm_start: bool) -> list[StageSpec]:
        """The stages after the automatic warm start (``warm_start``: it runs before them)."""
        raise NotImplementedError


def whole_trajectory(warm_start: bool) -> list[StageSpec]:
    """The stages on the whole trajectory: single shooting's default stages."""
    from ...config import default_stages

    return default_stages(warm_start)
