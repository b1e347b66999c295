"""Batches, sweeps, multistart, Dask, determinism and regression comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ude_cli import fit
from ude_cli.cli import app, exits

from .helpers import config

runner = CliRunner()

DECAY = """
name: {name}
data: {{file: d.csv, columns: {{y: conc}}}}
model:
  states: [y]
  equations: {{y: "-k*y"}}
  parameters: {{k: {{init: {k}, positive: true}}}}
training:
  stages: [{{optimizer: lbfgs, iterations: 10}}]
"""


@pytest.fixture
def decays(write):
    t = np.linspace(0, 5, 11)
    write("d.csv", "t,conc\n" + "".join(f"{a},{2 * np.exp(-0.7 * a):.8f}\n" for a in t))
    good = [write(f"{n}.yaml", DECAY.format(name=n, k=k)) for n, k in (("a", 0.3), ("b", 1.5))]
    bad = write("bad.yaml", DECAY.format(name="bad", k=-1))
    return good, bad


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output + result.stderr
    return result


def test_batch_keeps_going_past_a_failure_and_reports_json(decays, tmp_path, monkeypatch):
    (a, b), bad = decays
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", a, bad, b, "--json", "--no-plots")
    assert result.exit_code == exits.BAD_INPUT
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["status"] for o in objects] == ["ok", "failed", "ok"]
    assert objects[0]["parameters"]["k"] == pytest.approx(0.7, rel=1e-4)
    assert objects[1]["error"]["kind"] == "bad_input"
    assert "init must be > 0 for a positive parameter" in objects[1]["error"]["message"]
    assert (tmp_path / "runs/a/params.csv").exists() and (tmp_path / "runs/b/params.csv").exists()
    assert "error: " in result.stderr


def test_summary_table_for_several_configs(decays, tmp_path, monkeypatch):
    (a, b), _ = decays
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", a, b, "--no-plots")
    assert result.exit_code == 0
    assert "2 run(s): 2 ok, 0 failed" in result.output


def test_dask_two_workers_give_the_same_results_as_a_local_run(decays, tmp_path, monkeypatch):
    (a, b), bad = decays
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", a, bad, b, "--jobs", "2", "--json", "--no-plots")
    assert result.exit_code == exits.BAD_INPUT
    objects = {o["config"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert objects[str(bad)]["status"] == "failed"
    log = result.stderr.splitlines()  # logs on stderr: the start, each finished fit, each failure
    assert log[0] == "fitting 3 run(s) on a local Dask cluster of 2 worker(s)"
    assert sorted(line.split(":")[0] for line in log[1:] if ": ok, loss " in line) == sorted([str(a), str(b)])
    assert any(line.startswith(f"error: {bad}") for line in log)
    local = fit(config(a.read_text(), tmp_path))
    dask_k = json.loads((tmp_path / "runs/a/params.json").read_text())[0]["value"]
    assert dask_k == local.values["k"]  # same machine, same seed: identical


def test_same_config_and_seed_give_identical_parameters(tmp_path, lv_csv):
    raw = {
        "data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
        "model": {"builtin": "lotka_volterra", "corrections": {"x": "U[0]"},
                  "parameters": {"alpha": 1.2, "beta": 0.8, "gamma": 0.7, "delta": 1.7}},
        "networks": {"U": {"inputs": ["x", "y"], "hidden": [4]}},
        "solver": {"method": "rk4", "step": 0.125},
        "training": {"warm_start_iterations": 10, "stages": [{"optimizer": "adam", "iterations": 5},
                                                             {"optimizer": "lbfgs", "iterations": 5}]},
    }
    first, second = fit(config(raw, tmp_path)), fit(config(raw, tmp_path))
    s1, s2 = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    raw["training"]["seed"] = 1
    third = fit(config(raw, tmp_path))
    assert not torch.equal(third.model.state_dict()["rhs.networks.U.weights.0"], s1["rhs.networks.U.weights.0"])


def test_multistart_records_every_start_and_the_spread(tmp_path, lv_csv):
    raw = {
        "data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
        "model": {"builtin": "lotka_volterra", "parameters": {"alpha": 1.0, "beta": 0.5, "gamma": 1.0, "delta": 1.0}},
        "solver": {"method": "rk4", "step": 0.125},
        "training": {"starts": 3, "warm_start_iterations": 20, "stages": [{"optimizer": "lbfgs", "iterations": 10}]},
    }
    result = fit(config(raw, tmp_path))
    starts = result.starts
    assert list(starts.columns[:2]) == ["start", "loss"] and len(starts) == 3
    assert starts["loss"].is_monotonic_increasing
    assert sorted(starts["parameter_seed"]) == [0, 1, 2]
    assert result.metrics["starts"] == 3 and len(result.metrics["loss_per_start"]) == 3
    assert result.metrics["loss"] == min(result.metrics["loss_per_start"])
    row = result.parameters.set_index("name").loc["alpha"]
    assert row["start_min"] <= row["value"] <= row["start_max"] and row["start_std"] >= 0
    out = result.save(tmp_path / "ms")
    assert (out / "starts.csv").exists()


def test_sweep_expands_the_grid(write, tmp_path):
    from ude_cli.batch.sweep import expand
    from ude_cli.errors import ConfigError

    text = DECAY.format(name="s", k=0.3) + "sweep:\n  training.loss: [mse, log]\n  solver.rtol: [1.0e-6, 1.0e-8]\n"
    points = expand(config(text, tmp_path))
    assert [name for name, _ in points] == ["loss=mse,rtol=1e-06", "loss=mse,rtol=1e-08", "loss=log,rtol=1e-06",
                                            "loss=log,rtol=1e-08"]
    assert points[3][1].training.loss.log and points[3][1].solver.rtol == 1e-8
    assert points[0][1].run_name == "s/loss=mse,rtol=1e-06"
    bad = DECAY.format(name="s", k=0.3) + "sweep:\n  training.nope: [1, 2]\n"
    with pytest.raises(ConfigError, match="sweep.training.nope: no field 'training.nope' in the config"):
        expand(config(bad, tmp_path))


def test_compare_detects_a_mismatch(decays, tmp_path):
    (a, _), _ = decays
    assert invoke("fit", a, "--out", tmp_path / "r1", "-q", "--no-plots").exit_code == 0
    assert invoke("fit", a, "--out", tmp_path / "r2", "-q", "--no-plots").exit_code == 0
    assert invoke("compare", tmp_path / "r1", tmp_path / "r2", "--rtol", "0").exit_code == 0
    expected = tmp_path / "exp.json"
    expected.write_text(json.dumps({"rtol": 1e-3, "parameters": {"k": 0.7}, "metrics": {"loss": {"value": 1.0}}}))
    result = invoke("compare", tmp_path / "r1", expected)
    assert result.exit_code == exits.MISMATCH
    assert "1 of 2 quantities differ" in result.stderr and "loss" in result.stderr


@pytest.mark.slow
def test_a_discover_section_runs_after_the_fit(tmp_path, monkeypatch):
    """configs/lotka_volterra.yaml + a discover: section: ude fit recovers x*y in both equations."""
    import yaml

    from .conftest import REPO

    raw = yaml.safe_load((REPO / "configs/lotka_volterra.yaml").read_text())
    raw["data"]["file"] = str(REPO / "data/lotka_volterra.csv")
    raw["discover"] = {"degree": 2}
    path = tmp_path / "lv.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", path, "--json", "--no-plots")
    assert result.exit_code == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["discovery"]["verdict"] == "recovered"
    text = (tmp_path / "runs/lotka_volterra/discovery/recovered.yaml").read_text()
    assert "x*y" in text
