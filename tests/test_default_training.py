"""The default training on hard series (slow: run with -m slow).

The spiral of torchdiffeq's ode_demo. Known answer: the data are noiseless (data/generate_spiral.py), so a neural ODE that has found the
dynamics fits them far below their variance (about 0.39 per state). Before issue 12 the default schedule
(a 200-iteration warm start, then Adam 0.01 x 300, then LBFGS x 700) ended at a training MSE of 3.6e-3
(0.35 on the machine the issue was measured on), and the fit-quality check must call such a fit poor.

A long oscillatory series: 8.4 periods of the canonical Lotka-Volterra system (t in [0, 64], 257 points,
2 % multiplicative noise). Known answer: the noise floor, the mean squared noise actually drawn; a fit
that has found the dynamics ends near it, not far above.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ude_cli import fit

from .conftest import REPO, lv_truth
from .helpers import config, write_csv

pytestmark = pytest.mark.slow


def spiral_config(tmp_path, training: dict | None = None):
    sys.path.insert(0, str(REPO / "data"))
    from generate_spiral import truth

    t = np.linspace(0.0, 25.0, 1000)
    y = truth(t)
    write_csv(tmp_path / "spiral.csv", "t,y1,y2", zip(t.tolist(), y[:, 0].tolist(), y[:, 1].tolist(), strict=True))
    raw = {"data": {"file": "spiral.csv", "time": "t", "columns": {"y1": "y1", "y2": "y2"}},
           "model": {"states": ["y1", "y2"], "equations": {"y1": "f[0]", "y2": "f[1]"}},
           "networks": {"f": {"inputs": ["y1", "y2"], "outputs": 2, "hidden": [50], "activation": "tanh"}}}
    if training:
        raw["training"] = training
    return config(raw, tmp_path)


def test_the_default_config_fits_the_spiral(tmp_path):
    result = fit(spiral_config(tmp_path))
    m = result.metrics
    print(f"spiral, default config: train MSE {m['loss']:.3g} in {m['wall_seconds']:.1f} s, {m['iterations']} "
          f"iterations; {m['fit_quality']['line']}")
    assert m["loss"] < 1e-3
    assert not m["fit_quality"]["poor"]
    assert [s["objective"] for s in m["stages"]] == ["collocation", "trajectory"]


def test_the_old_default_schedule_fails_and_is_called_poor(tmp_path):
    old = {"warm_start_iterations": 200,
           "stages": [{"optimizer": "adam", "lr": 0.01, "iterations": 300}, {"optimizer": "lbfgs", "iterations": 700}]}
    result = fit(spiral_config(tmp_path, old))
    q = result.metrics["fit_quality"]
    print(f"spiral, old schedule: train MSE {result.metrics['loss']:.3g}; {q['line']}")
    assert result.metrics["loss"] > 1e-3
    assert q["poor"] and q["line"].startswith("fit is poor: training mse")
    assert set(q["systematic_observables"]) == {"y1", "y2"}


def test_the_default_reaches_the_noise_floor_on_a_long_oscillatory_series(tmp_path):
    t = np.linspace(0.0, 64.0, 257)
    x = lv_truth(t)
    y = x * (1 + 0.02 * np.random.default_rng(0).standard_normal(x.shape))
    floor = float(np.mean((y - x) ** 2))
    write_csv(tmp_path / "long.csv", "t,prey,predator", zip(t.tolist(), y[:, 0].tolist(), y[:, 1].tolist(), strict=True))
    raw = {"data": {"file": "long.csv", "time": "t", "columns": {"x": "prey", "y": "predator"}},
           "model": {"states": ["x", "y"], "parameters": {"alpha": {"init": 1.3, "fixed": True},
                                                          "gamma": {"init": 0.8, "fixed": True}},
                     "equations": {"x": "alpha*x + U[0]", "y": "-gamma*y + U[1]"}},
           "networks": {"U": {"inputs": ["x", "y"], "outputs": 2}}}
    result = fit(config(raw, tmp_path))
    m = result.metrics
    print(f"long LV: train MSE {m['loss']:.3g} against a noise floor of {floor:.3g}, {m['wall_seconds']:.1f} s; "
          f"{m['fit_quality']['line']}")
    assert m["loss"] < 1.5 * floor
    assert not m["fit_quality"]["poor"]
