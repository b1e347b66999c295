"""The hybrid right-hand side: mechanism + networks, held side by side."""

from __future__ import annotations

import torch

from .helpers import model

LV = {
    "data": {"file": "LV", "columns": {"x": "prey", "y": "predator"}},
    "model": {"builtin": "lotka_volterra",
              "parameters": {"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8}},
}


def _raw(lv_csv, **extra):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in LV.items()}
    raw["data"] = {**LV["data"], "file": str(lv_csv)}
    raw["model"] = {**LV["model"], **extra.pop("model", {})}
    raw.update(extra)
    return raw


def test_zero_networks_equal_the_mechanistic_model_exactly(tmp_path, lv_csv):
    plain = model(_raw(lv_csv), tmp_path)
    hybrid = model(_raw(lv_csv, model={"corrections": {"x": "U[0]", "y": "U[1]"}},
                        networks={"U": {"inputs": ["x", "y", "t"], "outputs": 2, "hidden": [8, 8]}}), tmp_path)
    with torch.no_grad():
        last_w, last_b = hybrid.rhs.networks["U"].weights[-1], hybrid.rhs.networks["U"].biases[-1]
        last_w.zero_()
        last_b.zero_()
        y = torch.rand(1, 5, 2, dtype=torch.float64) * 3
        t = torch.tensor(0.3, dtype=torch.float64)
        assert torch.equal(hybrid.rhs(t, y), plain.rhs(t, y))
        assert torch.equal(hybrid()[0], plain()[0])


def test_disabled_networks_give_the_mechanism(tmp_path, lv_csv):
    hybrid = model(_raw(lv_csv, model={"corrections": {"x": "U[0]", "y": "U[1]"}},
                        networks={"U": {"inputs": ["x", "y"], "outputs": 2, "final_scale": 1.0}}), tmp_path)
    plain = model(_raw(lv_csv), tmp_path)
    y = torch.rand(1, 3, 2, dtype=torch.float64)
    t = torch.tensor(0.0, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.equal(hybrid.rhs(t, y), plain.rhs(t, y))
        hybrid.rhs.networks_enabled = False
        assert torch.equal(hybrid.rhs(t, y), plain.rhs(t, y))


def test_one_network_feeds_several_equations_and_time_input(tmp_path, lv_csv):
    m = model(_raw(lv_csv, model={"corrections": {"x": "U[0]", "y": "-U[0] + U[1]*t"}},
                   networks={"U": {"inputs": ["t", "y"], "outputs": 2, "final_scale": 1.0}}), tmp_path)
    y = torch.rand(1, 4, 2, dtype=torch.float64)
    t = torch.tensor(1.5, dtype=torch.float64)
    with torch.no_grad():
        out = m.rhs.network_outputs(t, y)["U"]
        m.rhs.networks_enabled = False
        base = m.rhs(t, y)
        m.rhs.networks_enabled = True
        full = m.rhs(t, y)
    assert torch.allclose(full[..., 0] - base[..., 0], out[..., 0])
    assert torch.allclose(full[..., 1] - base[..., 1], -out[..., 0] + out[..., 1] * 1.5)


def test_neural_ode_is_the_hybrid_without_mechanism(tmp_path, lv_csv):
    raw = {"data": {"file": str(lv_csv), "columns": {"a": "prey", "b": "predator"}},
           "model": {"states": ["a", "b"], "equations": {"a": "f[0]", "b": "f[1]"}},
           "networks": {"f": {"inputs": ["a", "b"], "outputs": 2, "final_scale": 1.0}}}
    m = model(raw, tmp_path)
    y = torch.rand(1, 4, 2, dtype=torch.float64)
    t = torch.tensor(0.0, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(m.rhs(t, y), m.rhs.networks["f"](y))


def test_starts_are_independent_networks(tmp_path, lv_csv):
    m = model(_raw(lv_csv, model={"corrections": {"x": "U[0]", "y": "U[1]"}},
                   networks={"U": {"inputs": ["x", "y"], "outputs": 2, "final_scale": 1.0}}), tmp_path, n_starts=3)
    y = torch.rand(3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        out = m.rhs.networks["U"](y)
    assert out.shape == (3, 2, 2)
    assert not torch.allclose(out[0], out[1])


def test_neural_ode_fit_writes_a_run_without_parameters(tmp_path, lv_csv):
    from ude_cli import fit

    from .helpers import config

    raw = {"data": {"file": str(lv_csv), "columns": {"a": "prey", "b": "predator"}},
           "model": {"states": ["a", "b"], "equations": {"a": "f[0]", "b": "f[1]"}},
           "networks": {"f": {"inputs": ["a", "b"], "outputs": 2, "hidden": [4]}},
           "solver": {"method": "rk4", "step": 0.125},
           "training": {"warm_start_iterations": 5, "stages": [{"optimizer": "adam", "iterations": 3}]}}
    result = fit(config(raw, tmp_path))
    assert result.values == {} and len(result.parameters) == 0
    out = result.save(tmp_path / "run", plots=False)
    assert (out / "params.csv").read_text().startswith("name,kind,value,init")
