"""Single shooting: every stage solves the whole trajectory from the initial states (the default)."""

from __future__ import annotations

from ...config import StageSpec, TrainingSpec
from .base import Strategy, whole_trajectory


class SingleShooting(Strategy):
    name = "single_shooting"

    def stages(self, training: TrainingSpec, warm_start: bool) -> list[StageSpec]:
        return whole_trajectory(warm_start)
