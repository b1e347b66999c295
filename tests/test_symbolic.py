"""Symbolic regression of learned terms (pysindy), the ODE refit, and equation typesetting,
against exactly known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ude_cli.discovery.refit import (
    DataObjective,
    OdeSystem,
    TermModel,
    coefficient_name,
    refit,
    replace_terms,
    runs_test,
)
from ude_cli.discovery.symbolic import (
    best_on_path,
    build_library,
    fidelity,
    format_terms,
    sparsity_path,
    stlsq,
)
from ude_cli.errors import ConfigError
from ude_cli.expressions import parse_expression
from ude_cli.problem import Parameter

from .discover_helpers import lv_problem, lv_truth


@pytest.fixture(scope="module")
def lv_samples():
    """States along the true LV trajectory (t in [0, 5]) and the exact missing terms there."""
    t = np.linspace(0, 5, 201)
    x, y = lv_truth(t).T
    return {"x": x, "y": y}, np.stack([-0.9 * x * y, 1.8 * x * y], axis=1)


def test_library_is_pysindys_polynomial_order():
    lib = build_library(["x", "y"], degree=2)
    assert lib.names == ["1", "x", "y", "x**2", "x*y", "y**2"]
    assert [f.slug for f in lib.features] == ["1", "x", "y", "x2", "x_y", "y2"]
    assert build_library(["x"], 3, include_bias=False).names == ["x", "x**2", "x**3"]


def test_library_functions_parse_through_the_whitelist():
    lib = build_library(["x", "y"], degree=1, functions=["exp(-x)", "x/(1+x)", "sin(y)"])
    assert lib.names[-3:] == ["exp(-x)", "x/(1+x)", "sin(y)"]
    values = lib.matrix({"x": np.array([0.0, 1.0]), "y": np.array([0.0, np.pi / 2])})
    np.testing.assert_allclose(values[:, -3:], [[1.0, 0.0, 0.0], [np.exp(-1), 0.5, 1.0]], rtol=1e-12)


@pytest.mark.parametrize(("text", "message"), [
    ("exp(-z)", "unknown name 'z'"),
    ("__import__('os')", "names starting with '_'"),
    ("x.real", "attribute access is not allowed"),
    ("U[0]*x", "cannot use a network"),
    ("x*y", "already in the library"),
])
def test_bad_library_functions_name_the_field(text, message):
    with pytest.raises(ConfigError) as err:
        build_library(["x", "y"], degree=2, functions=["sin(x)", text])
    assert message in str(err.value)
    assert "discover.functions[1]" in str(err.value)


def test_bad_degree():
    with pytest.raises(ConfigError, match="discover.degree: the polynomial degree must be between 0 and 6"):
        build_library(["x"], degree=7)


def test_pysindy_recovers_exact_terms(lv_samples):
    """Known answer: pysindy on exactly known term samples returns exactly -0.9 x y and 1.8 x y."""
    env, targets = lv_samples
    lib = build_library(["x", "y"], degree=2)
    theta = lib.matrix(env)
    for k, truth in enumerate([-0.9, 1.8]):
        coef = stlsq(theta, targets[:, k], threshold=0.1, names=lib.names)
        expected = np.zeros(len(lib.names))
        expected[lib.names.index("x*y")] = truth
        np.testing.assert_allclose(coef, expected, atol=1e-8)
        best = best_on_path(sparsity_path(theta, targets[:, k], lib.names))
        assert best.support == (lib.names.index("x*y"),)
        assert best.coefficients[lib.names.index("x*y")] == pytest.approx(truth, abs=1e-8)
        assert best.fidelity.r2 == pytest.approx(1.0, abs=1e-12)


def test_sparsity_path_runs_from_dense_to_empty(lv_samples):
    env, targets = lv_samples
    lib = build_library(["x", "y"], degree=2)
    noisy = targets[:, 0] * (1 + 0.05 * np.random.default_rng(0).standard_normal(len(targets)))
    path = sparsity_path(lib.matrix(env), noisy, lib.names)
    sizes = [len(p.support) for p in path]
    assert sizes[0] >= 3 and sizes[-1] == 0
    assert sizes == sorted(sizes, reverse=True)
    best = best_on_path(path)
    assert best.support == (lib.names.index("x*y"),)
    assert best.coefficients[lib.names.index("x*y")] == pytest.approx(-0.9, rel=0.02)


def test_saturating_term_in_a_polynomial_library_is_an_approximation():
    """x/(1+x) is not a polynomial: the best polynomial has a visible error; with the function
    in the library, it is found exactly."""
    x = np.linspace(0.2, 3.0, 200)
    target = 2 * x / (1 + x)
    poly = build_library(["x"], degree=2)
    best = best_on_path(sparsity_path(poly.matrix({"x": x}), target, poly.names))
    assert best.fidelity.max_error > 0.01  # reported as an approximation, with its error
    assert best.fidelity.r2 < 0.9999
    rich = build_library(["x"], degree=2, functions=["x/(1+x)"])
    best = best_on_path(sparsity_path(rich.matrix({"x": x}), target, rich.names))
    assert best.support == (rich.names.index("x/(1+x)"),)
    assert best.coefficients[rich.names.index("x/(1+x)")] == pytest.approx(2.0, abs=1e-8)


def test_fidelity_known_values():
    target = np.array([0.0, 1.0, 2.0, 3.0])
    f = fidelity(target + np.array([0.0, 0.0, 0.0, 0.5]), target)
    assert f.max_error == pytest.approx(0.5)
    assert f.rmse == pytest.approx(0.25)
    assert f.r2 == pytest.approx(1 - 0.25 / 5.0)
    assert f.relative_rmse == pytest.approx(0.25 / np.std(target))
    assert fidelity(target, target).r2 == 1.0


def test_format_terms():
    assert format_terms([0.0, -0.9, 2.0], ["1", "x*y", "x"]) == "-0.9*x*y + 2*x"
    assert format_terms([1.5, 0.0], ["1", "x"]) == "1.5"
    assert format_terms([0.0], ["x"]) == "0"
    assert parse_expression(format_terms([0.3, -0.0123, 1.0], ["1", "x**2", "exp(-x)"])).text


# -- the ODE refit -----------------------------------------------------------------------------

def _lv_candidate(problem, coefs):
    lib = {f.text: f for f in build_library(["x", "y"], 2).features}
    params = dict(problem.parameters)
    models = {}
    for term, c in zip([("U", 0), ("U", 1)], coefs, strict=True):
        name = coefficient_name(term, lib["x*y"], set(params))
        params[name] = Parameter(name, c, False, None, None, False)
        models[term] = TermModel(term, (lib["x*y"],), (name,))
    equations = {s: replace_terms(e, models) for s, e in problem.equations.items()}
    return OdeSystem(problem, equations, params)


def test_replace_terms_gives_parseable_equations(tmp_path):
    problem = lv_problem(tmp_path)
    system = _lv_candidate(problem, [-0.5, 1.0])
    assert system.equations["x"].text == "alpha * x + U0_x_y * x * y"
    assert system.equations["y"].text == "-gamma * y + U1_x_y * x * y"
    assert not system.equations["x"].network_refs


def test_simulation_matches_the_true_solution(tmp_path):
    problem = lv_problem(tmp_path)
    system = _lv_candidate(problem, [-0.9, 1.8])
    t = np.linspace(0, 10, 41)
    sim = system.simulate(0, system.values(), t)
    assert sim.ok
    np.testing.assert_allclose(sim.y, lv_truth(t), rtol=1e-5, atol=1e-6)


def test_refit_to_the_data_known_answer(tmp_path):
    """Known answer (issue): x*y refitted to the sample data by ODE least squares: -0.902, 1.838."""
    problem = lv_problem(tmp_path)
    fitted = refit(_lv_candidate(problem, [-0.5, 1.0]), DataObjective(problem))
    assert fitted.success
    assert fitted.values["U0_x_y"] == pytest.approx(-0.9023, abs=5e-4)
    assert fitted.values["U1_x_y"] == pytest.approx(1.8380, abs=5e-4)
    assert fitted.train_loss == pytest.approx(0.001762, rel=0.01)  # the noise floor, about 0.0017
    assert fitted.free == ["U0_x_y", "U1_x_y"]


def test_blow_up_is_reported_with_its_time(tmp_path):
    """dx/dt = x**2 from x(0) = 1 blows up at t = 1 (x = 1/(1 - t))."""
    from .discover_helpers import synthetic_problem

    problem = synthetic_problem(tmp_path, lambda t, u: [-u[0]], [1.0], np.linspace(0, 2, 11), 0.0, 0,
                                {"states": ["x"], "equations": {"x": "-k*x"}, "parameters": {"k": 1.0}},
                                {}, {"x": "x"})
    system = OdeSystem(problem, {"x": parse_expression("x**2")}, {})
    sim = system.simulate(0, {}, np.linspace(0, 2, 11))
    assert not sim.ok
    assert "diverges" in sim.message
    t_hit = float(sim.message.rsplit("t = ", 1)[1])
    assert 0.99 < t_hit < 1.0  # the bound is 1000 x the data: x = 1000 at t = 0.999
    assert np.all(np.isfinite(sim.y[:5])) and np.all(np.isnan(sim.y[5:]))


def test_runs_test():
    alternating = [np.array([1.0, -1.0] * 10)]
    blocks = [np.array([1.0] * 10 + [-1.0] * 10)]
    z, p = runs_test(alternating)
    assert z > 3 and p > 0.99
    z, p = runs_test(blocks)
    assert z < -3 and p < 1e-3
    assert runs_test([np.ones(5)]) == (0.0, 1.0)


# -- typesetting ----------------------------------------------------------------------------------

def test_text_and_latex_of_recovered_equations():
    from ude_cli.discovery.typeset import derivative_latex, to_latex, to_text, with_values

    expr = parse_expression("alpha*x + U0_x_y*x*y + abs(x) + min(x, y)").to_sympy()
    text = to_text(expr)
    assert "abs(x)" in text and "min(x, y)" in text
    assert parse_expression(text)  # our language again
    numeric = with_values(expr, {"alpha": 1.3, "U0_x_y": -0.90231177})
    assert to_text(numeric) == "1.3*x - 0.9023*x*y + abs(x) + min(x, y)"
    assert "\\alpha" in to_latex(expr)
    assert derivative_latex("x") == "\\frac{dx}{dt}"


def test_latex_svg_is_self_contained():
    from ude_cli.discovery.typeset import latex_svg

    svg = latex_svg("\\dfrac{dx}{dt} = -0.9023 x y + 1.3 x")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "http" not in svg.replace("http://www.w3.org", "")  # namespaces only, nothing to fetch
