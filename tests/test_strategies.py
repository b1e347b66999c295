"""Training strategies (issue 12): multiple shooting's objective, a curriculum's window, the automatic choice.

Known answers: on the model's own trajectory the segments' data term is the single-shooting loss and the gaps
are zero; a gap of d in a state of spread s costs (d / s)^2 over the number of gaps; a window's loss is the MSE
of the cells inside it, computed here in numpy; parameters of a Lotka-Volterra system whose predator is never
observed are recovered by multiple shooting (slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ude_cli import fit
from ude_cli.errors import ConfigError
from ude_cli.fitting.strategy.auto import choose
from ude_cli.fitting.strategy.curriculum import WindowObjective
from ude_cli.fitting.strategy.multiple_shooting import ShootingObjective, boundaries
from ude_cli.likelihood.objective import Objective

from .conftest import lv_truth
from .helpers import config, model, problem, write_csv

TRUTH = {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8}


def lv_csv(tmp_path, t, noise=0.0, predator=True, name="lv.csv", u0=(0.44249296, 4.6280594), keep=None):
    """Lotka-Volterra data (columns t, prey, predator, and y0: the predator's initial value)."""
    x = lv_truth(t, u0=u0)
    y = x * (1 + noise * np.random.default_rng(0).standard_normal(x.shape))
    rows = []
    for i, (a, (b, c)) in enumerate(zip(t, y, strict=True)):
        seen = predator and (keep is None or i in keep)
        rows.append((float(a), float(b), float(c) if seen else None, float(u0[1])))
    write_csv(tmp_path / name, "t,prey,predator,y0", rows)
    return x


def mechanistic(training: dict, columns=None, parameters=None, files=None):
    return {"data": {**({"files": files} if files else {"file": "lv.csv"}), "time": "t", "columns": columns or {"x": "prey", "y": "predator"}},
            "model": {"builtin": "lotka_volterra", "parameters": parameters or dict(TRUTH),
                      "initial": {"x": 0.44249296, "y": 4.6280594}},
            "solver": {"method": "dopri5", "rtol": 1e-9, "atol": 1e-9, "engine": "torchdiffeq"},
            "training": training}


def test_segments_follow_the_config():
    t = np.linspace(0, 10, 41)
    cfg = config(mechanistic({"multiple_shooting": {"segments": 4}}), ".").training
    assert boundaries(t, cfg).tolist() == [0, 10, 20, 30, 40]
    cfg = config(mechanistic({"multiple_shooting": {"segment_length": 5.0}}), ".").training
    assert boundaries(t, cfg).tolist() == [0, 20, 40]
    cfg = config(mechanistic({}), ".").training  # about 8 data times a segment
    assert boundaries(t, cfg).tolist() == [0, 8, 16, 24, 32, 40]


def test_on_its_own_trajectory_the_shooting_loss_is_the_single_shooting_loss(tmp_path):
    lv_csv(tmp_path, np.linspace(0, 10, 41), noise=0.05)
    raw = mechanistic({"multiple_shooting": {"segments": 4, "continuity": 100}})
    m = model(raw, tmp_path)
    objective = Objective(m)
    shooting = ShootingObjective(m, objective, m.problem.config.training)
    with torch.no_grad():
        sol = m()[0]
        shooting.states["shooting.0"].copy_(sol[shooting.bounds[0][1:-1]].permute(1, 0, 2, 3))
        data, gap = shooting.parts()
        single = objective.loss(m())
    assert float(gap) < 1e-14
    assert float(data) == pytest.approx(float(single), rel=1e-6)
    assert float(data) > 1e-4  # the noise: the two are equal, not both zero


def test_a_gap_costs_its_square_over_the_spread(tmp_path):
    lv_csv(tmp_path, np.linspace(0, 10, 41), predator=False)
    raw = mechanistic({"multiple_shooting": {"segments": 4, "continuity": 100}}, columns={"x": "prey"})
    m = model(raw, tmp_path)
    shooting = ShootingObjective(m, Objective(m), m.problem.config.training)
    shooting.initialise()
    with torch.no_grad():
        sol = m()[0]
        shooting.states["shooting.0"].copy_(sol[shooting.bounds[0][1:-1]].permute(1, 0, 2, 3))
        shooting.states["shooting.0"][0, 2, 0, 1] += 0.3  # the unobserved predator where the last segment starts
        data, gap = shooting.parts()
        total = shooting.loss()
    # the unobserved state's spread: that of the single-shooting pass that initialised the segments
    spread = float(np.concatenate([sol[..., 1].numpy().ravel()]).std())
    assert float(shooting.scale[1]) == pytest.approx(spread, rel=1e-9)
    assert float(gap) == pytest.approx((0.3 / spread) ** 2 / 6, rel=1e-6)  # 3 boundaries x 2 states
    assert float(total) == pytest.approx(float(data) + 100 * float(gap), rel=1e-12)


def test_segment_states_start_from_the_data_and_the_trajectory(tmp_path):
    t = np.linspace(0, 10, 41)
    truth = lv_csv(tmp_path, t, predator=False)
    raw = mechanistic({"multiple_shooting": {"segments": 4}}, columns={"x": "prey"})
    m = model(raw, tmp_path)
    shooting = ShootingObjective(m, Objective(m), m.problem.config.training)
    shooting.initialise()
    values = shooting.states["shooting.0"].detach().numpy()[0, :, 0, :]
    assert values[:, 0] == pytest.approx(truth[[10, 20, 30], 0], rel=1e-9)  # prey: its data at the boundaries
    assert values[:, 1] == pytest.approx(truth[[10, 20, 30], 1], rel=1e-5)  # predator: the true model's trajectory


def test_a_window_is_the_mse_inside_it(tmp_path):
    t = np.linspace(0, 10, 41)
    lv_csv(tmp_path, t, noise=0.05)
    m = model(mechanistic({}), tmp_path)
    objective = Objective(m)
    half = WindowObjective(m, objective, 0.5)
    whole = WindowObjective(m, objective, 1.0)
    data = np.loadtxt(tmp_path / "lv.csv", delimiter=",", skiprows=1)
    with torch.no_grad():
        sol = m()[0][:, 0, 0, :].numpy()
        expected = float(((sol[:21] - data[:21, 1:3]) ** 2).mean())
        assert float(half.loss()) == pytest.approx(expected, rel=1e-6)
        assert float(whole.loss()) == pytest.approx(float(objective.loss(m())), rel=1e-9)


def test_a_window_with_a_noise_model_is_its_likelihood(tmp_path):
    t = np.linspace(0, 10, 41)
    lv_csv(tmp_path, t, noise=0.05)
    raw = mechanistic({})
    raw["noise"] = {"distribution": "normal", "sigma": 0.1}
    m = model(raw, tmp_path)
    objective = Objective(m)
    half = WindowObjective(m, objective, 0.5)
    data = np.loadtxt(tmp_path / "lv.csv", delimiter=",", skiprows=1)
    with torch.no_grad():
        sol = m()[0][:, 0, 0, :].numpy()
        value = float(half.loss())
    r = sol[:21] - data[:21, 1:3]
    nll = 0.5 * np.log(2 * np.pi * 0.01) + 0.5 * r ** 2 / 0.01
    assert value == pytest.approx(float(nll.mean()), rel=1e-6)


def test_the_compiled_batch_is_the_torchdiffeq_batch(tmp_path):
    """The segments of an autonomous system in one batch: the compiled engine's dopri5 and torchdiffeq give the
    same objective (to the solvers' tolerance) at interpolated, discontinuous segment states."""
    lv_csv(tmp_path, np.linspace(0, 10, 41), noise=0.05, predator=False)
    values = []
    for engine in ("torchdiffeq", "compiled"):
        raw = mechanistic({"multiple_shooting": {"segments": 5}}, columns={"x": "prey"})
        raw["solver"]["engine"] = engine
        m = model(raw, tmp_path)
        assert m.engine == engine
        shooting = ShootingObjective(m, Objective(m), m.problem.config.training)
        assert shooting.autonomous
        shooting.initialise()
        with torch.no_grad():
            shooting.states["shooting.0"][..., 1] *= 1.2  # gaps in the unobserved predator
            values.append([float(v) for v in shooting.parts()])
    assert values[0][1] > 1e-3
    assert values[1] == pytest.approx(values[0], rel=1e-6)


@pytest.mark.slow
def test_an_unobserved_predator_is_recovered_by_multiple_shooting(tmp_path):
    """Two experiments, the predator never observed, parameters started 30 % off, the default stages of
    multiple shooting in the compiled engine: the truth, the last stage on the whole trajectory."""
    t = np.linspace(0, 20, 81)
    lv_csv(tmp_path, t, predator=False, name="a.csv")
    lv_csv(tmp_path, t, predator=False, name="b.csv", u0=(1.0, 2.0))
    raw = mechanistic({"strategy": "multiple_shooting", "warm_start": "none"}, columns={"x": "prey"},
                      parameters={k: v * f for (k, v), f in zip(TRUTH.items(), [0.7, 1.3, 1.3, 0.7], strict=True)},
                      files=["a.csv", "b.csv"])
    raw["model"]["initial"] = {"y": {"column": "y0"}}
    raw["solver"] = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8, "engine": "compiled"}
    result = fit(config(raw, tmp_path))
    for name, value in TRUTH.items():
        assert result.values[name] == pytest.approx(value, rel=1e-4), name
    m = result.metrics
    assert [s["objective"] for s in m["stages"]] == ["multiple_shooting", "multiple_shooting", "trajectory"]
    assert m["strategy"] == "multiple_shooting" and m["solver_engine"] == "compiled"
    assert m["loss"] < 1e-10


def test_auto_chooses_and_says_why(tmp_path):
    t = np.linspace(0, 15, 60)
    lv_csv(tmp_path, t, noise=0.05, keep={0, 12, 24, 35, 47, 59})
    name, why = choose(problem(mechanistic({}), tmp_path), True)
    assert name == "multiple_shooting"
    assert why.startswith("y observed at under 25% of the times, so no collocation warm start: its spline there "
                          "misleads it and the data oscillate")
    lv_csv(tmp_path, t, noise=0.05)
    assert choose(problem(mechanistic({}), tmp_path), True) == ("single_shooting", "the collocation warm start runs")
    lv_csv(tmp_path, np.linspace(0, 3, 13), noise=0.05, predator=False)  # less than half a period
    name, why = choose(problem(mechanistic({}, columns={"x": "prey"}), tmp_path), False)
    assert name == "single_shooting" and why.startswith("no warm start (state(s) y have no data column), but the data do not")


def test_a_stiff_method_is_refused_in_one_line(tmp_path):
    lv_csv(tmp_path, np.linspace(0, 10, 41))
    raw = mechanistic({"strategy": "multiple_shooting"})
    raw["solver"] = {"method": "bdf"}
    with pytest.raises(Exception) as info:
        fit(config(raw, tmp_path))
    assert "multiple shooting and curriculum windows are solved by torchdiffeq, which has no bdf method" in str(info.value)


def test_bad_strategy_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="training.strategy"):
        config(mechanistic({"strategy": "shooting"}), tmp_path)
    with pytest.raises(ConfigError, match="training.multiple_shooting.segments"):
        config(mechanistic({"multiple_shooting": {"segments": 1}}), tmp_path)
    with pytest.raises(ConfigError, match="window"):
        config(mechanistic({"stages": [{"optimizer": "lbfgs", "iterations": 5, "window": 1.5}]}), tmp_path)


@pytest.mark.slow
def test_the_ude_papers_scenario_2_learns_the_missing_terms(tmp_path):
    """The predator seen at 6 of 60 times, the prey at all, 5 % noise, two periods (bench/strategies.py): auto
    chooses multiple shooting without the warm start, and the learned terms are within 20 % RMS of -0.9 x y and
    1.8 x y along the true trajectory."""
    import sys

    from .conftest import REPO

    sys.path.insert(0, str(REPO / "bench"))
    from strategies import _Lines, raw_config, term_errors, write_data

    lines = _Lines()
    result = fit(config(raw_config(write_data(tmp_path, 15.0), "auto"), tmp_path), monitor=lines)
    m = result.metrics
    ex, ey = term_errors(result.model, 15.0)
    print(f"scenario 2, auto: train MSE {m['loss']:.3g}, term errors {ex:.1%} and {ey:.1%}, {m['wall_seconds']:.0f} s")
    assert m["strategy"] == "multiple_shooting"
    assert any(s.startswith("training strategy: multiple shooting (auto: y observed at under 25% of the times")
               for s in lines.lines)
    assert [s["objective"] for s in m["stages"]] == ["multiple_shooting", "multiple_shooting", "trajectory"]
    assert ex < 0.2 and ey < 0.2
