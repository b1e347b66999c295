"""``ude predict``: forecasts of the UDE and the recovered model, changed values, multistart bands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ude_cli.cli import app, exits
from ude_cli.errors import ConfigError
from ude_cli.forecast import forecast, parse_assignments, ude_frame, write_forecast
from ude_cli.runs.load import load_run

from .discover_helpers import LV_Y0, lv_problem, lv_rhs, lv_truth, tiny_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("predict"))


def _true_recovered(run_dir):
    """Write RUN/discovery as if the recovered model were exactly the true LV model."""
    from ude_cli.config import load_config

    out = run_dir / "discovery"
    out.mkdir(exist_ok=True)
    raw = load_config(run_dir / "inputs" / "config.yaml").resolved()
    raw["data"]["file"] = "../inputs/" + raw["data"]["file"]
    raw["model"]["equations"] = {"x": "alpha*x + b*x*y", "y": "-gamma*y + d*x*y"}
    raw["model"]["parameters"].update({"b": {"init": -0.9}, "d": {"init": 1.8}})
    raw["networks"] = {}
    raw.pop("discover", None)
    (out / "recovered.yaml").write_text(yaml.safe_dump(raw))
    record = {"verdict": "recovered", "messages": ["test"], "success": True,
              "chosen": {"parameters": {"alpha": 1.3, "gamma": 0.8, "b": -0.9, "d": 1.8},
                         "initial": {"1": {"x": LV_Y0[0], "y": LV_Y0[1]}}}}
    (out / "discovery.json").write_text(json.dumps(record))


def test_parse_assignments():
    assert parse_assignments(["alpha=1.2", "x=0.5,y=2"], "--set") == {"alpha": 1.2, "x": 0.5, "y": 2.0}
    for bad in (["alpha"], ["alpha=x"], ["1a=2"], ["a=inf"]):
        with pytest.raises(ConfigError, match="--set: expected NAME=NUMBER"):
            parse_assignments(bad, "--set")


def test_forecast_ude_only(run_dir):
    run = load_run(run_dir)
    fc = forecast(run, until=8.0, n_points=81)
    assert set(fc.frame["model"]) == {"UDE"}
    assert fc.frame["time"].max() == pytest.approx(8.0)
    assert "no recovered model: run `ude discover RUN` to add it" in fc.notes
    # the forecast starts at the run's initial state
    first = fc.frame.iloc[0]
    assert (first["x"], first["y"]) == pytest.approx(LV_Y0, rel=1e-12)


def test_forecast_recovered_model_known_answer(run_dir):
    """With the true model as the recovered one, the forecast is the true solution."""
    _true_recovered(run_dir)
    run = load_run(run_dir)
    fc = forecast(run, until=12.0, n_points=121)
    rec = fc.frame[fc.frame["model"] == "recovered"]
    truth = lv_truth(rec["time"].to_numpy())
    np.testing.assert_allclose(rec[["x", "y"]].to_numpy(), truth, rtol=1e-5, atol=1e-6)
    # changed parameter values and initial states reach the recovered model
    fc = forecast(run, until=3.0, n_points=31, values={"d": 1.5}, initial={"x": 1.0})
    rec = fc.frame[fc.frame["model"] == "recovered"]
    from scipy.integrate import solve_ivp

    t = rec["time"].to_numpy()
    expected = solve_ivp(lambda s, u: lv_rhs(s, u, delta=1.5), (0, 3), [1.0, LV_Y0[1]], t_eval=t, method="DOP853",
                         rtol=1e-11, atol=1e-11).y.T
    np.testing.assert_allclose(rec[["x", "y"]].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    ude = fc.frame[fc.frame["model"] == "UDE"]
    assert ude.iloc[0]["x"] == pytest.approx(1.0)
    assert fc.notes[:2] == ["changed parameters: d = 1.5", "changed initial states: x(t0) = 1"]


def test_changed_mechanistic_parameter_changes_the_ude(run_dir):
    run = load_run(run_dir)
    base = forecast(run, until=2.0, n_points=21, recovered=False).frame
    changed = forecast(run, until=2.0, n_points=21, values={"alpha": 2.0}, recovered=False).frame
    assert changed["x"].iloc[-1] > base["x"].iloc[-1]  # faster prey growth
    assert run.model.parameter_values()["alpha"][0] == pytest.approx(1.3)  # the run's model is untouched


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"experiment": "2"}, "--experiment: no experiment '2'"),
    ({"values": {"alpah": 1.0}}, "--set alpah: unknown parameter 'alpah' (did you mean 'alpha'?)"),
    ({"initial": {"z": 1.0}}, "--initial z: unknown state 'z'"),
    ({"until": -1.0}, "--until: must be after the start of the experiments (0), got -1"),
])
def test_forecast_errors(run_dir, kwargs, message):
    run = load_run(run_dir)
    with pytest.raises(ConfigError) as err:
        forecast(run, **{"until": 5.0, **kwargs})
    assert message in str(err.value)


def test_multistart_band(tmp_path):
    """Three starts (different network seeds): the band spans them and holds the best start."""
    from ude_cli.fitting.model import UDEModel

    problem = lv_problem(tmp_path)
    model = UDEModel(problem, n_starts=3)
    frame = ude_frame(problem, model, until=3.0, experiments=[0], n_points=31, best=1)
    dense = model.dense(31, until=3.0)[0][1]
    np.testing.assert_allclose(frame["x"], dense[:, 1, 0])
    np.testing.assert_allclose(frame["x_lower"], dense[:, :, 0].min(axis=1))
    np.testing.assert_allclose(frame["y_upper"], dense[:, :, 1].max(axis=1))
    assert (frame["x_upper"] - frame["x_lower"]).max() > 1e-3
    single = ude_frame(problem, UDEModel(problem), 3.0, [0], 31, 0)
    np.testing.assert_array_equal(single["x_lower"], single["x_upper"])


def test_band_figure_and_files(tmp_path, run_dir):
    from ude_cli.fitting.model import UDEModel
    from ude_cli.forecast import Forecast

    problem = lv_problem(tmp_path)
    frame = ude_frame(problem, UDEModel(problem, n_starts=3), 8.0, [0], 81, 0)
    fc = Forecast(problem=problem, until=8.0, frame=frame, notes=["the band spans the 3 starts"],
                  changed={"until": 8.0})
    out = write_forecast(fc, tmp_path / "forecast", dpi=60)
    assert pd.read_csv(out / "forecast.csv").shape[0] == 81
    assert (out / "figures" / "forecast.png").stat().st_size > 1000
    assert (out / "figures" / "forecast.pdf").is_file()


def test_cli_predict(run_dir, tmp_path):
    result = runner.invoke(app, ["predict", str(run_dir), "--until", "7", "--points", "50", "--out",
                                 str(tmp_path / "fc")])
    assert result.exit_code == 0, result.output
    assert "UDE, experiment 1, t = 7:" in result.stdout
    frame = pd.read_csv(tmp_path / "fc" / "forecast.csv")
    assert frame["time"].max() == pytest.approx(7.0)
    assert json.loads((tmp_path / "fc" / "forecast.json").read_text())["until"] == 7.0
    result = runner.invoke(app, ["predict", str(run_dir), "--until", "7", "--set", "nope=1"])
    assert result.exit_code == exits.BAD_INPUT
    assert result.stderr.startswith("error: --set nope: unknown parameter 'nope'")
    result = runner.invoke(app, ["predict", str(run_dir)])
    assert result.exit_code == exits.USAGE


def test_cli_predict_json_is_one_document_on_stdout(run_dir, tmp_path):
    result = runner.invoke(app, ["predict", str(run_dir), "--until", "7", "--points", "50", "--out",
                                 str(tmp_path / "fc"), "--json", "--no-recovered"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    frame = pd.read_csv(tmp_path / "fc" / "forecast.csv")
    last = frame[frame["model"] == "UDE"].sort_values("time").iloc[-1]
    (final,) = doc["final"]
    assert final["model"] == "UDE" and final["time"] == pytest.approx(7.0)
    assert (final["x"], final["y"]) == (last["x"], last["y"])  # the same numbers as the CSV's last row
    assert doc["directory"] == str(tmp_path / "fc") and doc["changed"]["until"] == 7.0
    bad = runner.invoke(app, ["predict", str(run_dir), "--until", "7", "--set", "nope=1", "--json"])
    assert bad.exit_code == exits.BAD_INPUT and json.loads(bad.stdout)["status"] == "failed"


def test_with_verdict_none_the_refitted_mechanism_is_not_called_recovered(tmp_path_factory):
    run_dir = tiny_run(tmp_path_factory.mktemp("none"))
    _true_recovered(run_dir)
    path = run_dir / "discovery" / "discovery.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "verdict": "none"}))
    fc = forecast(load_run(run_dir), 7.0, n_points=30)
    assert set(fc.frame["model"]) == {"UDE", "mechanistic refit"}
    assert "ude discover recovered no term (verdict NONE): 'mechanistic refit' is the mechanism alone, refitted to " \
           "the data" in fc.notes
    from ude_cli.forecast import forecast_figure

    fig = forecast_figure(fc.problem, fc.frame, fc.changed, fc.notes)
    labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert any(label.startswith("mechanistic, refitted (no term recovered)") for label in labels), labels
    assert not any(label.startswith("recovered") for label in labels), labels


def _blowup_run(tmp_path, write):
    """dx/dt = a x^2 from 1: x = 1/(1 - a t), infinite at t = 1/a; a = 0.1 fitted on t in [0, 5] (sigma 0.02, so
    that se(a) is about 1e-3). A forecast to 9.9 is 1/(1 - 0.99) = 100 at the fit, but the draws with a > 0.101
    blow up before it."""
    from ude_cli.api import run_fit

    t = np.linspace(0, 5, 26)
    x = 1 / (1 - 0.1 * t) * (1 + 0.02 * np.sin(7 * t))
    write("d.csv", "t,x\n" + "".join(f"{a},{b}\n" for a, b in zip(t, x, strict=True)))
    path = write("c.yaml", """
        data: {file: d.csv, columns: {x: x}}
        model:
          states: [x]
          equations: {x: "a*x**2"}
          parameters: {a: {init: 0.08, positive: true}}
          initial: {x: 1}
        noise: {distribution: normal, sigma: {init: 0.02, fixed: true}}
        training: {seed: 1}
        """)
    _, out = run_fit(path, out=tmp_path / "run", plots=False, command=["ude", "fit", str(path)])
    return load_run(out)


def test_draws_that_blow_up_leave_the_fit_without_a_band_and_write_everything(tmp_path, write):
    run = _blowup_run(tmp_path, write)
    a = float(run.parameters.set_index("name").loc["a", "value"])
    fc = forecast(run, until=9.9, n_points=100)
    assert any(n.startswith("no band: some of the 200 draws of the learned values from their Wald distribution "
                            "cannot be simulated to t = 9.9") for n in fc.notes), fc.notes
    rows = fc.frame[fc.frame["model"] == "UDE"]
    assert rows["time"].max() == pytest.approx(9.9)
    assert rows["x"].iloc[-1] == pytest.approx(1 / (1 - a * 9.9), rel=1e-3)  # the fit's line, to the end
    out = write_forecast(fc, tmp_path / "fc")
    assert {p.name for p in out.iterdir()} == {"forecast.csv", "forecast.json", "figures"}
    assert (out / "figures" / "forecast.png").stat().st_size > 0


def test_the_figure_draws_what_the_data_measure_and_a_large_unobserved_state_is_no_runaway(tmp_path, write):
    """An SIR in counts (S = 9990 of 10000, unobserved) measured through cases = rho * I: the figure has a panel for
    each state and one for the cases with their data; S is no runaway (the bound counts the initial values)."""
    from scipy.integrate import solve_ivp

    from ude_cli.api import run_fit
    from ude_cli.discovery.extrapolate import RUNAWAY_FACTOR, runaway_bound
    from ude_cli.forecast import forecast_figure

    t = np.arange(0.0, 41.0, 2.0)
    sol = solve_ivp(lambda _, y: [-0.5 * y[0] * y[1] / 1e4, 0.5 * y[0] * y[1] / 1e4 - 0.2 * y[1]], (0, 40),
                    [9990, 10], t_eval=t, rtol=1e-10)
    cases = 0.1 * sol.y[1] * (1 + 0.05 * np.sin(5 * t))
    write("d.csv", "t,cases\n" + "".join(f"{a},{b}\n" for a, b in zip(t, cases, strict=True)))
    path = write("c.yaml", """
        data: {file: d.csv}
        model:
          states: [S, I]
          equations: {S: "-beta*S*I/10000", I: "beta*S*I/10000 - gam*I"}
          parameters: {beta: {init: 0.45, positive: true}, gam: {init: 0.2, positive: true},
                       rho: {init: 0.1, bounds: [0, 1]}}
          initial: {S: 9990, I: 10}
        observables: {cases: {formula: rho*I, column: cases, noise: lognormal}}
        training: {seed: 1}
        """)
    _, out = run_fit(path, out=tmp_path / "run", plots=False, command=["ude", "fit", str(path)])
    run = load_run(out)
    assert runaway_bound(run.problem) == pytest.approx(RUNAWAY_FACTOR * 9990)
    fc = forecast(run, until=80.0, n_points=100)
    assert not any("diverges" in n for n in fc.notes), fc.notes
    fig = forecast_figure(fc.problem, fc.frame, fc.changed, fc.notes)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert len(labels) == 3 and "cases" in labels[2], labels
    lines = [line for line in fig.axes[2].get_lines() if line.get_linestyle() == "None"]  # the data's markers
    assert len(lines) == 1 and len(lines[0].get_xdata()) == len(t)
