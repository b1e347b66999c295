"""Writing the pieces of a PEtab (SciML) problem: formulas in SBML's and PEtab's syntax from ``ude``'s
expression trees, the SBML model (python-libsbml), TSV tables, network YAML and HDF5 weights.

Formulas are printed from the checked :mod:`ast` tree of an :class:`~ude_cli.expressions.Expression`
node by node (every operation parenthesised, ``^`` for a power, as both SBML's L3 syntax and PEtab's
formulas write it); the SBML math is then built by ``libsbml.parseL3Formula`` from that text, which we wrote
ourselves: no user text is evaluated anywhere.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..expressions import COMPARISONS

#: ``ude`` function -> its SBML L3 spelling (``log`` is natural there only as ``ln``: L3's ``log(x)`` is log10)
_SBML_FUNCTIONS = {"exp": "exp", "log": "ln", "log10": "log10", "sqrt": "sqrt", "sin": "sin", "cos": "cos",
                   "tan": "tan", "tanh": "tanh", "sinh": "sinh", "cosh": "cosh", "atan": "atan", "abs": "abs",
                   "min": "min", "max": "max"}
#: ``ude`` function -> its spelling in a PEtab formula (read back by :func:`ude_cli.petab.language.parse_formula`)
_PETAB_FUNCTIONS = {"exp": "exp", "log": "log", "log10": "log10", "log2": "log2", "sqrt": "sqrt", "sin": "sin",
                    "cos": "cos", "tan": "tan", "tanh": "tanh", "sinh": "sinh", "cosh": "cosh", "atan": "atan",
                    "abs": "abs", "min": "min", "max": "max"}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}


def number(value: float) -> str:
    """A float as the shortest text that reads back to the same double (``inf``, ``-inf`` as such)."""
    value = float(value)
    if math.isnan(value):
        raise ValueError("NaN")
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def formula(tree: ast.expr, *, style: str, name: Callable[[str], str], output: Callable[[str, int], str],
            time: str, networks: Mapping[str, int]) -> str:
    """The text of ``tree`` (a checked expression of the equation language) in ``style`` ``"sbml"`` or
    ``"petab"``: names through ``name``, network outputs ``NET[i]`` (and a bare one-output ``NET``) through
    ``output``, ``t`` as ``time``."""
    functions = _SBML_FUNCTIONS if style == "sbml" else _PETAB_FUNCTIONS

    def go(node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, int) and not isinstance(v, bool):
                return str(v)
            assert isinstance(v, float)  # the expression checker admits numbers only
            return number(v)
        if isinstance(node, ast.Name):
            if node.id == "pi":
                return "pi"
            if node.id == "t":
                return time
            if node.id in networks:
                return output(node.id, 0)
            return name(node.id)
        if isinstance(node, ast.UnaryOp):
            inner = go(node.operand)
            return inner if isinstance(node.op, ast.UAdd) else f"(-{inner})"
        if isinstance(node, ast.BinOp):
            return f"({go(node.left)} {_OPS[type(node.op)]} {go(node.right)})"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "where":
            if style != "sbml":
                raise ConfigError("where(...) in an observable or noise formula cannot be exported: PEtab's "
                                  "tables are read back without piecewise; move it into the equations")
            cond, a, b = condition(node.args[0]), go(node.args[1]), go(node.args[2])
            return f"piecewise({a}, {cond}, {b})"
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)  # the checker allows calls of function names only
            fn, args = node.func.id, [go(a) for a in node.args]
            if fn == "sigmoid":
                return f"(1 / (1 + exp(-{args[0]})))"
            if fn == "log2" and style == "sbml":
                return f"(ln({args[0]}) / ln(2))"
            return f"{functions[fn]}({', '.join(args)})"
        if isinstance(node, ast.Subscript):
            assert isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant)
            index = node.slice.value
            assert isinstance(index, int)  # checked: NN[i] with an integer i
            return output(node.value.id, index)
        raise AssertionError(f"unchecked node {type(node).__name__}")  # the expression checker rejects the rest

    def condition(node: ast.expr) -> str:
        if isinstance(node, ast.BoolOp):
            word = " && " if isinstance(node.op, ast.And) else " || "
            return "(" + word.join(condition(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp):  # not (checked)
            return f"(!{condition(node.operand)})"
        assert isinstance(node, ast.Compare)  # checked: one of <, <=, >, >=
        return f"({go(node.left)} {COMPARISONS[type(node.ops[0])]} {go(node.comparators[0])})"

    return go(tree)


def sbml_math(text: str, where: str):
    """libsbml's AST of a formula that :func:`formula` wrote."""
    import libsbml

    node = libsbml.parseL3Formula(text)
    if node is None:
        raise ConfigError(f"cannot write {text!r} as SBML math: {libsbml.getLastParseL3Error()}", where=where)
    return node


def write_sbml(path: Path, *, model_id: str, compartment: str, species: Mapping[str, float],
               rate_rules: Mapping[str, str], parameters: Mapping[str, float],
               initial_assignments: Mapping[str, str], where: str,
               assignment_rules: Mapping[str, str] | None = None) -> None:
    """An SBML L3V2 model: species (concentrations in one compartment of size 1) changed by rate rules,
    constant parameters, parameters given by assignment rules, initial assignments."""
    import libsbml

    document = libsbml.SBMLDocument(3, 2)
    model = document.createModel()
    model.setId(model_id)
    c = model.createCompartment()
    c.setId(compartment)
    c.setSize(1.0)
    c.setConstant(True)
    c.setSpatialDimensions(3)
    for sid, value in species.items():
        s = model.createSpecies()
        s.setId(sid)
        s.setCompartment(compartment)
        s.setInitialConcentration(float(value))
        s.setHasOnlySubstanceUnits(False)
        s.setBoundaryCondition(False)
        s.setConstant(False)
    for pid, value in parameters.items():
        p = model.createParameter()
        p.setId(pid)
        p.setValue(float(value))
        p.setConstant(True)
    for pid, text in (assignment_rules or {}).items():
        p = model.createParameter()
        p.setId(pid)
        p.setConstant(False)
        rule = model.createAssignmentRule()
        rule.setVariable(pid)
        rule.setMath(sbml_math(text, f"{where}: the value of {pid}"))
    for sid, text in initial_assignments.items():
        ia = model.createInitialAssignment()
        ia.setSymbol(sid)
        ia.setMath(sbml_math(text, f"{where}: the initial value of {sid}"))
    for sid, text in rate_rules.items():
        rule = model.createRateRule()
        rule.setVariable(sid)
        rule.setMath(sbml_math(text, f"{where}: the equation of {sid}"))
    errors = [document.getError(i) for i in range(document.getNumErrors())
              if document.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    if errors:
        raise ConfigError(f"the SBML model is not valid: {errors[0].getShortMessage()}", where=where)
    if not libsbml.writeSBMLToFile(document, str(path)):
        raise ConfigError("cannot write the SBML file", where=str(path))


def write_tsv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A tab-separated table; floats with every digit (:func:`number`)."""
    def cell(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float | np.floating):
            return number(float(v))
        text = str(v)
        if "\t" in text or "\n" in text:
            raise ConfigError(f"a table cell cannot hold a tab or a line break: {text!r}", where=str(path))
        return text

    lines = ["\t".join(columns)] + ["\t".join(cell(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def network_yaml(net: str, sizes: Sequence[int], activation: str) -> dict:
    """PEtab SciML's network description: ``Linear`` layers ``layer1 ...`` and a torch.fx-like forward graph
    (one placeholder, layer, activation, ..., layer, output). ``rbf`` (exp(-z^2)) is written as the three
    operations ``mul(z, z)``, ``mul(., -1.0)``, ``exp``."""
    layers = [{"layer_id": f"layer{k + 1}", "layer_type": "Linear",
               "args": {"in_features": int(sizes[k]), "out_features": int(sizes[k + 1]), "bias": True}}
              for k in range(len(sizes) - 1)]
    forward: list[dict] = [{"name": "net_input", "op": "placeholder", "target": "net_input", "args": [], "kwargs": {}}]
    current = "net_input"
    for k in range(len(sizes) - 1):
        lid = f"layer{k + 1}"
        forward.append({"name": lid, "op": "call_module", "target": lid, "args": [current], "kwargs": {}})
        current = lid
        if k == len(sizes) - 2:
            break
        if activation == "rbf":
            for node, op, args in ((f"square_{k + 1}", "mul", [current, current]),
                                   (f"neg_{k + 1}", "mul", [f"square_{k + 1}", -1.0]),
                                   (f"exp_{k + 1}", "exp", [f"neg_{k + 1}"])):
                forward.append({"name": node, "op": "call_function", "target": op, "args": args, "kwargs": {}})
                current = node
        else:
            node = f"{activation}_{k + 1}"
            forward.append({"name": node, "op": "call_function", "target": activation, "args": [current],
                            "kwargs": {}})
            current = node
    forward.append({"name": "output", "op": "output", "target": "output", "args": [current], "kwargs": {}})
    return {"nn_model_id": net, "inputs": [{"input_id": "input0"}], "layers": layers, "forward": forward}


def write_hdf5(path: Path, arrays: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]]) -> None:
    """``parameters/<net>/layer<k>/weight`` (out, in) and ``bias`` (out,) per network (PyTorch layout), and
    ``metadata/pytorch_format`` = 1."""
    import h5py

    with h5py.File(path, "w") as f:
        # as the PEtab SciML suite's array files: a flag that the arrays are in PyTorch's (row-major) layout
        f.create_group("metadata").create_dataset("pytorch_format", data=np.uint8(1))
        group = f.create_group("parameters")
        for net, layers in arrays.items():
            g = group.create_group(net)
            for k, (w, b) in enumerate(layers):
                lg = g.create_group(f"layer{k + 1}")
                lg.create_dataset("weight", data=np.asarray(w, dtype=np.float64))
                lg.create_dataset("bias", data=np.asarray(b, dtype=np.float64))
