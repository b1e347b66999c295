"""A parameter that sets where a where(...) of the right-hand side switches (ude_cli/fitting/switches.py).

Known answer, closed form: ``dx/dt = where(t < tau, a, b)`` from ``x(0) = 0`` gives
``x(t) = a min(t, tau) + b max(t - tau, 0)``, so ``d x(t) / d tau = (a - b)`` after tau and 0 before. The solvers'
own gradient of tau is 0 (a branch), which made `ude evaluate` print 0 and a fit leave tau where it started
(found on Oliveira_NatCommun2021, whose transmission rate changes at an estimated t_1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ude_cli.api import check, fit
from ude_cli.fitting.switches import finite_differences, switch_parameters
from ude_cli.petab import evaluate

A, B, TAU, SIGMA = 1.0, -0.5, 3.0, 0.1
TIMES = np.linspace(0.0, 8.0, 17)


def closed_form(t, tau=TAU, a=A, b=B):
    return a * min(t, tau) + b * max(t - tau, 0.0)


def data(noise=None):
    noise = np.zeros(len(TIMES)) if noise is None else noise
    return [closed_form(t) + e for t, e in zip(TIMES, noise, strict=True)]


def llh(measured, tau=TAU, a=A, b=B):
    r = np.array([y - closed_form(t, tau, a, b) for t, y in zip(TIMES, measured, strict=True)])
    return float(np.sum(-0.5 * math.log(2 * math.pi * SIGMA**2) - 0.5 * (r / SIGMA) ** 2))


def config(write, measured, tau_init, extra=""):
    write("d.csv", "t,x\n" + "".join(f"{t},{y}\n" for t, y in zip(TIMES, measured, strict=True)))
    path = write("c.yaml", f"""
        data: {{file: d.csv, time: t}}
        model:
          states: [x]
          parameters:
            tau: {{init: {tau_init}, bounds: [0.5, 7.5]}}
            a: {{init: {A}, fixed: true}}
            b: {{init: {B}, fixed: true}}
          equations: {{x: "where(t < tau, a, b)"}}
          initial: {{x: 0}}
          t0: 0
        observables:
          xobs: {{formula: "x + 0 * where(x > tau, 1, 0)", column: x, noise: {{distribution: normal, sigma: {SIGMA}}}}}
        """)
    if extra:
        path.write_text(path.read_text() + extra + "\n")
    return path


NOISE = 0.1 * np.random.default_rng(3).standard_normal(len(TIMES))


def test_only_a_condition_of_the_right_hand_side_makes_a_switch_parameter(write):
    problem = check(config(write, data(), 2.0))
    assert switch_parameters(problem) == {"tau": ["x"]}  # the observable's where(x > tau) is a jump: not listed


@pytest.mark.parametrize("tau", [2.2, 4.7])
def test_evaluate_gives_the_closed_form_gradient_of_a_switch_time(write, tau):
    measured = data(NOISE)
    result = evaluate(config(write, measured, tau))
    # the solver stops either side of tau (switches.Breakpoints): no step straddles the jump, and the llh (-770 and
    # -2653) is right to the solver's tolerance (rtol 1e-10: about 1e-6 here; 1.6e-4 off without the stops)
    assert result.llh == pytest.approx(llh(measured, tau), rel=1e-9)
    h = 1e-6
    expected = (llh(measured, tau + h) - llh(measured, tau - h)) / (2 * h)
    assert abs(expected) > 10  # the known answer is far from the 0 the solvers' gradient gives
    assert result.gradient["tau"] == pytest.approx(expected, rel=1e-4)
    assert result.finite_differences == ["tau"]


def test_finite_differences_per_start_and_per_column():
    import torch

    raw = torch.tensor([[0.5, 2.0], [-1.0, 3.0]], dtype=torch.float64)
    # objective per start: start k depends on its own row only
    g = finite_differences(raw, lambda: (raw[:, 0] ** 3 + 2 * raw[:, 1] ** 2))
    assert torch.allclose(g, torch.tensor([[0.75, 8.0], [3.0, 12.0]], dtype=torch.float64), rtol=1e-5)
    assert torch.equal(raw, torch.tensor([[0.5, 2.0], [-1.0, 3.0]], dtype=torch.float64))  # restored


@pytest.mark.parametrize("engine", ["compiled", "torchdiffeq"])
def test_a_fit_moves_a_switch_time_to_the_data(write, engine):
    """From tau = 2, the fit finds the switch at 3 (noise-free data); the solvers' gradient alone leaves it at 2."""
    extra = (f"solver: {{engine: {engine}}}\n"
             "training: {warm_start: none, stages: [{optimizer: lbfgs, iterations: 100}]}")
    result = fit(config(write, data(), 2.0, extra))
    assert result.parameters.set_index("name").loc["tau", "value"] == pytest.approx(TAU, abs=2e-3)


def test_the_intervals_of_a_switch_time_are_the_closed_forms(write):
    """tau, a and b fitted to noisy data at the default tolerances: the estimates are the closed-form least squares
    and the Wald intervals those of the closed-form Fisher information J^T J / sigma^2 (J: dx/dtau = a - b after
    tau, dx/da = min(t, tau), dx/db = max(t - tau, 0)). Without the solver's stops at tau the intervals came out
    2 to 4 times too narrow (the curvature from finite differences of a solution that jumps as tau crosses a step)."""
    from scipy.optimize import least_squares

    measured = np.array(data(NOISE))
    text = config(write, measured, 2.0).read_text()
    text = text.replace("a: {init: 1.0, fixed: true}", "a: {init: 0.8}").replace("b: {init: -0.5, fixed: true}",
                                                                                    "b: {init: -0.2}")
    result = fit(write("free.yaml", text))
    rows = result.parameters.set_index("name")

    def residuals(q):
        return np.array([closed_form(t, *q) for t in TIMES]) - measured

    best = least_squares(residuals, [2.0, 0.8, -0.2], xtol=1e-14, ftol=1e-14).x
    tau, a, b = best
    after = tau < TIMES
    J = np.stack([np.where(after, a - b, 0.0), np.minimum(TIMES, tau), np.maximum(TIMES - tau, 0.0)], 1) / SIGMA
    se = np.sqrt(np.diag(np.linalg.inv(J.T @ J)))
    for name, value, s in zip(("tau", "a", "b"), best, se, strict=True):
        assert rows.loc[name, "value"] == pytest.approx(value, abs=1e-3 * s)
        assert rows.loc[name, "se"] == pytest.approx(s, rel=0.02), name


def test_evaluate_on_torchdiffeq_when_only_a_switch_time_is_differentiated(write):
    """Nothing left for autograd (tau is the only learned value and the solve is torchdiffeq's): evaluate used to
    die with 'element 0 of tensors does not require grad'."""
    measured = data(NOISE)
    result = evaluate(config(write, measured, 2.2, "solver: {engine: torchdiffeq}"))
    h = 1e-6
    expected = (llh(measured, 2.2 + h) - llh(measured, 2.2 - h)) / (2 * h)
    assert result.gradient["tau"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("engine", ["compiled", "torchdiffeq"])
def test_float32_stops_stay_two_stops(write, engine):
    """In float32, tau -+ 1e-9 tau is one number (torchdiffeq refused the repeat with a traceback): the stops are
    16 float32 epsilons apart there."""
    extra = (f"solver: {{engine: {engine}, dtype: float32, rtol: 1.0e-5, atol: 1.0e-7}}\n"
             "training: {warm_start: none, stages: [{optimizer: lbfgs, iterations: 30}]}")
    result = fit(config(write, data(), 2.0, extra))
    assert result.parameters.set_index("name").loc["tau", "value"] == pytest.approx(TAU, abs=2e-2)


def test_a_small_threshold_gets_a_relative_step(write):
    """dx/dt = where(x < K, r, 0) from 0: x = min(r t, K), so d x / d K = 1 once x has reached K. With K = 1.5e-5 an
    absolute step of 1e-4 (the old one) gave a fifth of the gradient."""
    r, k = 1e-5, 1.5e-5
    times = np.linspace(0.1, 3.1, 13)  # none at the kink t = K / r = 1.5, where d x / d K is one-sided
    sigma = 1e-6
    measured = [min(r * t, k) + 2e-6 for t in times]  # 2 sigma above the curve everywhere
    write("d.csv", "t,x\n" + "".join(f"{t},{y}\n" for t, y in zip(times, measured, strict=True)))
    path = write("k.yaml", f"""
        data: {{file: d.csv, time: t}}
        model:
          states: [x]
          parameters: {{K: {{init: {k:.2e}}}, r: {{init: {r:.1e}, fixed: true}}}}
          equations: {{x: "where(x < K, r, 0)"}}
          initial: {{x: 0}}
          t0: 0
        observables:
          xobs: {{formula: x, column: x, noise: {{distribution: normal, sigma: {sigma:.1e}}}}}
        """)
    result = evaluate(path)
    after = [y for t, y in zip(times, measured, strict=True) if r * t > k]
    expected = sum((y - k) / sigma**2 for y in after)  # d llh / d K = sum (y - x) / sigma^2 * dx/dK, dx/dK = 1
    assert result.gradient["K"] == pytest.approx(expected, rel=2e-2)


def test_a_comparison_linear_in_t_either_way_round_is_a_switch_in_time(write):
    """Beer_MolBioSystems2014 writes its delay as ``tau - t > 0``: the stop is at tau whatever side t is on, and
    the llh is the closed form's as for ``t < tau``."""
    measured = data(NOISE)
    text = config(write, measured, 2.2).read_text().replace('"where(t < tau, a, b)"', '"where(2*(tau - t) > 0, a, b)"')
    result = evaluate(write("turned.yaml", text))
    assert result.llh == pytest.approx(llh(measured, 2.2), rel=1e-9)
    from ude_cli.fitting.model import UDEModel
    from ude_cli.fitting.switches import time_switches

    problem = check(write("turned2.yaml", text))
    assert len(time_switches(problem)) == 1
    stops = UDEModel(problem).breakpoints.times([0], 0.0, 8.0)
    assert stops == pytest.approx([2.2 - 2.2e-9, 2.2 + 2.2e-9], rel=1e-12)


def test_finite_differences_are_one_sided_where_a_shifted_solve_fails():
    """A batch fails as a whole: when the shifted-up solve cannot be solved the difference is one-sided from the
    unshifted point, for every start (it used to be 0); a start whose shifted value alone is not finite likewise."""
    import torch

    from ude_cli.engines.torchdiffeq import SolverError

    raw = torch.tensor([1.0, 2.0], dtype=torch.float64)
    base = raw.clone()

    def objective():
        if bool((raw > base).any()):
            raise SolverError("the shifted-up point blows up")
        return raw**2

    g = finite_differences(raw, objective)
    assert torch.allclose(g, 2 * base, rtol=2e-3)  # (f(u) - f(u - h)) / h = 2u - h
    assert torch.equal(raw, base)

    def partly():  # start 1's shifted-up value is NaN, start 0's fine
        v = raw**3
        return torch.where((raw > base) & (torch.arange(2) == 1), torch.full_like(v, float("nan")), v)

    g = finite_differences(raw, partly)
    assert g[0] == pytest.approx(3.0, rel=1e-5)  # central
    assert g[1] == pytest.approx(12.0, rel=3e-3)  # one-sided
