"""Multistart starts whose initial guess cannot be solved are drawn again, not allowed to fail the batch.

Known answer: ``dx/dt = r x^2``, ``x(0) = 1`` is ``x = 1/(1 - r t)``, which blows up at ``t = 1/r``: on data over
[0, 1] a start drawn with ``r > 1`` cannot be solved. The config's ``r = 0.7`` can; the fourth start of seed 0
draws ``r > 1``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ude_cli import api
from ude_cli.errors import FitError

from .helpers import config, write_csv

CONFIG = """
data: {file: data.csv, time: t, columns: {x: x}}
model:
  states: [x]
  parameters: {r: {init: 0.7, positive: true}}
  equations: {x: r*x**2}
  initial: {x: 1}
noise: normal
training: {warm_start: none}
"""


@pytest.fixture
def blowup_dir(tmp_path):
    t = np.linspace(0, 1, 11)
    x = 1 / (1 - 0.8 * t) * (1 + 0.01 * np.random.default_rng(0).standard_normal(t.size))
    write_csv(tmp_path / "data.csv", "t,x", list(zip(t, x, strict=True)))
    return tmp_path


def test_a_start_that_blows_up_is_drawn_again(blowup_dir):
    result = api.fit(config(CONFIG, blowup_dir), n_starts=4)
    drawn = result.metrics["starts_drawn_again"]
    assert len(drawn) == 1 and drawn[0].startswith("start 4: its initial guess cannot be solved")
    assert "drawn again (parameter seed 100006" in drawn[0]
    starts = result.starts
    assert starts is not None
    row = starts[starts["start"] == 3].iloc[0]
    assert row["parameter_seed"] == 100006 and row["r"] < 1.0
    # every start reaches the maximum-likelihood r of the closed form (scipy, below, to 1e-6)
    from scipy.optimize import minimize_scalar

    t, y = np.linspace(0, 1, 11), np.loadtxt(blowup_dir / "data.csv", delimiter=",", skiprows=1)[:, 1]
    best = minimize_scalar(lambda r: np.sum((y - 1 / (1 - r * t)) ** 2), bounds=(0.5, 0.99), method="bounded",
                           options={"xatol": 1e-12}).x
    assert np.allclose(starts["r"], best, rtol=1e-6)


def test_without_the_redraw_the_batch_failed(blowup_dir, monkeypatch):
    """The same fit with the redraw switched off fails on start 4's initial guess (what it did before)."""
    import ude_cli.fitting.multistart as multistart

    monkeypatch.setattr(multistart, "_failure", lambda model: None)
    with pytest.raises(FitError, match="start 4"):
        api.fit(config(CONFIG, blowup_dir), n_starts=4)


def test_with_the_collocation_warm_start_nothing_is_drawn_again(blowup_dir):
    """The warm start never solves the initial guess: the starts stay as drawn (and the fit succeeds)."""
    result = api.fit(config(CONFIG.replace("training: {warm_start: none}\n", ""), blowup_dir), n_starts=4)
    assert result.metrics["starts_drawn_again"] == []
    assert list(result.starts.sort_values("start")["parameter_seed"]) == [0, 1, 2, 3]


def test_a_line_search_trial_that_blows_up_backs_off(blowup_dir):
    """LBFGS from r = 0.2: its first line search tries an r beyond 1, where x blows up inside the data. The
    trial gets a large objective and the line search backs off, within the same LBFGS run: no roll-back (which
    restarts LBFGS with a 10x smaller learning rate, as it did before), and the fit reaches the maximum."""
    from ude_cli.progress import SilentMonitor

    class Messages(SilentMonitor):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def message(self, text):
            self.seen.append(text)

    text = CONFIG.replace("init: 0.7", "init: 0.2").replace(
        "training: {warm_start: none}", "training: {warm_start: none, stages: [{optimizer: lbfgs, iterations: 100}]}")
    monitor = Messages()
    result = api.fit(config(text, blowup_dir), monitor=monitor)
    assert not any("rolled back" in m for m in monitor.seen), monitor.seen
    assert result.values["r"] == pytest.approx(0.798419, rel=1e-5)


def test_trajectory_csv_is_the_best_starts(blowup_dir, tmp_path):
    """trajectory.csv (states and bands along the dense grid) is of the start metrics.json calls best, which
    need not be the first: here two starts with different iteration budgets, and the best set by hand."""
    import pandas as pd

    result = api.fit(config(CONFIG.replace("training: {warm_start: none}",
                                           "training: {warm_start: none, stages: [{optimizer: lbfgs, iterations: 2}]}"),
                            blowup_dir), n_starts=3)
    t, y = result.trajectories[0]
    assert not np.allclose(y[:, 0, 0], y[:, 1, 0])  # two iterations: the starts have not met yet
    result.metrics["best_start"] = 1
    result.save(tmp_path / "run")
    saved = pd.read_csv(tmp_path / "run" / "trajectory.csv")
    assert np.allclose(saved["time"], t) and np.allclose(saved["x"], y[:, 1, 0], rtol=1e-12)
