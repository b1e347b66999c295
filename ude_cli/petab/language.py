"""Between sympy and ``ude``'s expression language, both ways, without evaluating any text.

- :func:`to_text` prints a sympy expression (from SBML's MathML, via sbmlmath) in the equation language of
  :mod:`ude_cli.expressions`, and re-parses the result through its whitelist, so that what a config says
  is what was meant; what the language cannot say (``piecewise``, comparisons, events' ``delay``) raises
  :class:`Unsupported`.
- :func:`parse_formula` reads a PEtab formula (observableFormula, noiseFormula) through the same whitelisted
  parser (``^`` is PEtab's power and is written ``**`` first) and returns sympy, built node by node. An
  SBML id starting with ``_`` (which the language refuses as a name) is read under an alias and comes back
  as the symbol of its own id.
"""

from __future__ import annotations

import io
import keyword
import math
import re
import tokenize
from collections.abc import Mapping

import sympy as sp

from ..expressions import FUNCTIONS, RESERVED, ExpressionError, parse_expression

_UNARY = {sp.exp: "exp", sp.sin: "sin", sp.cos: "cos", sp.tan: "tan", sp.tanh: "tanh", sp.sinh: "sinh",
          sp.cosh: "cosh", sp.atan: "atan", sp.Abs: "abs"}


class Unsupported(Exception):
    """A construct the equation language has no word for."""


def safe_name(name: str) -> str:
    """An SBML / PEtab identifier as a name of the equation language (``t``, ``pi``, a function's name or a
    Python keyword gets a trailing underscore; a name starting with ``_``, which the language refuses, gets the
    prefix ``u``: ``_rateLaw1`` -> ``u_rateLaw1``)."""
    if name.startswith("_"):
        return "u" + name
    if name in RESERVED or name in FUNCTIONS or keyword.iskeyword(name) or name in ("e", "E", "inf", "nan"):
        return name + "_"
    return name


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise Unsupported(f"the number {value} (not finite)")
    text = repr(float(value))
    return text if value >= 0 else f"({text})"


def to_text(expr: sp.Expr, names: Mapping[str, str] | None = None) -> str:
    """``expr`` in the equation language; ``names`` renames symbols (default: :func:`safe_name`)."""
    names = names or {}
    expr = sp.sympify(expr)
    whole = {f: sp.Integer(int(f)) for f in expr.atoms(sp.Float) if float(f).is_integer() and abs(float(f)) < 2**53}
    if whole:  # stoichiometries 1.0, 2.0: printed as 1, 2 (and a factor 1 disappears)
        expr = expr.xreplace(whole)
    text = _print(expr, names)[0]
    try:  # what we wrote must read back through the whitelist
        parse_expression(text, where="")
    except ExpressionError as exc:
        raise Unsupported(f"{text!r} ({exc.message})") from None
    return text


# precedence of what a piece of text is: a sum, a product, a power, an atom
_ADD, _MUL, _POW, _ATOM = 1, 2, 3, 4


def _wrap(piece: tuple[str, int], least: int) -> str:
    text, prec = piece
    return text if prec >= least else f"({text})"


def _print(e: sp.Basic, names: Mapping[str, str]) -> tuple[str, int]:
    if isinstance(e, sp.Symbol):
        return names.get(e.name, safe_name(e.name)), _ATOM
    if e is sp.pi:
        return "pi", _ATOM
    if e is sp.E:
        return "exp(1)", _ATOM
    if isinstance(e, sp.Integer):
        return (str(int(e)), _ATOM) if int(e) >= 0 else (str(int(e)), _ADD)
    if isinstance(e, sp.Rational):
        return f"{int(e.p)}/{int(e.q)}", _MUL
    if isinstance(e, sp.Float | sp.Number):
        value = float(e)
        text = _number(value)
        return (text, _ATOM) if value >= 0 else (text[1:-1], _ADD)
    if isinstance(e, sp.Add):
        terms = sorted(e.args, key=lambda a: (a.could_extract_minus_sign(), sp.default_sort_key(a)))
        out = _print(terms[0], names)[0]
        for a in terms[1:]:
            if a.could_extract_minus_sign():
                out += " - " + _wrap(_print(-a, names), _MUL)
            else:
                out += " + " + _print(a, names)[0]
        return out, _ADD
    if isinstance(e, sp.Mul):
        if e.could_extract_minus_sign():
            return "-" + _wrap(_print(-e, names), _MUL), _ADD
        num, den = [], []
        for a in e.args:
            if isinstance(a, sp.Pow) and a.args[1].is_number and a.args[1].is_negative:
                den.append(a.args[0] if a.args[1] == -1 else sp.Pow(a.args[0], -a.args[1], evaluate=False))
            elif isinstance(a, sp.Rational) and not isinstance(a, sp.Integer):
                if a.p != 1:
                    num.append(sp.Integer(a.p))
                den.append(sp.Integer(a.q))
            else:
                num.append(a)
        top = "*".join(_wrap(_print(a, names), _MUL) for a in num) if num else "1"
        if not den:
            return top, _MUL
        if len(den) == 1:
            return f"{top}/{_wrap(_print(den[0], names), _POW)}", _MUL
        return f"{top}/(" + "*".join(_wrap(_print(a, names), _MUL) for a in den) + ")", _MUL
    if isinstance(e, sp.Pow):
        base, exponent = e.args
        if exponent == sp.Rational(1, 2):
            return f"sqrt({_print(base, names)[0]})", _ATOM
        if exponent.is_number and exponent.is_negative:
            inverse = base if exponent == -1 else sp.Pow(base, -exponent, evaluate=False)
            return "1/" + _wrap(_print(inverse, names), _POW), _MUL
        return f"{_wrap(_print(base, names), _ATOM)}**{_wrap(_print(exponent, names), _ATOM)}", _POW
    if isinstance(e, sp.log):
        if len(e.args) != 1:
            return f"log({_print(e.args[0], names)[0]})/log({_print(e.args[1], names)[0]})", _MUL
        return f"log({_print(e.args[0], names)[0]})", _ATOM
    if isinstance(e, sp.Min | sp.Max):
        word = "min" if isinstance(e, sp.Min) else "max"
        args = [_print(a, names)[0] for a in e.args]
        out = args[0]
        for a in args[1:]:
            out = f"{word}({out}, {a})"
        return out, _ATOM
    for func, word in _UNARY.items():
        if isinstance(e, func):
            return f"{word}({_print(e.args[0], names)[0]})", _ATOM
    if isinstance(e, sp.Piecewise):
        return _piecewise(e, names), _ATOM
    what = type(e).__name__
    if getattr(e, "name", None):
        what = f"{what} {e.name}"
    raise Unsupported(what)


_RELATIONS = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">", sp.GreaterThan: ">="}


def _piecewise(e: sp.Piecewise, names: Mapping[str, str]) -> str:
    """SBML's ``piecewise(v1, c1, v2, c2, ..., otherwise)`` as nested ``where(c1, v1, where(c2, v2, otherwise))``."""
    pieces = list(e.args)
    last_value, last_condition = pieces[-1]
    if last_condition is not sp.true:
        raise Unsupported("piecewise without an otherwise")
    out = _print(last_value, names)[0]
    for value, condition in reversed(pieces[:-1]):
        out = f"where({_condition(condition, names)}, {_print(value, names)[0]}, {out})"
    return out


def _condition(c: sp.Basic, names: Mapping[str, str]) -> str:
    if isinstance(c, sp.And | sp.Or):
        word = " and " if isinstance(c, sp.And) else " or "
        return word.join(f"({_condition(a, names)})" for a in c.args)
    if isinstance(c, sp.Not):
        return f"not ({_condition(c.args[0], names)})"
    if isinstance(c, sp.ITE):  # if a then b else c, as sympy writes some joined conditions
        a, b, other = (_condition(x, names) for x in c.args)
        return f"(({a}) and ({b})) or ((not ({a})) and ({other}))"
    for kind, op in _RELATIONS.items():
        if isinstance(c, kind):
            return f"{_print(c.lhs, names)[0]} {op} {_print(c.rhs, names)[0]}"
    if c is sp.true or c is sp.false:  # a condition sympy decided: a comparison that says the same
        return "0 < 1" if c is sp.true else "1 < 0"
    raise Unsupported(f"the condition {type(c).__name__} in a piecewise (only <, <=, >, >=, and, or, not)")


def parse_formula(text: str, symbols: Mapping[str, sp.Symbol] | None = None) -> sp.Expr:
    """A PEtab formula as sympy, through the equation language's whitelisted parser (never ``sympify``)."""
    text = str(text).strip().replace("^", "**")
    aliased, ids = _aliased(text)
    try:
        expr = parse_expression(aliased, where="")
    except ExpressionError as exc:
        if aliased == text:
            raise
        exc.message = exc.message.replace(repr(aliased), repr(text))  # the user's text, not the aliases
        for alias, name in ids.items():
            exc.message = re.sub(rf"\b{re.escape(alias)}\b", name, exc.message)
            if exc.hint:
                exc.hint = re.sub(rf"\b{re.escape(alias)}\b", name, exc.hint)
        raise
    names = {n: (symbols or {}).get(ids.get(n, n)) or sp.Symbol(ids.get(n, n)) for n in expr.names}
    return expr.to_sympy(names)


def _aliased(text: str) -> tuple[str, dict[str, str]]:
    """``text`` with every name that starts with ``_`` (an SBML id may) replaced by an alias the equation
    language accepts, and alias -> id. Python's tokenizer only splits the text into names, numbers and
    operators: nothing is evaluated. Text it cannot split is returned as it is (the parser then says why)."""
    if "_" not in text:
        return text, {}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text, {}
    taken = {t.string for t in tokens if t.type == tokenize.NAME}
    aliases: dict[str, str] = {}
    for t in tokens:
        if t.type == tokenize.NAME and t.string.startswith("_") and t.string not in aliases:
            alias = "u" + t.string
            while alias in taken:
                alias += "_"
            taken.add(alias)
            aliases[t.string] = alias
    if not aliases:
        return text, {}
    out = tokenize.untokenize((t.type, aliases.get(t.string, t.string) if t.type == tokenize.NAME else t.string)
                              for t in tokens)
    return out.strip(), {a: i for i, a in aliases.items()}
