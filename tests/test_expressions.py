"""The equation parser: a whitelist over Python's ast, turned into sympy and torch."""

from __future__ import annotations

import math
import re

import pytest
import sympy
import torch

from ude_cli.errors import ExpressionError
from ude_cli.expressions import Namespace, parse_expression

NS = Namespace(states=("x", "y"), parameters=("alpha", "beta"), constants=("N",), networks={"U": 2, "g": 1})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('ls')", "names starting with '_' are not allowed: '__import__' in"),
        ("os.system('ls')", "attribute access is not allowed: 'os.system' in"),
        ("x.real", "attribute access is not allowed: 'x.real' in"),
        ("(lambda: 1)()", "lambda is not allowed: 'lambda: 1' in"),
        ("lambda x: x", "lambda is not allowed: 'lambda x: x' in"),
        ("x[0]", None),  # allowed by the parser; rejected later: x is not a network
        ("U[x]", "a network output index must be a whole number >= 0, as in NN[0]: 'U[x]' in"),
        ("U[-1]", "a network output index must be a whole number >= 0, as in NN[0]: 'U[-1]' in"),
        ("U[0:1]", "a network output index must be a whole number >= 0, as in NN[0]: 'U[0:1]' in"),
        ("U[0][1]", "only subscripts of a network name, NN[i], are allowed: 'U[0][1]' in"),
        ("open('f')", "function 'open' is not allowed"),
        ("eval('1')", "function 'eval' is not allowed"),
        ("x if y else 1", "conditional expression is not allowed; write where(condition, value_if_true, "
                          "value_otherwise): 'x if y else 1' in"),
        ("x < y", "a comparison is allowed only as the condition of where(condition, value_if_true, "
                  "value_otherwise): 'x < y' in"),
        ("x ^ 2", "'^' is not a power here; write '**': 'x ^ 2' in"),
        ("'text'", "only numbers are allowed as constants: ''text'' in"),
        ("[x, y]", "list is not allowed: '[x, y]' in"),
        ("exp(x, y)", "exp() takes 1 argument, got 2: 'exp(x, y)' in"),
        ("exp(x=1)", "keyword arguments are not allowed: 'exp(x=1)' in"),
        ("x +", "cannot parse 'x +'"),
        ("", "the equation is empty"),
        ("x; y", "cannot parse 'x; y'"),
    ],
)
def test_rejects_with_a_message_naming_the_piece(text, message):
    if message is None:
        expr = parse_expression(text, where="cfg.yaml: model.equations.x")
        errors = expr.check_names(NS, where="cfg.yaml: model.equations.x")
        assert errors and "unknown network 'x'" in str(errors[0])
        return
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, where="cfg.yaml: model.equations.x")
    assert str(info.value).startswith("cfg.yaml: model.equations.x: ")
    assert message in str(info.value)


def test_unknown_names_are_reported_with_a_suggestion():
    expr = parse_expression("alhpa*x + U[2] + z", where="w")
    errors = [str(e) for e in expr.check_names(NS, where="w")]
    assert "w: unknown name 'alhpa' in 'alhpa*x + U[2] + z' (did you mean 'alpha'?); expected a state, parameter, " \
           "constant, network or t" in errors
    assert any("unknown name 'z'" in e for e in errors)
    assert "w: U[2] is out of range in 'alhpa*x + U[2] + z': network 'U' has 2 outputs (indices 0 to 1)" in errors


def test_bare_network_name_needs_a_single_output():
    assert not parse_expression("g*x").check_names(NS)
    errors = parse_expression("U*x").check_names(NS)
    assert "network 'U' has 2 outputs: write U[0] … U[1]" in str(errors[0])


def test_deep_nesting_and_long_text_are_refused():
    with pytest.raises(ExpressionError, match="nested"):
        parse_expression("exp(" * 100 + "x" + ")" * 100)
    with pytest.raises(ExpressionError, match="characters long"):
        parse_expression("x+" * 30000 + "x")


def test_long_sums_and_products_are_regrouped_and_keep_their_value():
    """A PEtab observable summing hundreds of species (Chen_MSB2009's ERB_B1_P_tot, 163 terms) or an SBML rate law
    of hundreds of reactions is a left-nested chain as deep as it is long: regrouped into a balanced tree, it
    passes the depth check and every backend gives the sum written."""
    import ast

    import numpy as np

    n = 700
    rng = np.random.default_rng(0)
    values = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0.5, 2.0, n))}
    text = " + ".join(f"{k}" if i % 3 else f"2 * {k}" for i, k in enumerate(values))
    text = text.replace("+ c5 ", "- c5 ")  # a subtraction inside the chain
    expected = sum((2 if i % 3 == 0 else 1) * v * (-1 if k == "c5" else 1) for i, (k, v) in enumerate(values.items()))
    expr = parse_expression(f"({text}) / s")
    env = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()} | {"s": torch.tensor(4.0, dtype=torch.float64)}
    assert float(expr.compile("torch")(env)) == pytest.approx(expected / 4, rel=1e-13)
    assert float(expr.compile("numpy")({k: float(v) for k, v in env.items()})) == pytest.approx(expected / 4, rel=1e-13)
    sym = expr.to_sympy().subs({sympy.Symbol(k, real=True): v for k, v in values.items()} | {sympy.Symbol("s", real=True): 4.0})
    assert float(sym) == pytest.approx(expected / 4, rel=1e-12)
    product = parse_expression("*".join(["1.001"] * 200 + ["x"]))
    assert float(product.compile("torch")({"x": torch.tensor(2.0, dtype=torch.float64)})) == pytest.approx(2 * 1.001**200, rel=1e-13)
    # a short chain keeps the tree Python wrote (its floating-point order)
    short = "a - b + c*d*e - f"
    assert ast.dump(parse_expression(short).tree) == ast.dump(ast.parse(short, mode="eval").body)


def test_sympy_and_torch_agree():
    text = "alpha*x - beta*x*y/(1 + x**2) + exp(-y)*sin(t) + sqrt(abs(x)) - tanh(N) + U[1] + g + max(x, 0.5) + pi"
    expr = parse_expression(text)
    assert not expr.check_names(NS)
    env = {"x": torch.tensor(0.7, dtype=torch.float64), "y": torch.tensor(1.9, dtype=torch.float64),
           "alpha": torch.tensor(1.3, dtype=torch.float64), "beta": torch.tensor(0.4, dtype=torch.float64),
           "N": torch.tensor(2.0, dtype=torch.float64), "t": torch.tensor(0.3, dtype=torch.float64),
           "U": torch.tensor([0.11, -0.25], dtype=torch.float64), "g": torch.tensor([0.05], dtype=torch.float64)}
    value = float(expr.compile("torch", networks=NS.networks)(env))
    sym = expr.to_sympy(networks=NS.networks)
    subs = {sympy.Symbol(k, real=True): float(v) for k, v in env.items() if v.ndim == 0}
    subs[sympy.IndexedBase("U")[1]] = -0.25
    subs[sympy.IndexedBase("g")[0]] = 0.05
    expected = 1.3 * 0.7 - 0.4 * 0.7 * 1.9 / (1 + 0.49) + math.exp(-1.9) * math.sin(0.3) + math.sqrt(0.7) \
        - math.tanh(2.0) - 0.25 + 0.05 + 0.7 + math.pi
    assert value == pytest.approx(expected, rel=1e-12)
    assert float(sym.subs(subs).evalf()) == pytest.approx(expected, rel=1e-12)


def test_constant_subtrees_are_folded_and_latex_prints():
    expr = parse_expression("-(2*3)*x**2 + U[0]")
    f = expr.compile("torch", networks=["U"])
    out = f({"x": torch.tensor([1.0, 2.0]), "U": torch.tensor([[0.5], [0.25]])})
    assert torch.allclose(out, torch.tensor([-5.5, -23.75]))
    assert sympy.latex(expr.to_sympy(networks=["U"])) == "- 6 x^{2} + {U}_{0}"


@pytest.mark.parametrize("backend", ["torch", "numpy", "casadi", "sympy"])
def test_log10_and_log2_are_the_base_10_and_base_2_logarithms(backend):
    expr = parse_expression("log10(x) + 10*log2(y)")
    x, y = 250.0, 0.3
    expected = math.log10(x) + 10 * math.log2(y)  # an independent implementation: Python's math
    if backend == "sympy":
        value = float(expr.to_sympy().subs({sympy.Symbol("x", real=True): x, sympy.Symbol("y", real=True): y}))
    elif backend == "casadi":
        import casadi as ca

        value = float(ca.evalf(expr.compile("casadi")({"x": ca.DM(x), "y": ca.DM(y)})))
    else:
        value = float(expr.compile(backend)({"x": torch.tensor(x, dtype=torch.float64) if backend == "torch"
                                             else x, "y": torch.tensor(y, dtype=torch.float64)
                                             if backend == "torch" else y}))
    assert value == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alpha x", "cannot parse 'alpha x' at column 7: invalid syntax; is a '*' missing between 'alpha' and 'x'? "
                    "write 'alpha*x'"),
        ("2 x + y", "is a '*' missing between '2' and 'x'? write '2*x'"),
        ("U(0)", "'U' is not a function: a network's output is written with square brackets, write U[0]: 'U(0)' in"),
        ("alpha(x + 1)", "function 'alpha' is not allowed: 'alpha(x + 1)' in 'alpha(x + 1)'; a product is written "
                         "with '*' (alpha*(...))"),
        ("(x+1) (y)", "only calls of plain function names are allowed: 'x+1' in '(x+1) (y)'; is a '*' missing "
                      "before '('?"),
    ],
)
def test_common_slips_get_the_fix_in_the_message(text, message):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert message in str(info.value)


def test_an_unknown_bare_name_with_no_near_match_suggests_declaring_a_network():
    (error,) = parse_expression("-alpha*x + H").check_names(NS)
    assert str(error).endswith("; for a learned term, declare a network under 'networks' "
                               "(networks: {H: {inputs: [...]}})")


@pytest.mark.parametrize(("text", "fix"), [("ln(x)", "write log(x) (log is the natural logarithm)"),
                                           ("pow(x, 2)", "write a**b"), ("arctan(y)", "write atan(x)")])
def test_functions_of_other_languages_say_how_to_write_them(text, fix):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert f"is not allowed: {fix}:" in str(info.value)


def test_where_with_conditions_agrees_in_every_backend():
    import casadi as ca
    import numpy as np

    text = "where(t <= 5 and x > 0.1, a*x, 0) + where(not (t > 2 or x < 0), 1, 2)"
    expr = parse_expression(text)
    assert expr.names == {"t", "x", "a"}
    ts, xs, a = [1.0, 3.0, 6.0, 1.0], [1.0, 1.0, 1.0, -1.0], 2.0
    expected = [(a * x if (t <= 5 and x > 0.1) else 0) + (1 if not (t > 2 or x < 0) else 2) for t, x in zip(ts, xs, strict=True)]
    env = {"t": torch.tensor(ts, dtype=torch.float64), "x": torch.tensor(xs, dtype=torch.float64),
           "a": torch.tensor(a, dtype=torch.float64, requires_grad=True)}
    out = expr.compile("torch")(env)
    assert out.tolist() == expected
    out.sum().backward()
    assert float(env["a"].grad) == sum(x for t, x in zip(ts, xs, strict=True) if t <= 5 and x > 0.1)
    assert expr.compile("numpy")({"t": np.array(ts), "x": np.array(xs), "a": a}).tolist() == expected
    t_sym = ca.SX.sym("t")
    f = ca.Function("f", [t_sym], [expr.compile("casadi")({"t": t_sym, "x": ca.SX(1.0), "a": ca.SX(a)})])
    assert [float(f(t)) for t in ts[:3]] == expected[:3]
    sym = expr.to_sympy()
    assert [float(sym.subs({sympy.Symbol("t", real=True): t, sympy.Symbol("x", real=True): x,
                           sympy.Symbol("a", real=True): a})) for t, x in zip(ts, xs, strict=True)] == expected


@pytest.mark.parametrize("text, message", [
    ("x < 1", "a comparison is allowed only as the condition of where(condition, value_if_true, value_otherwise)"),
    ("where(x, 1, 2)", "the condition of where(...) must be a comparison"),
    ("where(x == 1, 1, 2)", "only the comparisons <, <=, > and >= are allowed"),
    ("where(0 < x < 1, 1, 2)", "write a chained comparison with 'and'"),
    ("where(x < 1, 2)", "where() takes 3 arguments, got 2"),
    ("piecewise(1, x < 1, 2)", "write where(condition, value_if_true, value_otherwise)"),
    ("exp(x < 1)", "a comparison is allowed only as the condition of where"),
])
def test_where_refuses_what_it_cannot_mean(text, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parse_expression(text)
