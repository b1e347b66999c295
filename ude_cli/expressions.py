"""Equations written as strings in a config, parsed through a whitelist: never ``eval``.

The text is parsed with Python's :mod:`ast` (which only *parses*, it runs nothing), every node is
checked against a short whitelist, and the checked tree is turned into

* a sympy expression (for printing, LaTeX and simplification), built node by node from sympy
  objects, never by ``sympify`` or ``parse_expr`` on the text; and
* a function of an environment of tensors (torch), arrays (numpy) or CasADi symbols (for
  :mod:`ude_cli.engines.compiled`), built as a tree of closures.

The language: numbers, names (states, parameters, constants, ``t``, ``pi``), ``+ - * / **``, unary
minus, calls of the functions in :data:`FUNCTIONS`, and network outputs ``NN[i]`` (a bare ``NN``
for a network with one output).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from .errors import ExpressionError, did_you_mean, one_of

#: Longest equation text accepted (characters): an SBML species' rate law can sum hundreds of reactions.
MAX_LENGTH = 50_000
#: Deepest nesting of operations accepted (after long sums and products are regrouped: :func:`_balanced`).
MAX_DEPTH = 60
#: A chain of more operands than this of ``+``/``-`` (or of ``*``) is regrouped into a balanced tree.
BALANCE_FROM = 32

#: name -> number of arguments. The backends below give each its meaning.
FUNCTIONS: dict[str, int] = {
    "exp": 1,
    "log": 1,
    "log10": 1,
    "log2": 1,
    "sqrt": 1,
    "sin": 1,
    "cos": 1,
    "tan": 1,
    "tanh": 1,
    "sinh": 1,
    "cosh": 1,
    "atan": 1,
    "abs": 1,
    "sigmoid": 1,
    "min": 2,
    "max": 2,
    "where": 3,
}

#: Comparisons allowed in the condition of ``where(condition, value_if_true, value_otherwise)``, as written.
COMPARISONS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_PY_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

#: Functions of other languages, and how to write them here.
_ALIASES = {
    "ln": "log(x) (log is the natural logarithm)",
    "arctan": "atan(x)",
    "pow": "a**b",
    "power": "a**b",
    "square": "x**2",
    "logistic": "sigmoid(x)",
    "expit": "sigmoid(x)",
    "fabs": "abs(x)",
    "piecewise": "where(condition, value_if_true, value_otherwise)",
    "if_else": "where(condition, value_if_true, value_otherwise)",
    "ifelse": "where(condition, value_if_true, value_otherwise)",
}

#: Names with a fixed meaning inside equations.
RESERVED = {"t", "pi"}

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_PY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}

_FORBIDDEN_OPS = {
    ast.BitXor: "'^' is not a power here; write '**'",
    ast.FloorDiv: "'//' is not allowed; write '/'",
    ast.Mod: "'%' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.BitAnd: "'&' is not allowed",
    ast.BitOr: "'|' is not allowed",
    ast.LShift: "'<<' is not allowed",
    ast.RShift: "'>>' is not allowed",
}

_NODE_NAMES = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.Compare: "comparison",
    ast.BoolOp: "'and'/'or'",
    ast.IfExp: "conditional expression",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator",
    ast.Starred: "starred expression",
    ast.NamedExpr: "assignment expression",
    ast.JoinedStr: "string",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


@dataclass(frozen=True)
class Namespace:
    """The names an equation may use."""

    states: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()
    networks: Mapping[str, int] = field(default_factory=dict)  # name -> number of outputs
    allow_t: bool = True

    def all_names(self) -> list[str]:
        names = [*self.states, *self.parameters, *self.constants, *self.networks, "pi"]
        return names + (["t"] if self.allow_t else [])


@dataclass(frozen=True)
class Expression:
    """A checked equation: its text, its tree, and the names it uses."""

    text: str
    tree: ast.expr
    names: frozenset[str]
    network_refs: frozenset[tuple[str, int]]  # (network, output index) for each NN[i]

    # -- checks -------------------------------------------------------------------------------
    def check_names(self, namespace: Namespace, where: str | None = None) -> list[ExpressionError]:
        """Errors for every unknown name or bad network reference (empty when all is well)."""
        errors: list[ExpressionError] = []
        known = set(namespace.all_names())
        for name in sorted(self.names):
            if name in namespace.networks:
                n_out = namespace.networks[name]
                if n_out != 1:
                    errors.append(ExpressionError(
                        f"network '{name}' has {n_out} outputs: write {name}[0] … {name}[{n_out - 1}] "
                        f"in {self.text!r}", where=where))
            elif name == "t" and not namespace.allow_t:
                errors.append(ExpressionError(f"'t' is not available in {self.text!r}", where=where))
            elif name not in known:
                near = did_you_mean(name, known)
                errors.append(
                    ExpressionError(
                        f"unknown name '{name}' in {self.text!r}{near}; "
                        f"expected a state, parameter, constant, network or t",
                        where=where,
                        hint=None if near else _declare_hint(name),
                    )
                )
        for net, index in sorted(self.network_refs):
            if net not in namespace.networks:
                errors.append(
                    ExpressionError(
                        f"unknown network '{net}' in {self.text!r}{did_you_mean(net, namespace.networks)}; "
                        + (f"declared networks: {', '.join(namespace.networks)}" if namespace.networks
                           else "no networks are declared under 'networks'"),
                        where=where,
                    )
                )
                continue
            n_out = namespace.networks[net]
            if index >= n_out:
                errors.append(
                    ExpressionError(
                        f"{net}[{index}] is out of range in {self.text!r}: network '{net}' has {n_out} "
                        f"output{'s' if n_out != 1 else ''} (indices 0 to {n_out - 1})",
                        where=where,
                    )
                )
        return errors

    def conditions(self) -> list[ast.expr]:
        """The conditions of every ``where(condition, a, b)`` (their first arguments), as trees."""
        return [node.args[0] for node in ast.walk(self.tree) if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name) and node.func.id == "where" and node.args]

    def condition_names(self) -> frozenset[str]:
        """The names used in the condition of a ``where(condition, a, b)``."""
        return frozenset(n.id for c in self.conditions() for n in ast.walk(c) if isinstance(n, ast.Name))

    # -- conversions --------------------------------------------------------------------------
    def to_sympy(self, symbols: Mapping[str, Any] | None = None, networks: Collection[str] = ()):
        """The expression as sympy, built from sympy objects (no string parsing).

        ``symbols`` maps names to sympy objects; a missing name becomes a real ``Symbol``.
        ``NN[i]`` (and a bare ``NN`` naming one of ``networks``) becomes ``IndexedBase("NN")[i]``.
        """
        import sympy

        symbols = dict(symbols or {})
        return _to_sympy(self.tree, symbols, sympy, frozenset(networks))

    def compile(self, backend: str = "torch", networks: Collection[str] = ()) -> Callable[[Mapping[str, Any]], Any]:
        """A function ``env -> value`` where ``env`` maps names to tensors (or arrays).

        Network outputs are read as ``env[NN][..., i]`` (a bare ``NN`` of ``networks`` as
        ``env[NN][..., 0]``); ``env["t"]`` is time.
        """
        return _compile(self.tree, _backend(backend), frozenset(networks))

    def __str__(self) -> str:
        return self.text


def parse_expression(text: Any, where: str | None = None) -> Expression:
    """Parse and check ``text`` against the whitelist; raise :class:`ExpressionError` naming the piece."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ExpressionError(f"expected an equation as text, got {type(text).__name__} {text!r}", where=where)
    text = str(text).strip()
    if not text:
        raise ExpressionError("the equation is empty", where=where)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the equation is {len(text)} characters long; at most {MAX_LENGTH}", where=where)
    try:
        module = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"cannot parse {text!r}{col}: {exc.msg}", where=where,
                              hint=_missing_operator(text)) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"cannot parse {text!r}: nested too deeply", where=where) from None
    try:
        body = _balanced(module.body)
    except RecursionError:
        raise ExpressionError(f"cannot parse {text!r}: nested too deeply", where=where) from None
    checker = _Checker(text, where)
    checker.visit(body, 0)
    bad = _first_non_finite_constant(body)
    if bad is not None:
        checker.fail(bad, f"not a finite number ({_constant_value(bad)}: a division by zero, an overflow, or a "
                          f"value outside a function's domain)")
    return Expression(text=text, tree=body, names=frozenset(checker.names),
                      network_refs=frozenset(checker.network_refs))


def parse_trigger(text: Any, where: str | None = None) -> tuple[Expression, bool]:
    """A trigger ``a < b`` (or ``<=``, ``>``, ``>=``; model.events' ``when``) as its root function ``(a) - (b)``,
    checked by :func:`parse_expression`, and whether the condition becomes true as the root function rises
    through 0 (``>``, ``>=``) rather than falls (``<``, ``<=``). Only Python's parser reads the text."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"expected a condition as text, such as 'x < 0.5', got {text!r}", where=where)
    text = text.strip()
    try:
        body = ast.parse(text, mode="eval").body
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        body = None
    if not isinstance(body, ast.Compare) or len(body.ops) != 1 or type(body.ops[0]) not in COMPARISONS:
        raise ExpressionError(f"{text!r} is not a condition 'a < b' (or <=, >, >=) of one comparison", where=where)
    left, right = (ast.get_source_segment(text, node) for node in (body.left, body.comparators[0]))
    root = parse_expression(f"({left}) - ({right})", where=where)
    return replace(root, text=text), isinstance(body.ops[0], ast.Gt | ast.GtE)  # messages quote the condition


def _chain(node: ast.expr, ops: tuple[type, ...]) -> list[tuple[bool, ast.expr]]:
    """The operands of the left-nested chain of ``ops`` that ``node`` heads, left to right, each with whether it is
    subtracted (walked without recursion: the chain can be thousands long)."""
    out: list[tuple[bool, ast.expr]] = []
    while isinstance(node, ast.BinOp) and isinstance(node.op, ops):
        out.append((isinstance(node.op, ast.Sub), node.right))
        node = node.left
    out.append((False, node))
    return out[::-1]


def _balanced(node: ast.expr) -> ast.expr:
    """``node`` with every chain of more than :data:`BALANCE_FROM` operands of ``+``/``-`` (or of ``*``) regrouped
    into a balanced tree, ``a - b`` as ``a + (-b)``: a sum of n terms is then log2(n) levels deep instead of n,
    so that the checker and the backends (which recurse) take it. Shorter chains keep the order they were
    written in, so their floating-point results are unchanged; a long one's sum is reassociated."""
    for family in ((ast.Add, ast.Sub), (ast.Mult,)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, family):
            operands = _chain(node, family)
            if len(operands) > BALANCE_FROM:
                terms = [ast.copy_location(ast.UnaryOp(op=ast.USub(), operand=_balanced(x)), x) if minus
                         else _balanced(x) for minus, x in operands]
                return _tree(terms, family[0](), node)
    for name, value in ast.iter_fields(node):
        if isinstance(value, ast.expr):
            setattr(node, name, _balanced(value))
        elif isinstance(value, list):
            setattr(node, name, [_balanced(v) if isinstance(v, ast.expr) else v for v in value])
    return node


def _tree(terms: list[ast.expr], op: ast.operator, where: ast.expr) -> ast.expr:
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return ast.copy_location(ast.BinOp(left=_tree(terms[:half], op, where), op=op,
                                       right=_tree(terms[half:], op, where)), where)


def _declare_hint(name: str) -> str:
    """How to declare an unknown name: a network for a capitalised one (``U``, ``H``), else a parameter."""
    if name[:1].isupper():
        return f"for a learned term, declare a network under 'networks' (networks: {{{name}: {{inputs: [...]}}}})"
    return f"for a parameter, declare it under 'model.parameters' ({name}: {{init: VALUE}})"


def _missing_operator(text: str) -> str | None:
    """A hint when two operands stand side by side (``alpha x``, ``2 x``, ``(a+b) (c+d)``): a missing ``*``."""
    import io
    import tokenize

    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type in (tokenize.NAME, tokenize.NUMBER, tokenize.OP)]
    except (tokenize.TokenError, SyntaxError):
        return None
    for a, b in zip(tokens, tokens[1:], strict=False):
        ends = a.type in (tokenize.NAME, tokenize.NUMBER) or a.string in (")", "]")
        starts = b.type in (tokenize.NAME, tokenize.NUMBER) or b.string == "("
        if ends and starts and not (a.type == tokenize.NAME and b.string == "("):
            return f"is a '*' missing between '{a.string}' and '{b.string}'? write '{a.string}*{b.string}'"
    return None


class _Checker:
    def __init__(self, text: str, where: str | None):
        self.text = text
        self.where = where
        self.names: set[str] = set()
        self.network_refs: set[tuple[str, int]] = set()

    def fail(self, node: ast.AST, message: str, hint: str | None = None) -> NoReturn:
        segment = ast.get_source_segment(self.text, node) or self.text
        raise ExpressionError(f"{message}: '{segment}' in {self.text!r}", where=self.where, hint=hint)

    def visit(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"{self.text!r} is nested more than {MAX_DEPTH} levels deep", where=self.where)
        if isinstance(node, ast.BinOp):
            if type(node.op) in _FORBIDDEN_OPS:
                self.fail(node, _FORBIDDEN_OPS[type(node.op)])
            self.visit(node.left, depth + 1)
            self.visit(node.right, depth + 1)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                self.fail(node, "only unary '-' and '+' are allowed")
            self.visit(node.operand, depth + 1)
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(node, "only numbers are allowed as constants")
            if not math.isfinite(_float(value)):
                self.fail(node, "numbers must be finite")
        elif isinstance(node, ast.Name):
            self._check_identifier(node, node.id)
            if node.id in FUNCTIONS:
                self.fail(node, f"'{node.id}' is a function: call it as {node.id}(...)")
            self.names.add(node.id)
        elif isinstance(node, ast.Call):
            self._visit_call(node, depth)
        elif isinstance(node, ast.Subscript):
            self._visit_subscript(node)
        elif isinstance(node, ast.Attribute):
            self.visit(node.value, depth + 1)
            self.fail(node, "attribute access is not allowed")
        elif isinstance(node, ast.Compare | ast.BoolOp) or (isinstance(node, ast.UnaryOp)
                                                          and isinstance(node.op, ast.Not)):
            self.fail(node, "a comparison is allowed only as the condition of where(condition, value_if_true, "
                            "value_otherwise)")
        elif isinstance(node, ast.IfExp):
            self.fail(node, "conditional expression is not allowed; write where(condition, value_if_true, "
                            "value_otherwise)")
        else:
            name = _NODE_NAMES.get(type(node), type(node).__name__)
            self.fail(node, f"{name} is not allowed")

    def condition(self, node: ast.AST, depth: int) -> None:
        """The first argument of ``where``: comparisons (``<``, ``<=``, ``>``, ``>=``) of values, joined by
        ``and``, ``or`` and ``not``."""
        if depth > MAX_DEPTH:
            raise ExpressionError(f"{self.text!r} is nested more than {MAX_DEPTH} levels deep", where=self.where)
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.condition(value, depth + 1)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self.condition(node.operand, depth + 1)
        elif isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                self.fail(node, "write a chained comparison with 'and': a < x and x < b")
            if type(node.ops[0]) not in COMPARISONS:
                self.fail(node, "only the comparisons <, <=, > and >= are allowed (a value of an ODE is never "
                                "exactly equal to another)")
            self.visit(node.left, depth + 1)
            self.visit(node.comparators[0], depth + 1)
        else:
            self.fail(node, "the condition of where(...) must be a comparison, as in where(t < 5, a, b)")

    def _check_identifier(self, node: ast.AST, name: str) -> None:
        if name.startswith("_"):
            self.fail(node, "names starting with '_' are not allowed")

    def _visit_call(self, node: ast.Call, depth: int) -> None:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute | ast.Lambda | ast.Subscript | ast.Call):
                self.visit(node.func, depth + 1)  # names the real culprit (attribute, lambda, ...)
            self.fail(node.func, "only calls of plain function names are allowed",
                      hint=None if isinstance(node.func, ast.Attribute | ast.Lambda) else
                      "is a '*' missing before '('? a product is written with '*'")
        name = node.func.id
        self._check_identifier(node.func, name)
        if name not in FUNCTIONS and len(node.args) == 1 and not node.keywords \
                and isinstance(node.args[0], ast.Constant) and type(node.args[0].value) is int:
            index = node.args[0].value
            self.fail(node, f"'{name}' is not a function: a network's output is written with square brackets, "
                            f"write {name}[{index}]")
        if name in _ALIASES:
            self.fail(node, f"function '{name}' is not allowed: write {_ALIASES[name]}",
                      hint=f"allowed functions: {', '.join(FUNCTIONS)}")
        if name not in FUNCTIONS:
            near = did_you_mean(name, FUNCTIONS)
            product = "" if near else f"a product is written with '*' ({name}*(...)); "
            self.fail(node, f"function '{name}' is not allowed{near}",
                      hint=f"{product}allowed functions: {', '.join(FUNCTIONS)}")
        if node.keywords:
            self.fail(node, "keyword arguments are not allowed")
        if len(node.args) != FUNCTIONS[name]:
            n = FUNCTIONS[name]
            self.fail(node, f"{name}() takes {n} argument{'s' if n != 1 else ''}, got {len(node.args)}")
        for k, arg in enumerate(node.args):
            if name == "where" and k == 0:
                self.condition(arg, depth + 1)
            else:
                self.visit(arg, depth + 1)

    def _visit_subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.value, ast.Name):
            self.fail(node, "only subscripts of a network name, NN[i], are allowed")
        self._check_identifier(node.value, node.value.id)
        index = node.slice
        if not (isinstance(index, ast.Constant) and isinstance(index.value, int)
                and not isinstance(index.value, bool) and index.value >= 0):
            self.fail(node, "a network output index must be a whole number >= 0, as in NN[0]")
        self.network_refs.add((node.value.id, index.value))


# -- backends -------------------------------------------------------------------------------------

def _backend(name: str) -> dict[str, Callable]:
    if name == "torch":
        import torch

        def _pair(f):
            def g(a, b):
                a_t = a if torch.is_tensor(a) else torch.as_tensor(a, dtype=b.dtype if torch.is_tensor(b) else None)
                b_t = b if torch.is_tensor(b) else torch.as_tensor(b, dtype=a_t.dtype)
                return f(a_t, b_t)
            return g

        return {
            "exp": torch.exp, "log": torch.log, "log10": torch.log10, "log2": torch.log2, "sqrt": torch.sqrt,
            "sin": torch.sin, "cos": torch.cos,
            "tan": torch.tan, "tanh": torch.tanh, "sinh": torch.sinh, "cosh": torch.cosh, "atan": torch.atan,
            "abs": torch.abs, "sigmoid": torch.sigmoid,
            "min": _pair(torch.minimum), "max": _pair(torch.maximum),
            "where": lambda c, a, b: torch.where(torch.as_tensor(c), *_same_dtype(torch, a, b)),
            "and": torch.logical_and, "or": torch.logical_or, "not": torch.logical_not,
        }
    if name == "numpy":
        import numpy as np

        return {
            "exp": np.exp, "log": np.log, "log10": np.log10, "log2": np.log2, "sqrt": np.sqrt, "sin": np.sin,
            "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh, "atan": np.arctan, "abs": np.abs,
            "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "min": np.minimum, "max": np.maximum,
            "where": np.where, "and": np.logical_and, "or": np.logical_or, "not": np.logical_not,
        }
    if name == "casadi":
        import casadi as ca

        return {
            "exp": ca.exp, "log": ca.log, "log10": ca.log10, "log2": lambda x: ca.log(x) / math.log(2),
            "sqrt": ca.sqrt, "sin": ca.sin, "cos": ca.cos, "tan": ca.tan,
            "tanh": ca.tanh, "sinh": ca.sinh, "cosh": ca.cosh, "atan": ca.atan, "abs": ca.fabs,
            "sigmoid": casadi_sigmoid, "min": ca.fmin, "max": ca.fmax, "**": _casadi_pow,
            "where": ca.if_else, "and": ca.logic_and, "or": ca.logic_or, "not": ca.logic_not,
        }
    raise ValueError(f"unknown backend {name!r}; expected {one_of(['torch', 'numpy', 'casadi'])}")


def _same_dtype(torch, a: Any, b: Any) -> tuple[Any, Any]:
    """The two branches of ``where`` as tensors of one dtype (a branch may be a plain number)."""
    dtype = a.dtype if torch.is_tensor(a) else (b.dtype if torch.is_tensor(b) else torch.float64)
    return torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype)


def casadi_sigmoid(x: Any) -> Any:
    """1 / (1 + exp(-x)) written so that its derivative stays finite far below zero (as torch's does)."""
    import casadi as ca

    return 0.5 * (1 + ca.tanh(0.5 * x))


def _casadi_pow(a: Any, b: Any) -> Any:
    """``a ** b`` for an exponent that is not a number (a learned Hill coefficient), with torch's
    derivatives where the base is 0: d/db is 0 there, not log(0) * 0 = NaN. The base-0 branch is a
    constant, so d/da there is 0 (torch: b * 0 ** (b - 1), which differs only for b <= 1)."""
    import casadi as ca

    zero = a == 0
    at_zero = ca.if_else(b == 0, 1, ca.if_else(b > 0, 0, ca.inf))
    return ca.if_else(zero, at_zero, ca.if_else(zero, 1, a) ** b)


def _float(value: int | float) -> float:
    """``float(value)``, with inf for an integer too large for a float (instead of OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _ieee(name: str) -> Callable:
    """The function ``name`` on float64 with IEEE semantics: 1/0 is inf, 0/0 and sqrt(-1) are nan."""
    import numpy as np

    table: dict[str, Callable] = {
        "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power,
        "exp": np.exp, "log": np.log, "log10": np.log10, "log2": np.log2, "sqrt": np.sqrt, "sin": np.sin,
        "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh, "atan": np.arctan, "abs": np.abs,
        "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "min": np.minimum, "max": np.maximum,
    }
    return table[name]


def _constant_value(node: ast.expr) -> float | None:
    """The value of a subtree without names (nan or inf where the arithmetic gives them), or None."""
    import numpy as np

    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # checked by _Checker: only numbers
        return _float(node.value)
    if isinstance(node, ast.Name):
        return math.pi if node.id == "pi" else None
    if isinstance(node, ast.UnaryOp):
        v = _constant_value(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BinOp):
        a, b = _constant_value(node.left), _constant_value(node.right)
        if a is None or b is None:
            return None
        with np.errstate(all="ignore"):
            return float(_ieee(_BINOPS[type(node.op)])(np.float64(a), np.float64(b)))
    if isinstance(node, ast.Call):
        args = [_constant_value(a) for a in node.args]
        if any(a is None for a in args):
            return None
        assert isinstance(node.func, ast.Name)  # checked by _Checker: calls of function names
        with np.errstate(all="ignore"):
            return float(_ieee(node.func.id)(*map(np.float64, args)))
    return None


def _first_non_finite_constant(node: ast.expr) -> ast.expr | None:
    """The innermost subtree without names whose value is not finite (e.g. ``0/0``, ``log(0)``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            found = _first_non_finite_constant(child)
            if found is not None:
                return found
    value = _constant_value(node) if isinstance(node, ast.BinOp | ast.Call | ast.UnaryOp) else None
    return node if value is not None and not math.isfinite(value) else None


def _compile(node: ast.expr, funcs: Mapping[str, Callable], nets: frozenset[str]) -> Callable[[Mapping[str, Any]], Any]:
    value = _constant_value(node)
    if value is not None:
        return lambda env: value
    if isinstance(node, ast.Name):
        name = node.id
        if name in nets:
            return lambda env: env[name][..., 0]
        return lambda env: env[name]
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand, funcs, nets)
        if isinstance(node.op, ast.UAdd):
            return inner
        return lambda env: -inner(env)
    if isinstance(node, ast.BinOp):
        symbol = _BINOPS[type(node.op)]
        left, right = _compile(node.left, funcs, nets), _compile(node.right, funcs, nets)
        right_value = _constant_value(node.right)
        # a backend may give its own power for exponents that are not numbers (casadi: see _casadi_pow)
        op = funcs["**"] if symbol == "**" and right_value is None and "**" in funcs else _PY_OPS[symbol]
        if op is operator.pow and right_value == 2.0:
            return lambda env: (lambda v: v * v)(left(env))
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # checked by _Checker: calls of function names
        f = funcs[node.func.id]
        if node.func.id == "where":
            cond, a, b = _compile_condition(node.args[0], funcs, nets), *(
                _compile(x, funcs, nets) for x in node.args[1:])
            return lambda env: f(cond(env), a(env), b(env))
        args = [_compile(a, funcs, nets) for a in node.args]
        if len(args) == 1:
            (a0,) = args
            return lambda env: f(a0(env))
        return lambda env: f(*(a(env) for a in args))
    if isinstance(node, ast.Subscript):
        assert isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant)  # checked: NN[i]
        name, index = node.value.id, node.slice.value
        return lambda env: env[name][..., index]
    raise AssertionError(f"unchecked node {type(node).__name__}")  # the checker rejects everything else


def _compile_condition(node: ast.expr, funcs: Mapping[str, Callable],
                       nets: frozenset[str]) -> Callable[[Mapping[str, Any]], Any]:
    if isinstance(node, ast.BoolOp):
        parts = [_compile_condition(v, funcs, nets) for v in node.values]
        join = funcs["and" if isinstance(node.op, ast.And) else "or"]

        def joined(env):
            out = parts[0](env)
            for p in parts[1:]:
                out = join(out, p(env))
            return out
        return joined
    if isinstance(node, ast.UnaryOp):  # not (checked)
        inner, negate = _compile_condition(node.operand, funcs, nets), funcs["not"]
        return lambda env: negate(inner(env))
    assert isinstance(node, ast.Compare)  # checked by _Checker.condition
    op = _PY_COMPARE[COMPARISONS[type(node.ops[0])]]
    left, right = _compile(node.left, funcs, nets), _compile(node.comparators[0], funcs, nets)
    return lambda env: op(left(env), right(env))


def _sympy_condition(node: ast.expr, symbols: dict[str, Any], sympy, nets: frozenset[str]) -> Any:
    if isinstance(node, ast.BoolOp):
        parts = [_sympy_condition(v, symbols, sympy, nets) for v in node.values]
        return sympy.And(*parts) if isinstance(node.op, ast.And) else sympy.Or(*parts)
    if isinstance(node, ast.UnaryOp):
        return sympy.Not(_sympy_condition(node.operand, symbols, sympy, nets))
    assert isinstance(node, ast.Compare)
    a, b = _to_sympy(node.left, symbols, sympy, nets), _to_sympy(node.comparators[0], symbols, sympy, nets)
    return {"<": sympy.Lt, "<=": sympy.Le, ">": sympy.Gt, ">=": sympy.Ge}[COMPARISONS[type(node.ops[0])]](a, b)


def _to_sympy(node: ast.expr, symbols: dict[str, Any], sympy, nets: frozenset[str]) -> Any:
    if isinstance(node, ast.Constant):
        v = node.value
        return sympy.Integer(v) if isinstance(v, int) else sympy.Float(v)
    if isinstance(node, ast.Name):
        if node.id == "pi":
            return sympy.pi
        if node.id in nets:
            return sympy.IndexedBase(node.id)[0]
        if node.id not in symbols:
            symbols[node.id] = sympy.Symbol(node.id, real=True)
        return symbols[node.id]
    if isinstance(node, ast.UnaryOp):
        inner = _to_sympy(node.operand, symbols, sympy, nets)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        a = _to_sympy(node.left, symbols, sympy, nets)
        b = _to_sympy(node.right, symbols, sympy, nets)
        return _PY_OPS[_BINOPS[type(node.op)]](a, b)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "where":
        cond = _sympy_condition(node.args[0], symbols, sympy, nets)
        a, b = (_to_sympy(x, symbols, sympy, nets) for x in node.args[1:])
        return sympy.Piecewise((a, cond), (b, True))
    if isinstance(node, ast.Call):
        args = [_to_sympy(a, symbols, sympy, nets) for a in node.args]
        table = {
            "exp": sympy.exp, "log": sympy.log, "log10": lambda x: sympy.log(x, 10),
            "log2": lambda x: sympy.log(x, 2), "sqrt": sympy.sqrt, "sin": sympy.sin, "cos": sympy.cos,
            "tan": sympy.tan, "tanh": sympy.tanh, "sinh": sympy.sinh, "cosh": sympy.cosh, "atan": sympy.atan,
            "abs": sympy.Abs, "sigmoid": lambda x: 1 / (1 + sympy.exp(-x)), "min": sympy.Min, "max": sympy.Max,
        }
        assert isinstance(node.func, ast.Name)  # checked by _Checker: calls of function names
        return table[node.func.id](*args)
    if isinstance(node, ast.Subscript):
        assert isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant)  # checked: NN[i]
        return sympy.IndexedBase(node.value.id)[node.slice.value]
    raise AssertionError(f"unchecked node {type(node).__name__}")


def network_symbol(name: str, index: int):
    """The sympy object standing for output ``index`` of network ``name``."""
    import sympy

    return sympy.IndexedBase(name)[index]
