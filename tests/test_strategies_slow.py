"""The UDE paper's scenario 2 (slow: run with -m slow): Lotka-Volterra with the predator observed at only 6 of
60 times, the prey at all of them, 5 % noise (bench/strategies.py writes the same data and prints every
strategy beside the others).

Known answer: the missing interaction terms, -0.9 x y and 1.8 x y; the network's terms along the true
trajectory must be within 20 % RMS of them (relative to their RMS), with multiple shooting chosen by
``training.strategy: auto``.
"""

from __future__ import annotations

import sys

import pytest

from ude_cli import fit

from .conftest import REPO
from .helpers import config

pytestmark = pytest.mark.slow

SPAN = 15.0  # two periods: auto sees the prey oscillate


def test_auto_chooses_multiple_shooting_and_learns_the_missing_terms(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from strategies import _Lines, raw_config, term_errors, write_data

    lines = _Lines()
    result = fit(config(raw_config(write_data(tmp_path, SPAN), "auto"), tmp_path), monitor=lines)
    m = result.metrics
    ex, ey = term_errors(result.model, SPAN)
    print(f"sparse LV, auto: train MSE {m['loss']:.3g}, term errors {ex:.1%} and {ey:.1%}, {m['wall_seconds']:.0f} s")
    assert m["strategy"] == "multiple_shooting"
    assert any(s.startswith("training strategy: multiple shooting (auto: y observed at under 25% of the times")
               for s in lines.lines)
    assert [s["objective"] for s in m["stages"]][-1] == "trajectory"
    assert ex < 0.2 and ey < 0.2
