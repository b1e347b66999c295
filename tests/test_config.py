"""The config schema: defaults, shorthands, and one precise line per problem."""

from __future__ import annotations

import pytest

from ude_cli.config import config_from_dict, load_config
from ude_cli.errors import ConfigError, ProblemList

from .helpers import problem

BASE = {
    "data": {"file": "d.csv", "columns": {"x": "x"}},
    "model": {"states": ["x"], "equations": {"x": "-k*x"}, "parameters": {"k": 0.5}},
}


def lines(raw, label="c.yaml"):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, label=label)
    return info.value.lines()


def test_defaults_are_filled_in():
    cfg = config_from_dict(BASE)
    r = cfg.resolved()
    assert r["solver"] == {"method": "auto", "rtol": 1e-6, "atol": 1e-6, "step": None, "adjoint": False,
                           "dtype": "float64", "max_steps": 2000, "engine": "auto"}
    assert r["training"]["stages"] is None  # chosen at fit time: with or without the warm start
    from ude_cli.config import default_stages

    assert [s.optimizer for s in default_stages(warm_start=False)] == ["adam", "lbfgs"]
    assert [(s.optimizer, s.tolerance) for s in default_stages(warm_start=True)] == [("lbfgs", 1e-3)]
    assert r["model"]["parameters"]["k"]["init"] == 0.5


def test_every_problem_is_reported_once_with_its_place():
    raw = {**BASE, "trainig": {}, "solver": {"method": "dopri", "rtol": -1},
           "training": {"stages": [{"optimizer": "adam", "lr": -0.1, "iterations": 10}]}}
    assert lines(raw) == [
        "c.yaml: solver.method: must be one of dopri5, dopri8, bosh3, fehlberg2, adaptive_heun, euler, midpoint, "
        "heun2, heun3, rk4, explicit_adams, implicit_adams, bdf, auto, got 'dopri' (did you mean 'dopri5'?)",
        "c.yaml: solver.rtol: must be > 0, got -1",
        "c.yaml: training.stages[0].lr: must be > 0, got -0.1",
        "c.yaml: trainig: unknown key 'trainig' (did you mean 'training'?)",
    ]


def test_misspelt_nested_key_and_activation():
    raw = {**BASE, "networks": {"U": {"inputs": ["x"], "activaton": "tanh"}}}
    assert lines(raw) == ["c.yaml: networks.U.activaton: unknown key 'activaton' (did you mean 'activation'?)"]
    raw = {**BASE, "networks": {"U": {"inputs": ["x"], "activation": "rbff"}}}
    assert lines(raw) == ["c.yaml: networks.U.activation: must be one of tanh, relu, gelu, softplus, rbf, sigmoid, "
                          "silu, got 'rbff' (did you mean 'rbf'?)"]


def test_shorthands():
    raw = {**BASE, "model": {**BASE["model"], "initial": {"x": "learn"}}, "training": {"loss": "log"}}
    cfg = config_from_dict(raw)
    assert cfg.model.initial["x"].learn
    assert cfg.training.loss.log
    raw["training"] = {"loss": "lgo"}
    assert lines(raw) == ["c.yaml: training.loss: expected one of mse, scaled, log or a mapping, got 'lgo' "
                          "(did you mean 'log'?)"]


def test_t0_inside_initial():
    raw = {**BASE, "model": {**BASE["model"], "initial": {"t0": 0, "x": 1.0}}}
    cfg = config_from_dict(raw)
    assert cfg.model.t0 == 0 and cfg.model.initial["x"].value == 1.0


def test_yaml_errors_are_one_line(write):
    path = write("bad.yaml", "data: {file: x.csv\nmodel: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line ")
    assert "invalid YAML" in str(info.value)


def test_alias_bombs_and_huge_files_are_refused(write):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20))
    with pytest.raises(ConfigError, match="more than 100 aliases"):
        load_config(write("bomb.yaml", bomb))
    big = write("big.yaml", "# " + "x" * 1_100_000 + "\n")
    with pytest.raises(ConfigError, match="at most 1000000 are read"):
        load_config(big)


def test_cross_field_problems_are_all_reported(tmp_path):
    (tmp_path / "d.csv").write_text("t,x\n0,1\n1,0.5\n")
    raw = {
        "data": {"file": "d.csv", "columns": {"x": "x", "z": "z"}},
        "model": {"states": ["x", "w"], "equations": {"x": "-k*x + U[3] + q", "w": "x"},
                  "parameters": {"k": 0.5}, "initial": {"v": 1}},
        "networks": {"U": {"inputs": ["x", "y"], "outputs": 2}, "V": {"inputs": ["x"]}},
    }
    with pytest.raises(ProblemList) as info:
        problem(raw, tmp_path)
    label = str(tmp_path / "config.yaml")
    got = [line.replace(label, "C") for line in info.value.lines()]
    assert got == [
        "C: model.equations.x: unknown name 'q' in '-k*x + U[3] + q'; expected a state, parameter, constant, "
        "network or t; for a parameter, declare it under 'model.parameters' (q: {init: VALUE})",
        "C: model.equations.x: U[3] is out of range in '-k*x + U[3] + q': network 'U' has 2 outputs (indices 0 to 1)",
        "C: networks.V: network 'V' is not used in any equation; use it as V[0] (e.g. in model.corrections) or remove it",
        "C: networks.U.inputs[1]: unknown input 'y'; inputs are states (x, w), t, or parameters and constants",
        "C: data.columns.z: unknown state 'z'; states are: x, w",
        "C: model.initial.v: unknown state 'v'; states are: x, w",
        "C: model.initial.w: state 'w' has no data column, so its initial value must be given: {value: NUMBER} "
        "(add learn: true to fit it)",
    ]


def test_builtin_needs_its_constants_and_knows_its_parameters(tmp_path):
    (tmp_path / "d.csv").write_text("t,I\n0,1\n1,2\n")
    raw = {"data": {"file": "d.csv", "columns": {"I": "I"}},
           "model": {"builtin": "sir", "parameters": {"bta": 1.0}, "initial": {"S": 99, "R": 0}}}
    with pytest.raises(ProblemList) as info:
        problem(raw, tmp_path)
    got = [line.split(": ", 1)[1] for line in info.value.lines()]
    assert got == [
        "model.constants: the built-in model 'sir' needs constant 'N' (population size); add it under "
        "model.constants, e.g. {N: 100}",
        "model.parameters.bta: 'bta' is not a parameter of 'sir' (did you mean 'beta'?); its parameters are: "
        "beta, gamma",
    ]
