"""ODE solving against analytic solutions, and gradients through the solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ude_cli.engines.torchdiffeq import SolverError, SolverSettings, solve

from .helpers import model, write_csv


def decay_config(tmp_path, method="dopri5", **solver):
    t = np.linspace(0, 4, 9)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), float(2.0 * np.exp(-0.7 * a))) for a in t])
    return {
        "data": {"file": "d.csv", "columns": {"y": "y"}},
        "model": {"states": ["y"], "equations": {"y": "-k*y"}, "parameters": {"k": {"init": 0.7}}},
        "solver": {"method": method, "rtol": 1e-10, "atol": 1e-12, **solver},
    }


def test_exponential_decay_matches_the_analytic_solution(tmp_path):
    m = model(decay_config(tmp_path), tmp_path)
    (t, y), = m.dense(n_points=50)
    exact = 2.0 * np.exp(-0.7 * t)
    assert np.max(np.abs(y[:, 0, 0] - exact) / exact) < 1e-8


@pytest.mark.parametrize(("method", "step", "tol"), [("rk4", 0.01, 1e-9), ("euler", 0.001, 2e-3), ("dopri8", None, 1e-6)])
def test_fixed_and_high_order_methods(tmp_path, method, step, tol):
    # dopri8: torchdiffeq interpolates between its steps at lower order, hence the looser tolerance
    m = model(decay_config(tmp_path, method=method, max_steps=10_000, **({"step": step} if step else {})), tmp_path)
    (t, y), = m.dense(n_points=20)
    exact = 2.0 * np.exp(-0.7 * t)
    assert np.max(np.abs(y[:, 0, 0] - exact) / exact) < tol


def test_harmonic_oscillator_matches_cos_and_sin(tmp_path):
    t = np.linspace(0, 10, 41)
    omega = 1.7
    x = np.cos(omega * t) + 0.5 / omega * np.sin(omega * t)
    v = -omega * np.sin(omega * t) + 0.5 * np.cos(omega * t)
    write_csv(tmp_path / "o.csv", "t,x,v", zip(t, x, v, strict=True))
    raw = {
        "data": {"file": "o.csv", "columns": {"x": "x", "v": "v"}},
        "model": {"builtin": "damped_oscillator",
                  "parameters": {"delta": {"init": 0.0, "fixed": True}, "alpha": {"init": omega**2, "fixed": True}}},
        "solver": {"rtol": 1e-10, "atol": 1e-10},
    }
    m = model(raw, tmp_path)
    (tt, y), = m.dense(n_points=200)
    xe = np.cos(omega * tt) + 0.5 / omega * np.sin(omega * tt)
    ve = -omega * np.sin(omega * tt) + 0.5 * np.cos(omega * tt)
    assert np.max(np.abs(y[:, 0, 0] - xe)) < 1e-8
    assert np.max(np.abs(y[:, 0, 1] - ve)) < 1e-8


def test_gradient_of_the_solution_matches_the_analytic_derivative(tmp_path):
    m = model(decay_config(tmp_path), tmp_path)
    sol = m()[0]  # (T, S, B, n)
    y_end = sol[-1, 0, 0, 0]
    (grad,) = torch.autograd.grad(y_end, m.parameters_.raw["k"])
    k, t_end = 0.7, 4.0
    # k is not declared positive, so it is learned as is: dy/dk = -t * 2 exp(-k t)
    assert float(grad) == pytest.approx(-t_end * 2.0 * np.exp(-k * t_end), rel=1e-7)


def test_gradcheck_through_a_fixed_step_solve():
    class Rhs(torch.nn.Module):
        def __init__(self, theta):
            super().__init__()
            self.theta = theta

        def forward(self, t, y):
            return torch.stack([self.theta[0] * y[..., 1], -self.theta[1] * torch.sin(y[..., 0])], -1)

    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    settings = SolverSettings(method="rk4", step=0.05)

    def f(theta, y0):
        return solve(Rhs(theta), y0, t, settings)

    theta = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[0.3, -0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (theta, y0), eps=1e-6, atol=1e-7)


def test_adjoint_gradients_equal_direct_backprop(tmp_path, lv_csv):
    raw = {
        "data": {"file": str(lv_csv), "columns": {"x": "prey", "y": "predator"}},
        "model": {"states": ["x", "y"], "equations": {"x": "alpha*x + U[0]", "y": "-gamma*y + U[1]"},
                  "parameters": {"alpha": 1.1, "gamma": 0.9}},
        "networks": {"U": {"inputs": ["x", "y"], "outputs": 2, "hidden": [6], "final_scale": 0.5}},
        "solver": {"rtol": 1e-10, "atol": 1e-10},
    }
    grads = {}
    for adjoint in (False, True):
        raw["solver"]["adjoint"] = adjoint
        m = model(raw, tmp_path)
        loss = (m()[0] ** 2).mean()
        params = [p for _, p in sorted(m.named_parameters())]
        grads[adjoint] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    assert torch.allclose(grads[True], grads[False], rtol=1e-5, atol=1e-8)


def test_solver_failure_is_a_solver_error():
    class Blowup(torch.nn.Module):
        def forward(self, t, y):
            return y * y

    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    y0 = torch.tensor([[1.0]], dtype=torch.float64)
    with pytest.raises(SolverError, match="underflowed|more than solver.max_steps"):
        solve(Blowup(), y0, t, SolverSettings(max_steps=1000))
    with pytest.raises(SolverError, match=r"needs 2e\+03 steps"):
        solve(Blowup(), y0, t, SolverSettings(method="rk4", step=0.001, max_steps=1000))
