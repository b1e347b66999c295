"""Training strategies: how the default stages see the data (docs/training.md).

One file per member: :mod:`.single_shooting`, :mod:`.multiple_shooting`, :mod:`.curriculum`, and
:mod:`.auto`, the rule that picks one.
"""

from __future__ import annotations

from ...config import StageSpec, TrainingSpec
from .base import Strategy
from .curriculum import Curriculum
from .multiple_shooting import MultipleShooting
from .single_shooting import SingleShooting

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (SingleShooting(), MultipleShooting(), Curriculum())}


def resolve(problem, training: TrainingSpec, warm_start: bool) -> tuple[str, str | None]:
    """The strategy that runs, and for ``auto`` a line saying which and why (None otherwise)."""
    if training.strategy != "auto":
        return training.strategy, None
    from .auto import choose

    name, why = choose(problem, warm_start)
    return name, f"training strategy: {name.replace('_', ' ')} (auto: {why}; set training.strategy to choose)"


def strategy_stages(name: str, training: TrainingSpec, warm_start: bool) -> list[StageSpec]:
    """The stages of strategy ``name`` (after the automatic warm start, when it runs)."""
    return STRATEGIES[name].stages(training, warm_start)


__all__ = ["STRATEGIES", "Strategy", "resolve", "strategy_stages"]
