"""The registry of built-in models: each has equations that parse, a citation, and simulates."""

from __future__ import annotations

import pytest

from ude_cli.errors import ConfigError
from ude_cli.expressions import Namespace, parse_expression
from ude_cli.mechanistic import MODELS, get_model

REQUIRED = {"lotka_volterra", "logistic", "sir", "seir", "michaelis_menten", "damped_oscillator", "pk_oral"}


def test_required_models_are_registered():
    assert set(MODELS) >= REQUIRED


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_equations_parse_and_docstring_has_equations_and_citation(name):
    import importlib

    m = MODELS[name]
    ns = Namespace(states=tuple(m.states), parameters=tuple(m.parameters), constants=tuple(m.constants))
    for state, text in m.equations.items():
        expr = parse_expression(text)
        assert not expr.check_names(ns), (name, state)
    module = next(mod for mod in (importlib.import_module(f"ude_cli.mechanistic.{n}") for n in
                                  ("lotka_volterra", "logistic", "sir", "seir", "michaelis_menten", "oscillator",
                                   "pk_oral")) if mod.MODEL.name == name)
    doc = module.__doc__
    assert "Citation:" in doc
    for text in m.equations.values():
        assert text in doc, (name, text)


def test_unknown_model_suggests_the_nearest():
    with pytest.raises(ConfigError) as info:
        get_model("lotka_voltera", where="c.yaml: model.builtin")
    assert str(info.value).startswith("c.yaml: model.builtin: unknown built-in model 'lotka_voltera' "
                                      "(did you mean 'lotka_volterra'?); expected one of ")


def test_pk_model_matches_the_closed_form(tmp_path):
    """C(t) = dose*ka/(V*(ka-ke)) * (exp(-ke t) - exp(-ka t)) (R's SSfol)."""
    import numpy as np

    from .helpers import model, write_csv

    ka, ke, V, dose = 1.5, 0.09, 0.45, 4.0
    t = np.array([0.0, 0.5, 1, 2, 4, 8, 12, 24])
    c = dose * ka / (V * (ka - ke)) * (np.exp(-ke * t) - np.exp(-ka * t))
    write_csv(tmp_path / "pk.csv", "time,conc,dose", [(float(a), float(b), dose) for a, b in zip(t, c, strict=True)])
    raw = {"data": {"file": "pk.csv", "time": "time", "columns": {"C": "conc"}},
           "model": {"builtin": "pk_oral", "parameters": {"ka": ka, "ke": ke, "V": V},
                     "initial": {"depot": {"column": "dose"}, "C": 0}},
           "solver": {"rtol": 1e-10, "atol": 1e-10}}
    m = model(raw, tmp_path)
    (tt, y), = m.dense(n_points=100)
    exact = dose * ka / (V * (ka - ke)) * (np.exp(-ke * tt) - np.exp(-ka * tt))
    assert np.max(np.abs(y[:, 0, 1] - exact)) < 1e-7


def test_built_in_parameters_get_their_units_from_the_data(tmp_path):
    from ude_cli.config import config_from_dict
    from ude_cli.mechanistic.base import unit_text
    from ude_cli.problem import resolve

    assert unit_text("1/({y}·{t})", {"t": "day", "y": "lynx"}) == "1/(lynx·day)"
    assert unit_text("1/({y}·{t})", {}) == "1/([y]·time)"
    assert unit_text("{depot}/{C}", {"depot": "mg/kg", "C": "mg/L"}) == "(mg/kg)/(mg/L)"
    assert unit_text("{S}", {"S": "mM/L"}) == "mM/L"
    (tmp_path / "d.csv").write_text("days,hares,lynx\n0,30,4\n1,47,6\n2,70,10\n")
    cfg = config_from_dict({"data": {"file": "d.csv", "time": "days", "columns": {"x": "hares", "y": "lynx"},
                                     "units": {"days": "year", "lynx": "thousand lynx"}},
                            "model": {"builtin": "lotka_volterra", "parameters": {"gamma": {"unit": "per year"}}}},
                           path=tmp_path / "c.yaml")
    units = {name: p.unit for name, p in resolve(cfg).parameters.items()}
    assert units == {"alpha": "1/year", "beta": "1/((thousand lynx)·year)", "gamma": "per year",  # given wins
                     "delta": "1/([x]·year)"}
