"""The compiled engine (CasADi) against torchdiffeq and against analytic answers.

Fixed-step methods must give torchdiffeq's numbers (same grid, same tableau) to rounding; dopri5
must be as close to the converged solution and gradient as torchdiffeq's dopri5 is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ude_cli.engines.torchdiffeq import SolverError
from ude_cli.errors import ConfigError

from .helpers import config, model, write_csv


def solutions_and_gradients(m, engine: str):
    """Every group's solution and the gradient of a fixed function of it with respect to every parameter."""
    m.engine = engine
    m.zero_grad(set_to_none=True)
    sols = m()
    weights = [torch.linspace(-1, 2, s.numel(), dtype=s.dtype).reshape(s.shape) for s in sols]
    sum((w * (s + s * s)).sum() for w, s in zip(weights, sols, strict=True)).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return torch.cat([s.detach().flatten() for s in sols]), grads


def perturbed(m, seed: int = 0):
    """Starts that differ (each start's networks are seeded apart; parameters get noise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def rich_config(tmp_path, method: str, activation: str = "tanh", step: float | None = None) -> dict:
    """Two experiments with a per-experiment constant, a learned initial state, a learned positive
    parameter, and a network that also reads time: every input the compiled graph has."""
    rows = []
    for exp, (a, u0) in enumerate([(0.5, 1.0), (1.5, 0.6)]):
        for t in np.linspace(0, 3, 7):
            rows.append((f"e{exp}", float(t), float(u0 * np.exp(-0.4 * t)), float(0.3 + 0.1 * t), a))
    write_csv(tmp_path / "d.csv", "exp,t,u,v,a", rows)
    solver = {"method": method, "rtol": 1e-7, "atol": 1e-9}
    if step:
        solver["step"] = step
    return {
        "data": {"file": "d.csv", "time": "t", "experiment": "exp", "columns": {"u": "u", "v": "v"}},
        "model": {
            "states": ["u", "v"],
            "parameters": {"k": {"init": 0.4, "positive": True}, "c": {"init": 0.2, "fixed": True}},
            "constants": {"a": {"column": "a"}},
            "equations": {"u": "-k*u + a*N[0]", "v": "c*u - v*v/(1 + u*u) + max(N[1], -1) + sin(t)*0.01"},
            "initial": {"u": {"learn": True, "positive": True}},
        },
        "networks": {"N": {"inputs": ["u", "t", "v"], "outputs": 2, "hidden": [6, 5], "activation": activation,
                           "final_scale": 0.5}},
        "solver": solver,
    }


@pytest.mark.parametrize("method", ["rk4", "midpoint", "euler"])
def test_fixed_step_methods_give_torchdiffeqs_numbers(tmp_path, method):
    m = perturbed(model(rich_config(tmp_path, method, step=0.05), tmp_path, n_starts=3))
    assert m.engine == "compiled"
    sol_t, grad_t = solutions_and_gradients(m, "torchdiffeq")
    nfe_t = m.rhs.nfe
    sol_c, grad_c = solutions_and_gradients(m, "compiled")
    assert relative(sol_c, sol_t) < 1e-12
    assert grad_c.keys() == grad_t.keys() and len(grad_c) >= 6  # networks, k, learned initial state
    for name in grad_t:
        assert relative(grad_c[name], grad_t[name]) < 1e-10, name
    assert m.rhs.nfe - nfe_t == nfe_t  # the same right-hand-side evaluations, counted alike


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "softplus", "rbf", "sigmoid", "silu"])
def test_every_activation_is_torchs(tmp_path, activation):
    m = perturbed(model(rich_config(tmp_path, "rk4", activation, step=0.1), tmp_path))
    sol_t, grad_t = solutions_and_gradients(m, "torchdiffeq")
    sol_c, grad_c = solutions_and_gradients(m, "compiled")
    assert relative(sol_c, sol_t) < 1e-12
    for name in grad_t:
        assert relative(grad_c[name], grad_t[name]) < 1e-9, name


def decay(tmp_path, **solver):
    t = np.linspace(0, 4, 9)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), float(2.0 * np.exp(-0.7 * a))) for a in t])
    return {"data": {"file": "d.csv", "columns": {"y": "y"}},
            "model": {"states": ["y"], "equations": {"y": "-k*y"}, "parameters": {"k": {"init": 0.7}}},
            "solver": {"method": "dopri5", **solver}}


def test_dopri5_solution_and_gradient_match_the_analytic_ones(tmp_path):
    m = model(decay(tmp_path, rtol=1e-9, atol=1e-12), tmp_path)
    assert m.engine == "compiled"
    (sol,) = m()
    t = torch.tensor(m.groups[0].times)
    exact = 2.0 * torch.exp(-0.7 * t)
    assert relative(sol[:, 0, 0, 0].detach(), exact) < 1e-8
    sol[:, 0, 0, 0].sum().backward()  # d/dk sum 2 exp(-k t) = -sum 2 t exp(-k t)
    grad = m.parameters_.raw["k"].grad
    assert abs(float(grad) + float((2.0 * t * torch.exp(-0.7 * t)).sum())) < 1e-7


@pytest.mark.parametrize("name", ["lotka_volterra_learn_gamma", "lynx_hare_ude"])
def test_dopri5_gradient_is_as_accurate_as_torchdiffeqs(name):
    """Against the converged gradient (torchdiffeq at rtol 1e-11): the compiled gradient of the accepted
    steps is within a few times torchdiffeq's own error at the configured tolerance."""
    from ude_cli.config import load_config
    from ude_cli.fitting.model import UDEModel
    from ude_cli.problem import resolve

    def build(rtol):
        cfg = load_config(f"configs/{name}.yaml")
        cfg = cfg.model_copy(update={"solver": cfg.solver.model_copy(update={"rtol": rtol, "atol": rtol})})
        return perturbed(UDEModel(resolve(cfg)))

    sol_ref, grad_ref = solutions_and_gradients(build(1e-11), "torchdiffeq")
    sol_t, grad_t = solutions_and_gradients(build(1e-6), "torchdiffeq")
    sol_c, grad_c = solutions_and_gradients(build(1e-6), "compiled")
    ref = torch.cat([g.flatten() for g in grad_ref.values()])
    err_t = relative(torch.cat([g.flatten() for g in grad_t.values()]), ref)
    err_c = relative(torch.cat([g.flatten() for g in grad_c.values()]), ref)
    assert err_c < max(3 * err_t, 1e-6), (err_c, err_t)
    assert relative(sol_c, sol_ref) < 3e-5 and relative(sol_t, sol_ref) < 3e-5


def test_engine_follows_the_config(tmp_path):
    assert model(decay(tmp_path), tmp_path).engine == "compiled"
    assert model(decay(tmp_path, engine="torchdiffeq"), tmp_path).engine == "torchdiffeq"
    assert model(decay(tmp_path, adjoint=True), tmp_path).engine == "torchdiffeq"
    assert model(decay(tmp_path, method="bosh3"), tmp_path).engine == "torchdiffeq"
    big = decay(tmp_path)
    big["model"]["equations"]["y"] = "-k*y + N"
    big["networks"] = {"N": {"inputs": ["y"], "outputs": 1, "hidden": [64, 64]}}
    assert model(big, tmp_path).engine == "compiled"  # 1 trajectory x ~8,500 instructions
    assert model(big, tmp_path, n_starts=4).engine == "torchdiffeq"  # auto: torchdiffeq is the faster
    big["solver"]["engine"] = "compiled"
    assert model(big, tmp_path, n_starts=4).engine == "compiled"  # asked for
    with pytest.raises(ConfigError, match="engine 'compiled' cannot be used: it solves euler, midpoint, rk4, "
                                          "dopri5, bdf, auto, not bosh3"):
        config(decay(tmp_path, method="bosh3", engine="compiled"), tmp_path)


def test_a_right_hand_side_that_is_not_finite_is_torchdiffeqs_failure(tmp_path):
    raw = decay(tmp_path)
    raw["model"]["equations"]["y"] = "-k*y + 1/(y - y)"
    messages = []
    for engine in ("compiled", "torchdiffeq"):
        m = model({**raw, "solver": {**raw["solver"], "engine": engine}}, tmp_path)
        with pytest.raises(SolverError) as info:
            m()
        messages.append(info.value.message)
    # the same failure; the compiled engine also says where (torchdiffeq does not know)
    assert messages[0].startswith("the solver's step size underflowed, at t = 0, where y = ")
    assert messages[1].startswith("the solver's step size underflowed, near t = ")
    assert messages[0].split(": ", 1)[1] == messages[1].split(": ", 1)[1]


def test_too_many_steps_is_reported(tmp_path):
    raw = decay(tmp_path, max_steps=10, rtol=1e-12, atol=1e-14)
    raw["model"]["parameters"]["k"]["init"] = 40.0
    with pytest.raises(SolverError, match="more than solver.max_steps = 10 steps"):
        model(raw, tmp_path)()


def test_multistart_and_experiments_are_solved_independently(tmp_path):
    """Each (start, experiment) trajectory of a batched compiled solve is the trajectory solved alone."""
    m = perturbed(model(rich_config(tmp_path, "dopri5"), tmp_path, n_starts=2))
    (together,) = m()
    for s in range(2):
        single = model(rich_config(tmp_path, "dopri5"), tmp_path)
        own, both = single.state_dict(), m.state_dict()
        single.load_state_dict({k: both[k] if both[k].shape == v.shape else both[k][s:s + 1] for k, v in own.items()})
        (alone,) = single()
        # a shared step size: the batch takes the smallest steps any trajectory needs, so only tolerance-close
        assert relative(together[:, s].detach(), alone[:, 0].detach()) < 1e-5


def ramp(tmp_path, equations: dict, parameters: dict, networks: dict | None = None, **solver) -> dict:
    """x = t (starts at exactly 0), y small: the corners of functions (0 ** n, relu at 0) are reached."""
    t = np.linspace(0, 2, 5)
    write_csv(tmp_path / "d.csv", "t,x,y", [(float(a), float(a), float(0.1 * a)) for a in t])
    return {"data": {"file": "d.csv", "columns": {"x": "x", "y": "y"}},
            "model": {"states": ["x", "y"], "equations": equations, "parameters": parameters},
            "networks": networks or {}, "solver": {"method": "rk4", "step": 0.1, **solver}}


@pytest.mark.parametrize(("equation", "why"), [
    ("-y + x**n", "a learned exponent of a base that is exactly 0: d/dn is 0, not log(0) * 0"),
    ("-y + sigmoid(n - 1000)", "a sigmoid far below zero: its derivative underflows to 0, not inf / inf"),
])
def test_corners_have_torchs_derivatives(tmp_path, equation, why):
    m = model(ramp(tmp_path, {"x": "1", "y": equation}, {"n": {"init": 2.5}}), tmp_path)
    _, grad_t = solutions_and_gradients(m, "torchdiffeq")
    _, grad_c = solutions_and_gradients(m, "compiled")
    assert torch.isfinite(grad_c["parameters_.raw.n"]).all(), why
    assert relative(grad_c["parameters_.raw.n"], grad_t["parameters_.raw.n"]) < 1e-10, why


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "silu"])
def test_activation_corners_have_torchs_derivatives(tmp_path, activation):
    """relu at exactly 0 (zero biases, an input starting at 0) has derivative 0; sigmoid and silu far
    below zero have finite ones."""
    raw = ramp(tmp_path, {"x": "1", "y": "-y + N"}, {},
               {"N": {"inputs": ["y"], "outputs": 1, "hidden": [4], "activation": activation, "normalize": False}})
    m = model(raw, tmp_path)
    if activation != "relu":
        with torch.no_grad():
            m.rhs.networks["N"].biases[0].fill_(-800.0)
    _, grad_t = solutions_and_gradients(m, "torchdiffeq")
    _, grad_c = solutions_and_gradients(m, "compiled")
    for name in grad_t:
        assert torch.isfinite(grad_c[name]).all(), name
        assert relative(grad_c[name], grad_t[name]) < 1e-10 or float((grad_c[name] - grad_t[name]).abs().max()) == 0


def test_float32_reads_the_solution_at_the_data_times(tmp_path):
    """Times that float32 cannot hold (1/3) are looked up in the float64 grid: the compiled solve (in
    float64) agrees with torchdiffeq's float32 one to float32 precision."""
    t = np.linspace(0, 3, 10)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), float(2.0 * np.exp(-0.7 * a))) for a in t])
    raw = {"data": {"file": "d.csv", "columns": {"y": "y"}},
           "model": {"states": ["y"], "equations": {"y": "-k*y"}, "parameters": {"k": {"init": 0.7}}},
           "solver": {"method": "rk4", "step": 0.05, "dtype": "float32"}}
    m = model(raw, tmp_path)
    sol_t, grad_t = solutions_and_gradients(m, "torchdiffeq")
    sol_c, grad_c = solutions_and_gradients(m, "compiled")
    assert sol_c.dtype == torch.float32
    assert relative(sol_c, sol_t) < 1e-5
    assert relative(grad_c["parameters_.raw.k"], grad_t["parameters_.raw.k"]) < 1e-4
