"""Equations for people: our equation language, LaTeX, and LaTeX drawn as SVG without a network.

Expressions are turned into sympy by :meth:`ude_cli.expressions.Expression.to_sympy` (built node
by node, never by parsing text). :func:`to_text` prints sympy back in our equation language (so
the text parses again, see :func:`ude_cli.expressions.parse_expression`), :func:`to_latex` as
LaTeX, and :func:`latex_svg` draws LaTeX with matplotlib's mathtext as a self-contained SVG
(glyphs as paths), which a report can inline: no MathJax, no CDN, no fonts to fetch.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

#: Significant digits of numbers printed in recovered equations.
DIGITS = 4


def _printer():
    from sympy.printing.str import StrPrinter

    class OurPrinter(StrPrinter):
        """sympy's ``str`` with our function names (abs, min, max)."""

        def _print_Abs(self, expr):
            return f"abs({self._print(expr.args[0])})"

        def _print_Min(self, expr):
            return self._nest("min", expr.args)

        def _print_Max(self, expr):
            return self._nest("max", expr.args)

        def _nest(self, name, args):
            text = self._print(args[-1])
            for a in reversed(args[:-1]):
                text = f"{name}({self._print(a)}, {text})"
            return text

        def _print_Exp1(self, expr):
            return "exp(1)"

    return OurPrinter({"full_prec": False, "order": "none"})


def to_text(expr) -> str:
    """A sympy expression in our equation language (``-0.902*x*y``, ``abs(x)``, ``x**2``), terms in
    the order they were written."""
    return _printer().doprint(expr)


def rounded(expr, digits: int = DIGITS):
    """``expr`` with every float rounded to ``digits`` significant digits."""
    import sympy

    floats = {f: sympy.Float(float(f"{float(f):.{digits}g}"), digits) for f in expr.atoms(sympy.Float)}
    return expr.xreplace(floats)


def with_values(expr, values: Mapping[str, float], digits: int = DIGITS):
    """``expr`` with the named symbols replaced by their values (rounded), integers kept exact."""
    import sympy

    subs = {}
    for sym in expr.free_symbols:
        if sym.name in values:
            v = float(values[sym.name])
            subs[sym] = sympy.Integer(int(v)) if v.is_integer() and abs(v) < 1e15 else sympy.Float(
                float(f"{v:.{digits}g}"), digits)
    return expr.xreplace(subs)


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega"}


def symbol_latex(name: str) -> str:
    """LaTeX of a name: Greek letters as such, ``k_1`` subscripted, long names upright."""
    head, _, tail = name.partition("_")
    if head in _GREEK:
        head_tex = "\\" + head
    elif len(head) == 1:
        head_tex = head
    else:
        head_tex = "\\mathrm{" + head + "}"
    if not tail:
        return head_tex
    return head_tex + "_{\\mathrm{" + tail.replace("_", ",") + "}}"


def to_latex(expr) -> str:
    """LaTeX of a sympy expression, names typeset by :func:`symbol_latex`."""
    import sympy

    names = {s: symbol_latex(s.name) for s in expr.free_symbols if isinstance(s, sympy.Symbol)}
    return sympy.latex(expr, symbol_names=names, order="none")


def derivative_latex(state: str) -> str:
    """``\\frac{dx}{dt}`` for state ``x``."""
    return "\\frac{d" + symbol_latex(state) + "}{dt}"


def latex_svg(latex: str, fontsize: float = 13.0) -> str:
    """LaTeX (mathtext subset) drawn by matplotlib as an SVG document (text as paths).

    Raises:
        ValueError: matplotlib cannot typeset ``latex``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.01, 0.01))
    fig.text(0, 0, f"${latex}$", fontsize=fontsize)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "ude", "mathtext.fontset": "cm"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.02, transparent=True,
                    metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and doctype: it is inlined in HTML
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
