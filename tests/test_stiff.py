"""Stiff solves (solver.method: bdf, CVODES) and the automatic choice (solver.method: auto).

Known answers: scipy's Radau at tight tolerances for Robertson's equations; central finite differences
of the solve itself at tight tolerances for the gradients (a mechanistic model and a UDE with a network,
a learned initial state and a per-experiment constant).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ude_cli.engines.torchdiffeq import SolverError
from ude_cli.errors import ConfigError

from .helpers import config, model, write_csv
from .test_compiled import decay, perturbed, relative, rich_config

ROOT = Path(__file__).resolve().parents[1]


def robertson(tmp_path, method: str = "bdf", rtol: float = 1e-8, atol: float = 1e-16, **overrides) -> dict:
    import yaml

    raw = yaml.safe_load((ROOT / "configs/robertson.yaml").read_text())
    raw["data"]["file"] = str(ROOT / "data/robertson.csv")
    raw["solver"] = {"method": method, "rtol": rtol, "atol": atol, **overrides}
    raw["model"]["parameters"]["k2"]["init"] = 3e7
    raw["model"]["parameters"]["k3"]["init"] = 1e4
    return raw


def radau(times: np.ndarray, rtol: float) -> np.ndarray:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", ROOT / "data/generate_robertson.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen.truth(times[1:], rtol=rtol, atol=1e-20)


def test_bdf_solves_robertson_as_scipys_radau(tmp_path):
    m = model(robertson(tmp_path), tmp_path)
    assert m.engine == "compiled" and m.compiled.method == "bdf"
    with torch.no_grad():
        (sol,) = m()
    ours = sol[1:, 0, 0, :].numpy()
    times = m.groups[0].times
    # against scipy's Radau at rtol 1e-8 (and the exact Jacobian): every state, B (~1e-10 at the end)
    # included, point by point to a few tens of times the relative tolerance (BDF's global error)
    reference = radau(times, 1e-8)
    err = np.abs(ours - reference) / np.abs(reference)
    assert err.max() < 1e-6, err.max()
    # and it converges: at rtol 1e-10, within 3e-8 of Radau at rtol 1e-12
    tight = model(robertson(tmp_path, rtol=1e-10, atol=1e-20), tmp_path)
    with torch.no_grad():
        (sol,) = tight()
    err = np.abs(sol[1:, 0, 0, :].numpy() - radau(times, 1e-12)) / np.abs(radau(times, 1e-12))
    assert err.max() < 3e-8, err.max()
    assert m.rhs.nfe > 0


def central_differences(m, parameters: list[tuple[torch.Tensor, int]], h: float = 1e-6) -> np.ndarray:
    def objective():
        with torch.no_grad():
            sols = m()
        weights = [torch.linspace(-1, 2, s.numel(), dtype=s.dtype).reshape(s.shape) for s in sols]
        return float(sum((w * (s + s * s)).sum() for w, s in zip(weights, sols, strict=True)))

    out = []
    for p, i in parameters:
        at = tuple(int(j) for j in np.unravel_index(i, tuple(p.shape)))
        x = float(p.data[at])
        step = h * max(1.0, abs(x))
        p.data[at] = x + step
        plus = objective()
        p.data[at] = x - step
        minus = objective()
        p.data[at] = x
        out.append((plus - minus) / (2 * step))
    return np.array(out)


def analytic(m, parameters: list[tuple[torch.Tensor, int]]) -> np.ndarray:
    m.zero_grad(set_to_none=True)
    sols = m()
    weights = [torch.linspace(-1, 2, s.numel(), dtype=s.dtype).reshape(s.shape) for s in sols]
    sum((w * (s + s * s)).sum() for w, s in zip(weights, sols, strict=True)).backward()
    return np.array([float(p.grad[tuple(int(j) for j in np.unravel_index(i, tuple(p.shape)))])
                     for p, i in parameters])


def test_bdf_gradient_of_robertson_is_the_finite_differences(tmp_path):
    m = model(robertson(tmp_path, rtol=1e-11, atol=1e-20), tmp_path)
    raw = m.parameters_.raw
    parameters = [(raw["k2"], 0), (raw["k3"], 0)]
    ours, fd = analytic(m, parameters), central_differences(m, parameters, h=1e-5)
    assert np.all(np.abs(ours - fd) <= 1e-5 * np.abs(fd) + 1e-8), (ours, fd)


def test_bdf_gradient_of_a_ude_is_the_finite_differences(tmp_path):
    """Network weights and biases, a learned positive parameter, a learned initial state, two experiments
    with their own constant, two starts: every input of the solve."""
    raw = rich_config(tmp_path, "bdf")
    raw["solver"].update(rtol=1e-11, atol=1e-13)
    m = perturbed(model(raw, tmp_path, n_starts=2))
    named = dict(m.named_parameters())
    parameters = [(p, i) for p in named.values() for i in {0, p.numel() // 2, p.numel() - 1}]
    assert len(named) >= 6
    ours, fd = analytic(m, parameters), central_differences(m, parameters)
    assert np.all(np.abs(ours - fd) <= 1e-5 * np.abs(fd).max() + 1e-7), np.abs(ours - fd).max()
    # the same model solved by dopri5 (compiled) agrees to the tolerances
    d = perturbed(model(rich_config(tmp_path, "dopri5"), tmp_path, n_starts=2))
    (a,), (b,) = d(), m()
    assert relative(b.detach(), a.detach()) < 1e-5


def test_auto_switches_to_bdf_on_robertson_and_says_why(tmp_path):
    m = model(robertson(tmp_path, method="auto", max_steps=100_000), tmp_path)
    with torch.no_grad():
        (sol,) = m()
    choice = m.solver_choice()
    assert choice["solver_method"] == "bdf"
    assert "auto switched from dopri5 to bdf" in choice["solver_method_reason"]
    assert "stability limit" in choice["solver_method_reason"] or "failed" in choice["solver_method_reason"]
    reference = radau(m.groups[0].times, 1e-12)
    assert (np.abs(sol[1:, 0, 0].numpy() - reference) / reference).max() < 2e-6


def test_auto_switches_when_dopri5_fails_later_in_a_fit(tmp_path):
    """Not stiff at the start (the probe passes); parameters that make it stiff later: dopri5 fails on
    max_steps, bdf solves the same call, and the solves after it."""
    m = model(decay(tmp_path, method="auto", max_steps=200), tmp_path)
    m()
    assert m.solver_choice()["solver_method"] == "dopri5"
    with torch.no_grad():
        m.parameters_.raw["k"].fill_(1e4)  # y' = -1e4 y: dopri5 needs ~1,500 steps per output interval
    (sol,) = m()
    choice = m.solver_choice()
    assert choice["solver_method"] == "bdf" and "dopri5 failed" in choice["solver_method_reason"]
    assert "max_steps = 200" in choice["solver_method_reason"]
    assert float(sol[1, 0, 0, 0].detach()) == pytest.approx(2.0 * np.exp(-1e4 * 0.5), abs=1e-9)


def test_auto_on_a_non_stiff_model_is_dopri5_to_the_bit(tmp_path):
    m_auto = model(decay(tmp_path, method="auto"), tmp_path)
    m_dopri = model(decay(tmp_path), tmp_path)
    (a,), (b,) = m_auto(), m_dopri()
    assert torch.equal(a, b)
    assert m_auto.solver_choice()["solver_method"] == "dopri5"
    assert "showed no stiffness" in m_auto.solver_choice()["solver_method_reason"]


def test_bdf_dense_predictions_and_the_mechanism_alone(tmp_path):
    m = model(robertson(tmp_path), tmp_path)
    (t, y), = m.dense(n_points=50)
    assert np.all(np.isfinite(y)) and abs(y[-1, 0].sum() - 1) < 1e-6  # A + B + C is conserved
    u = perturbed(model(rich_config(tmp_path, "bdf"), tmp_path))
    u.rhs.networks_enabled = False
    mechanism = u()
    u.rhs.networks_enabled = True
    assert not torch.equal(mechanism[0], u()[0])


def test_bdf_failure_names_the_time_the_state_and_what_to_try(tmp_path):
    t = np.linspace(0, 2, 5)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), 1.0) for a in t])
    raw = {"data": {"file": "d.csv", "columns": {"y": "y"}},
           "model": {"states": ["y"], "equations": {"y": "k*y*y"}, "parameters": {"k": {"init": 1.0}}},
           "solver": {"method": "bdf", "max_steps": 500}}  # y = 1/(1 - t): blows up at t = 1
    with pytest.raises(SolverError) as info:
        model(raw, tmp_path)()
    text = str(info.value)
    assert "CVODES" in text and "where y = " in text
    reached = float(text.split("it reached t = ")[1].split(",")[0])
    assert 0.99 < reached <= 1.0
    assert "solver.max_steps" in info.value.hint


@pytest.mark.parametrize("engine", ["compiled", "torchdiffeq"])
def test_dopri5_failure_names_the_time_and_the_state(tmp_path, engine):
    raw = decay(tmp_path, max_steps=10, rtol=1e-12, atol=1e-14, engine=engine)
    raw["model"]["parameters"]["k"]["init"] = 40.0
    with pytest.raises(SolverError) as info:
        model(raw, tmp_path)()
    assert " t = " in info.value.message and "where y = " in info.value.message
    t = float(info.value.message.split(" t = ")[1].split(",")[0])
    assert 0 <= t < 4  # somewhere in the data's span
    assert "solver.method: bdf" in info.value.hint


def test_bdf_needs_the_compiled_engine(tmp_path):
    with pytest.raises(ConfigError, match="compiled engine only"):
        config(decay(tmp_path, method="bdf", engine="torchdiffeq"), tmp_path)
    with pytest.raises(ConfigError, match="compiled engine only"):
        config(decay(tmp_path, method="bdf", adjoint=True), tmp_path)
    assert model(decay(tmp_path, method="auto", engine="torchdiffeq"), tmp_path).solver_choice()["solver_method"] == "dopri5"


@pytest.mark.slow
def test_robertson_rates_are_recovered_within_one_percent():
    """configs/robertson.yaml: k2, k3 from a start a factor 3 off, 1 % multiplicative noise, log loss."""
    from ude_cli.api import fit

    result = fit(ROOT / "configs/robertson.yaml")
    values = result.parameters.set_index("name")["value"]
    assert abs(values["k2"] / 3e7 - 1) < 0.01 and abs(values["k3"] / 1e4 - 1) < 0.01, values
    assert result.metrics["solver_method"] == "bdf"


def stiff_linear(tmp_path, **solver) -> dict:
    """y' = -1000 (y - cos t): dopri5 succeeds, held at its stability limit (~1,200 steps over [0, 4])."""
    t = np.linspace(0, 4, 9)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), float(np.cos(a))) for a in t])
    return {"data": {"file": "d.csv", "columns": {"y": "y"}},
            "model": {"states": ["y"], "equations": {"y": "-k*(y - cos(t))"},
                      "parameters": {"k": {"init": 1000.0}}, "initial": {"y": 1.0}},
            "solver": solver}


def test_check_says_when_the_initial_guess_is_stiff(tmp_path):
    from ude_cli.api import check

    problem = check(config(stiff_linear(tmp_path, method="dopri5"), tmp_path))
    (note,) = [w for w in problem.warnings if "stiff" in w]
    assert "solver.method: bdf (or auto) solves them faster than dopri5" in note and "stability limit" in note
    problem = check(config(stiff_linear(tmp_path, method="auto"), tmp_path))
    assert any("solver.method auto solves them with bdf" in w for w in problem.warnings)
    problem = check(config(decay(tmp_path), tmp_path))
    assert not any("stiff" in w for w in problem.warnings)


@pytest.mark.slow
def test_robertson_ude_trains_to_the_noise_floor():
    """configs/robertson_ude.yaml: the slow reaction's rate k1*A learned by a network, the fast ones known.
    The noise floor: the log-scale loss of the true model on the data (9.1e-5)."""
    from ude_cli.api import fit
    from ude_cli.config import load_config
    from ude_cli.fitting.model import UDEModel
    from ude_cli.likelihood.objective import Objective
    from ude_cli.problem import resolve

    truth_cfg = load_config(ROOT / "configs/robertson.yaml")
    truth = UDEModel(resolve(truth_cfg))
    with torch.no_grad():
        truth.parameters_.raw["k2"].fill_(float(np.log(3e7)))
        truth.parameters_.raw["k3"].fill_(float(np.log(1e4)))
        floor = float(Objective(truth, truth_cfg.training.loss).loss(truth())[0])
    result = fit(ROOT / "configs/robertson_ude.yaml")
    assert result.metrics["loss"] < 1.05 * floor, (result.metrics["loss"], floor)
    a = np.linspace(0.02, 1.0, 50)  # the range of A in the data
    with torch.no_grad():
        rate = result.model.rhs.networks["r"](torch.tensor(a[None, :, None])).numpy().ravel()
    assert np.max(np.abs(rate - 0.04 * a) / (0.04 * a)) < 0.03


def test_auto_decides_on_the_data_grid_before_a_dense_prediction(tmp_path):
    """A model read back from a run (ude report, ude predict) predicts before it has solved on the data's
    grid: auto probes there first, so a stiff model's dense grid is solved by bdf, not torchdiffeq's dopri5."""
    m = model(robertson(tmp_path, method="auto"), tmp_path)
    (t, y), = m.dense(n_points=30)
    assert m.solver_choice()["solver_method"] == "bdf"
    assert np.all(np.isfinite(y)) and abs(y[-1, 0].sum() - 1) < 1e-6


def test_auto_switches_when_a_later_solve_grows_stiff_without_failing(tmp_path):
    """The probe passes; then parameters for which dopri5 still succeeds, held at its stability limit
    (~1,200 steps): auto looks again (4 times the steps) and the next solves are bdf's."""
    raw = stiff_linear(tmp_path, method="auto")
    raw["model"]["parameters"]["k"]["init"] = 1.0
    m = model(raw, tmp_path)
    m()
    assert m.solver_choice()["solver_method"] == "dopri5"
    with torch.no_grad():
        m.parameters_.raw["k"].fill_(1000.0)
    (stiff_dopri5,) = m()  # dopri5's solution: it met its tolerance
    choice = m.solver_choice()
    assert choice["solver_method"] == "bdf" and "in a later solve of the fit" in choice["solver_method_reason"]
    (by_bdf,) = m()
    assert relative(by_bdf.detach(), stiff_dopri5.detach()) < 1e-4


def test_times_over_decades_are_predicted_and_drawn_on_a_log_scale(tmp_path):
    from ude_cli.fitting.model import dense_grid, log_time_threshold

    times = np.concatenate([[0.0], np.logspace(-4, 5, 40)])
    assert log_time_threshold(times, 0.0) == pytest.approx(1e-4)
    grid = dense_grid(0.0, 1e5, 50, times)
    assert grid[0] == 0 and grid[1] == pytest.approx(1e-4) and grid[-1] == pytest.approx(1e5)
    assert np.allclose(np.diff(np.log(grid[1:])), np.log(1e9) / 48)  # log-spaced after t0
    assert log_time_threshold(np.linspace(0, 4, 9), 0.0) is None  # 0.5 to 4: one decade
    assert np.array_equal(dense_grid(0.0, 4.0, 9, np.linspace(0, 4, 9)), np.linspace(0, 4, 9))
    assert log_time_threshold(np.array([1900.0, 1901, 1920]), 1900.0) is None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ude_cli.plots import label_time_axis

    for raw, scale in ((robertson(tmp_path), "symlog"), (decay(tmp_path), "linear")):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        label_time_axis(ax, model(raw, tmp_path).problem)
        assert ax.get_xscale() == scale
        plt.close(fig)


def test_auto_reports_both_failures_and_keeps_dopri5_when_bdf_fails_too(tmp_path):
    """y' = -sqrt(y) reaches 0 at t = 2, then the square root of a negative value: no method solves past it,
    and that is no sign of stiffness."""
    t = np.linspace(0, 3, 4)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), 1.0) for a in t])
    raw = {"data": {"file": "d.csv", "columns": {"y": "y"}},
           "model": {"states": ["y"], "equations": {"y": "-k*sqrt(y)"}, "parameters": {"k": {"init": 1.0}}},
           "solver": {"method": "auto"}}
    m = model(raw, tmp_path)
    with pytest.raises(SolverError) as info:
        m()
    text = info.value.message
    assert text.startswith("the solver's step size underflowed, at t = ")
    assert "bdf, tried next by solver.method: auto, failed too: the stiff solver (CVODES BDF) failed" in text
    assert float(text.split("it reached t = ")[1].split(",")[0]) == pytest.approx(2.0, abs=0.01)
    assert m.solver_choice()["solver_method"] == "dopri5"


def test_fit_with_auto_says_which_method_solved_and_why(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from ude_cli.cli import app

    raw = robertson(tmp_path, method="auto")
    raw["model"]["parameters"]["k2"]["init"] = 1e7
    raw["training"]["stages"] = [{"optimizer": "lbfgs", "iterations": 3}]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--no-plots"])
    assert result.exit_code == 0, result.output
    summary = [line for line in result.output.splitlines() if line.startswith("train ")]
    assert summary and "auto switched from dopri5 to bdf: of " in " ".join(result.output.split())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["solver_method"] == "bdf" and "stability limit" in metrics["solver_method_reason"]


def test_auto_solves_a_blown_up_trial_point_once_with_bdf_without_switching(tmp_path):
    """A later solve that dopri5 fails at a trial point whose solution runs far beyond the data (a line search
    overshooting): bdf solves that call, and dopri5 stays the method (switching made every later solve bdf's:
    321 s against 10 s on lynx_hare_ude). Here x' = a x, y' = -x y: with a = 3, x reaches 1.6e5 (the data: about
    1.5) and y's decay rate with it, which holds dopri5 at its stability limit."""
    t = np.linspace(0, 4, 9)
    write_csv(tmp_path / "d.csv", "t,x,y", [(float(a), float(np.exp(0.1 * a)), float(np.exp(-(np.exp(0.1 * a) - 1) / 0.1)))
                                            for a in t])
    raw = {"data": {"file": "d.csv", "columns": {"x": "x", "y": "y"}},
           "model": {"states": ["x", "y"], "equations": {"x": "a*x", "y": "-x*y"}, "parameters": {"a": {"init": 0.1}}},
           "solver": {"method": "auto", "max_steps": 200}}
    m = model(raw, tmp_path)
    m()
    assert m.solver_choice()["solver_method"] == "dopri5"
    with torch.no_grad():
        m.parameters_.raw["a"].fill_(3.0)
    (sol,) = m()
    choice = m.solver_choice()
    assert choice["solver_method"] == "dopri5", choice
    assert "without switching" in choice["solver_method_reason"]
    assert float(sol[-1, 0, 0, 0].detach()) == pytest.approx(np.exp(12.0), rel=1e-4)  # bdf's solution of that call


#: a point of Borghans_BiophysChem1997 found by bench/borghans_global.py (CMA-ES): dopri5 solves it (about 141 000
#: evaluations), its steps look stiff to auto, and CVODES's Newton iteration fails at t = 0
BORGHANS_POINT = {"K2": 0.6175534620890005, "K_par": 5.90175698902674, "Ka": 0.001048520970172738,
                  "Kd": 1716.0712167118932, "Kf": 4.9694706964724285, "Kp": 9.874634087336268,
                  "Ky": 55602.52134047405, "Kz": 1594.9172733579544, "Vd": 39.6447229261174,
                  "Vm2": 58372.16961670821, "Vm3": 115.29098309116902, "Vp": 0.17996963752153147,
                  "beta_par": 0.00199312324942851, "epsilon_par": 97.87361671243305,
                  "init_A_state": 0.6778356894083406, "init_Y_state": 0.9805585800602376,
                  "init_Z_state": 0.9202857580729868, "n_par": 1164.1213621851532, "offset": 0.25928333677764737,
                  "scale": 30.93447399119586, "v0": 0.0010001848733362639, "v1": 0.0014631497093224417}


def test_auto_keeps_dopri5_where_it_looks_stiff_but_bdf_fails(tmp_path):
    """The fit used to stop at its initial guess ("the stiff solver (CVODES BDF) failed ... at t = 0") although
    dopri5 had solved it: now dopri5's solution stands, dopri5 stays the method, and the reason says so."""
    import yaml

    from ude_cli.petab import import_problem

    folder = Path(__file__).parent / "data/petab/benchmark/Borghans_BiophysChem1997"
    config = import_problem(folder / "Borghans_BiophysChem1997.yaml", tmp_path / "b")
    raw = yaml.safe_load(config.read_text())
    for name, value in BORGHANS_POINT.items():
        raw["model"]["parameters"][name]["init"] = value
    assert raw["solver"]["method"] == "auto"
    m = model(raw, tmp_path / "b")
    with torch.no_grad():
        (sol,) = m()
    assert bool(torch.isfinite(sol).all())
    choice = m.solver_choice()
    assert choice["solver_method"] == "dopri5"
    assert choice["solver_method_reason"].startswith("solver.method: auto kept dopri5: the solution looked stiff, "
                                                     "but bdf failed (the stiff solver (CVODES BDF) failed")
    forced = dict(raw, solver={**raw["solver"], "method": "dopri5"})
    with torch.no_grad():
        (again,) = model(forced, tmp_path / "b")()
    assert torch.equal(sol, again)  # dopri5's own solution, to the bit
