"""The compiled engine from an :class:`~ude_cli.engines.base.OdeSpec` written by hand, with no model behind it:
the engines are given the ODE problem as data (issue 11's narrow description), and solve it right.

Known answer: logistic growth ``dx/dt = r x (1 - x / K)`` with ``K`` a per-experiment constant,
``x(t) = K / (1 + (K / x0 - 1) exp(-r t))``, and its derivative with respect to ``r`` and ``x0``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ude_cli.engines.base import Grid, OdeSpec
from ude_cli.engines.compiled import CompiledEngine, stiffness_note
from ude_cli.engines.torchdiffeq import SolverSettings
from ude_cli.expressions import parse_expression


def logistic(t: np.ndarray, r: float, K: float, x0: float) -> np.ndarray:
    return K / (1 + (K / x0 - 1) * np.exp(-r * t))


def spec(method: str = "dopri5", step: float | None = None) -> OdeSpec:
    times = np.linspace(0.0, 8.0, 17)
    return OdeSpec(
        states=("x",), parameters=("r",), equations={"x": parse_expression("r*x*(1 - x/K)")},
        networks={}, network_inputs={}, constants={},
        experiment_constants={"K": torch.tensor([10.0, 4.0], dtype=torch.float64)},
        experiment_names=("a", "b"), grids=(Grid((0, 1), times),), n_starts=1, dtype=torch.float64,
        settings=SolverSettings(method=method, rtol=1e-10, atol=1e-12, step=step), scale=10.0)


@pytest.mark.parametrize("method, step, tol", [("dopri5", None, 1e-8), ("rk4", 0.01, 1e-7)])
def test_solution_and_gradient_match_the_closed_form(method, step, tol):
    s = spec(method, step)
    engine = CompiledEngine(s)
    r = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = x0.expand(2, 1)  # (S * B, n): start-major, one start, two experiments
    p = r.expand(2, 1)
    sol = engine.solve_group(0, y0, p)  # (T, S, B, n)
    t = s.grids[0].times
    for b, K in enumerate((10.0, 4.0)):
        assert np.allclose(sol[:, 0, b, 0].detach().numpy(), logistic(t, 0.9, K, 0.5), rtol=0, atol=tol)
    assert engine.evaluations > 0
    # d x(T; K=10) / d r and / d x0, against the closed form's derivatives (central differences of it, 1e-6)
    sol[-1, 0, 0, 0].backward()
    T, h = float(t[-1]), 1e-6
    d_r = (logistic(T, 0.9 + h, 10.0, 0.5) - logistic(T, 0.9 - h, 10.0, 0.5)) / (2 * h)
    d_x0 = (logistic(T, 0.9, 10.0, 0.5 + h) - logistic(T, 0.9, 10.0, 0.5 - h)) / (2 * h)
    assert r.grad is not None and x0.grad is not None
    assert math.isclose(float(r.grad), d_r, rel_tol=1e-5)
    assert math.isclose(float(x0.grad), d_x0, rel_tol=1e-5)


def test_stiffness_note_from_a_spec_alone():
    """Robertson's kinetics, written as a spec: ``ude check``'s probe calls it stiff; logistic growth is not."""
    eq = {"a": parse_expression("-0.04*a + 1e4*b*c"), "b": parse_expression("0.04*a - 1e4*b*c - 3e7*b**2"),
          "c": parse_expression("3e7*b**2")}
    stiff = OdeSpec(states=("a", "b", "c"), parameters=(), equations=eq, networks={}, network_inputs={},
                    constants={}, experiment_constants={}, experiment_names=("one",),
                    grids=(Grid((0,), np.array([0.0, 1.0, 10.0, 100.0])),), n_starts=1, dtype=torch.float64,
                    settings=SolverSettings(method="dopri5", max_steps=20_000), scale=1.0)

    def inputs_stiff(experiments):
        return torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), torch.zeros(1, 0, dtype=torch.float64)

    note = stiffness_note(stiff, inputs_stiff)
    assert note is not None and "stiff" in note and "bdf" in note
    s = spec()

    def inputs(experiments):
        return torch.full((len(experiments), 1), 0.5, dtype=torch.float64), torch.full((len(experiments), 1), 0.9,
                                                                                         dtype=torch.float64)

    assert stiffness_note(s, inputs) is None
