"""The equation parser: a whitelist over Python's ast, turned into sympy and torch."""

from __future__ import annotations

import math

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
        ("x if y else 1", "conditional expression is not allowed: 'x if y else 1' in"),
        ("x < y", "comparison is not allowed: 'x < y' in"),
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
        parse_expression("x+" * 2000 + "x")


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
