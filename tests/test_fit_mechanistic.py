"""Fits with known answers: parameters recovered from noiseless synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from ude_cli import fit

from .helpers import config, write_csv


def test_lotka_volterra_parameters_from_noiseless_data_within_one_percent(tmp_path, lv_csv):
    raw = {
        "data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
        "model": {"builtin": "lotka_volterra",
                  "parameters": {"alpha": 1.0, "beta": 0.5, "gamma": 1.0, "delta": 1.0}},
        "training": {"stages": [{"optimizer": "lbfgs", "iterations": 100}]},
    }
    result = fit(config(raw, tmp_path))
    truth = {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8}
    for name, value in truth.items():
        assert result.values[name] == pytest.approx(value, rel=0.01), name
    assert result.metrics["loss"] < 1e-6


def test_unobserved_state_with_learned_initial_value(tmp_path):
    """SIR observed through I only: S and R never seen; I(0) learned."""
    from scipy.integrate import solve_ivp

    N, beta, gamma = 1000.0, 1.5, 0.5

    def f(_, u):
        s, i, r = u
        return [-beta * s * i / N, beta * s * i / N - gamma * i, gamma * i]

    t = np.arange(0, 16, 1.0)
    sol = solve_ivp(f, (0, 15), [997, 3, 0], t_eval=t, rtol=1e-10, atol=1e-10).y.T
    write_csv(tmp_path / "sir.csv", "day,ill", [(float(a), float(b)) for a, b in zip(t, sol[:, 1], strict=True)])
    raw = {
        "data": {"file": "sir.csv", "time": "day", "columns": {"I": "ill"}},
        "model": {"builtin": "sir", "constants": {"N": N}, "parameters": {"beta": 1.0, "gamma": 0.3},
                  "initial": {"S": 997, "I": {"value": 2.0, "learn": True, "positive": True}, "R": 0}},
        "training": {"stages": [{"optimizer": "lbfgs", "iterations": 150}]},
    }
    result = fit(config(raw, tmp_path))
    assert result.values["beta"] == pytest.approx(beta, rel=0.01)
    assert result.values["gamma"] == pytest.approx(gamma, rel=0.01)
    initial = result.parameters.set_index("name").loc["I(t0)", "value"]
    assert initial == pytest.approx(3.0, rel=0.02)
    # unobserved states are still predicted
    assert {"S_predicted", "R_predicted"} <= set(result.predictions.columns)
    assert np.isnan(result.predictions["S_observed"]).all()


def test_the_loss_history_has_a_row_per_lbfgs_iteration(tmp_path, lv_csv):
    """A 9-iteration LBFGS stage is 10 rows (its start, then each iteration), not a chunk's 2; each row is the
    data loss LBFGS reached in that iteration, the last one the loss the stage ended with."""
    raw = {
        "data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
        "model": {"builtin": "lotka_volterra",
                  "parameters": {"alpha": 1.0, "beta": 0.5, "gamma": 1.0, "delta": 1.0}},
        "training": {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": 9}]},
    }
    result = fit(config(raw, tmp_path))
    history = result.history
    assert history["iteration"].tolist() == list(range(10))
    assert np.all(np.diff(history["seconds"]) >= 0)
    assert history["loss"].iloc[-1] == pytest.approx(result.metrics["loss"], rel=1e-9)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
