"""One definition of "diverges at t = ...": the same time from any grid, in every message and legend."""

from __future__ import annotations

import numpy as np
import pytest

from ude_cli.discovery.extrapolate import divergence_time, time_text
from ude_cli.discovery.plots import leaving_label


@pytest.mark.parametrize("n", [51, 400, 1213])
def test_the_crossing_of_exponential_growth_is_exact_on_any_grid(n):
    t = np.linspace(0, 10, n)
    y = np.stack([np.exp(t), np.ones(n)], axis=1)  # |y| = e^t crosses e^5 at t = 5
    assert divergence_time(t, y, np.exp(5)) == pytest.approx(5.0, abs=1e-9)


def test_finite_time_blow_up_agrees_between_grids():
    # y' = y**2, y(0) = 1: y = 1/(1 - t) crosses 1000 at t = 0.999, then is infinite from t = 1
    def sample(n):
        t = np.linspace(0, 1.5, n)
        with np.errstate(divide="ignore"):
            y = np.where(t < 1, 1 / (1 - t), np.inf)
        return divergence_time(t, y, 1000.0)

    coarse, fine = sample(400), sample(5001)  # spacings 0.0038 and 0.0003
    assert coarse == pytest.approx(0.999, abs=1.5e-3) and fine == pytest.approx(0.999, abs=1e-4)


def test_bounded_and_first_point_cases():
    t = np.linspace(0, 1, 5)
    assert divergence_time(t, np.ones(5), 10.0) is None
    assert divergence_time(t, np.full(5, 50.0), 10.0) == 0.0
    assert divergence_time(t, np.array([1.0, 2.0, np.nan, np.nan, np.nan]), 10.0) == pytest.approx(0.375)


def test_the_legend_gives_the_divergence_time_before_the_axes():
    t = np.linspace(0, 10, 101)
    label = leaving_label("UDE", t, np.exp(t), -1.0, 3.0, bound=np.exp(5))
    assert label == "UDE (diverges at t ≈ 5)"
    assert leaving_label("UDE", t, np.exp(t / 10), -1.0, 2.0, bound=np.exp(5)) == "UDE (leaves the axes at t ≈ 7)"
    assert time_text(1903.2) == "1903.2" and time_text(0.0752) == "0.0752"


def test_nan_times_separating_experiments_are_skipped():
    t = np.array([0.0, 1.0, np.nan, 0.0, 1.0, 2.0])
    y = np.array([1.0, 2.0, np.nan, 1.0, 5.0, 500.0])
    assert divergence_time(t, y, 50.0) == pytest.approx(1.5)
