"""Random mutations of a valid config and random CSV text never crash ``ude check``.

Whatever a user writes, ``ude check`` ends with one of the documented exit codes (0 ok, 3 bad
config or data, 4 the initial guess cannot be simulated) and one line per problem, never a
traceback or an "internal error". Hypothesis shrinks any counterexample to a small config and CSV.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ude_cli.cli import app, exits

runner = CliRunner()

#: Examples per test (280 in all).
EXAMPLES = {"config": 120, "csv": 80, "both": 50, "equations": 30}

BASE = {
    "name": "prop",
    "data": {"file": "d.csv", "time": "t", "columns": {"x": "prey", "y": "predator"}},
    "model": {
        "states": ["x", "y"],
        "equations": {"x": "alpha*x + U[0]", "y": "-gamma*y + U[1]"},
        "parameters": {"alpha": {"init": 1.3, "fixed": True}, "gamma": {"init": 0.8, "bounds": [0, 5]}},
        "initial": {"x": {"value": 1.0}},
    },
    "networks": {"U": {"inputs": ["x", "y"], "outputs": 2, "hidden": [4], "activation": "tanh"}},
    "solver": {"method": "rk4", "step": 0.1},
    "training": {"seed": 0, "loss": "mse", "warm_start": "none",
                 "stages": [{"optimizer": "adam", "lr": 0.01, "iterations": 5}]},
    "output": {"plots": False},
}
CSV = "t,prey,predator\n0,1.0,0.5\n0.5,1.3,0.45\n1,1.6,0.43\n1.5,1.9,0.45\n2,2.1,0.5\n2.5,2.2,0.6\n"

ALLOWED = {exits.OK, exits.BAD_INPUT, exits.FIT_FAILED}

# -- strategies ----------------------------------------------------------------------------------

WORDS = ["x", "y", "t", "alpha", "gamma", "U", "V", "k", "pi", "prey", "predator", "exp", "log", "sqrt",
         "min", "max", "__import__", "os", "lambda", "rk4", "dopri5", "tanh", "learn", "adam", "lbfgs", "mse",
         "log", "none", "auto", "std", "file", "d.csv", "column", "value", "init", "NA", "ü", ""]
NUMBERS = [0, 1, -1, 2, 10, 64, 65, 4096, 10**9, 0.0, 0.5, -0.5, 1e-300, 1e300, -1e300, math.inf, -math.inf,
           math.nan]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(NUMBERS), st.integers(-3, 70),
    st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from(WORDS), st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
TOKENS = ["x", "y", "t", "alpha", "gamma", "U", "U[0]", "U[1]", "U[2]", "U[-1]", "V[0]", "pi", "+", "-", "*",
          "/", "**", "^", "(", ")", "[", "]", ",", "exp(", "log(", "min(", "max(", "sqrt(", "abs(", "1", "0",
          "2.5", "1e400", "1e-400", " ", ".", "_", "__import__", "lambda", ":", "'", '"', "if", "else", ">", "=",
          "\\", "\n", "#", "{", "}", "&", "%", "@", "~", "not", "and", "9" * 30, "1" + "0" * 400]
#: Well-formed equations over the config's names: they reach the simulation of the initial guess.
LEAVES = ["x", "y", "t", "alpha", "gamma", "pi", "U[0]", "U[1]", "0", "1", "2.5", "1e-9", "1e9", "0.0"]
grammar = st.recursive(
    st.sampled_from(LEAVES),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**"]), inner).map(lambda a: f"({a[0]}{a[1]}{a[2]})"),
        st.tuples(st.sampled_from(["exp", "log", "sqrt", "sin", "tanh", "abs", "sigmoid", "atan"]), inner)
        .map(lambda a: f"{a[0]}({a[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), inner, inner).map(lambda a: f"{a[0]}({a[1]}, {a[2]})"),
        inner.map(lambda a: f"-{a}"),
    ),
    max_leaves=6,
)
equations = st.one_of(grammar, st.lists(st.sampled_from(TOKENS), max_size=12).map("".join), st.text(max_size=30))


def _paths(node, prefix=()):
    """Every (path, key) of the nested config, so any field can be mutated."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix, k
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix, i
            yield from _paths(v, (*prefix, i))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated_configs(draw):
    raw = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(raw))
        if not paths:
            break
        parent_path, key = draw(st.sampled_from(paths))
        parent = _get(raw, parent_path)
        op = draw(st.sampled_from(["drop", "rename", "replace", "replace", "equation", "add"]))
        if op == "drop":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=8),
                                 st.just(str(key)[:-1]), st.just(f"{key}s")))
            parent[new] = parent.pop(key)
        elif op == "equation":
            model = raw.get("model")
            eqs = model.get("equations") if isinstance(model, dict) else None
            if isinstance(eqs, dict) and eqs:
                eqs[draw(st.sampled_from(sorted(eqs, key=str)))] = draw(equations)
            else:
                parent[key] = draw(equations)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(WORDS) | st.text(max_size=6))] = draw(values)
        else:
            parent[key] = draw(values)
    return raw


@st.composite
def csv_texts(draw):
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "random"]))
    if kind == "random":
        return draw(st.text(max_size=80))
    rows = [line.split(",") for line in CSV.splitlines()]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cell", "cell", "drop_row", "dup_row", "swap", "delimiter", "truncate", "ragged"]))
        if not rows:
            break
        r = draw(st.integers(0, len(rows) - 1))
        if op == "cell" and rows[r]:
            c = draw(st.integers(0, len(rows[r]) - 1))
            rows[r][c] = draw(st.one_of(st.sampled_from(["", "NA", "nan", "inf", "-inf", "1e999", "0", "-1", "x",
                                                         "1,5", '"', "\t", "0x10", "1_000", "  2 ", "∞", "٣"]),
                                        st.text(max_size=6)))
        elif op == "drop_row":
            rows.pop(r)
        elif op == "dup_row":
            rows.insert(r, list(rows[r]))
        elif op == "swap" and len(rows) > 2:
            s = draw(st.integers(1, len(rows) - 1))
            rows[r], rows[s] = rows[s], rows[r]
        elif op == "ragged":
            rows[r] = rows[r][:-1] if draw(st.booleans()) else [*rows[r], "7"]
        elif op == "truncate":
            rows = rows[:r]
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t", " "]))
    end = draw(st.sampled_from(["\n", "\r\n", ""]))
    return "\n".join(delimiter.join(row) for row in rows) + end


@st.composite
def mangled_yaml(draw):
    """The valid config's YAML text with a few characters inserted, deleted or replaced."""
    text = _yaml(BASE)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from([":", "-", " ", "  ", "\n", "[", "]", "{", "}", "&a", "*a", "!!", "'", '"',
                                      "#", "\t", "?", "|", ">", "%", "@", "`", "\\", "\x00", "\ufeff", "é"])
                     | st.text(max_size=3))
        cut = draw(st.integers(0, 3))
        text = text[:i] + piece + text[i + cut:]
    return text


# -- the property --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Where each example's config.yaml and d.csv are written (module-scoped: hypothesis reruns the
    test body many times in one test)."""
    return tmp_path_factory.mktemp("properties")


def check_never_crashes(directory: Path, config_text: str, csv_text: str) -> None:
    (directory / "config.yaml").write_text(config_text, encoding="utf-8")
    (directory / "d.csv").write_text(csv_text, encoding="utf-8")
    result = runner.invoke(app, ["check", "--quiet", str(directory / "config.yaml")])
    output = result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crash: {result.exception!r}\n--- config\n{config_text}\n--- csv\n{csv_text}")
    assert result.exit_code in ALLOWED, f"exit {result.exit_code}: {output}\n{config_text}\n{csv_text}"
    assert "Traceback" not in output and "internal error" not in output, output
    lines = result.stderr.splitlines()
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), lines
    if result.exit_code != exits.OK:
        assert any(line.startswith("error: ") for line in lines), "a failure must say why"
    if result.exit_code == exits.FIT_FAILED:  # only simulating the initial guess can fail numerically
        assert all("initial guess" in line for line in lines if line.startswith("error: ")), lines


def _yaml(raw) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def examples(n: int):
    """Settings of the fast suite: a fixed, reproducible set of ``n`` examples, no database."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@examples(EXAMPLES["config"])
@given(raw=mutated_configs())
def test_mutated_configs_never_crash_check(workdir, raw):
    check_never_crashes(workdir, _yaml(raw), CSV)


@examples(EXAMPLES["csv"])
@given(text=csv_texts())
def test_random_csv_never_crashes_check(workdir, text):
    check_never_crashes(workdir, _yaml(BASE), text)


@examples(EXAMPLES["both"])
@given(raw=mutated_configs(), text=csv_texts(),
       yaml_text=st.one_of(st.none(), st.text(max_size=60), mangled_yaml()))
def test_mutated_config_and_csv_together(workdir, raw, text, yaml_text):
    check_never_crashes(workdir, yaml_text if yaml_text is not None else _yaml(raw), text)


@examples(EXAMPLES["equations"])
@given(ex=grammar, ey=grammar, method=st.sampled_from(["rk4", "euler", "implicit_adams", "dopri5", "bosh3"]),
       dtype=st.sampled_from(["float64", "float32"]))
def test_random_equations_reach_the_simulation_and_never_crash(workdir, ex, ey, method, dtype):
    """Well-formed equations of any shape (log of a negative state, 1/0 at run time, overflow): the
    initial guess either simulates (0) or fails with one line naming it (4)."""
    raw = copy.deepcopy(BASE)
    raw["model"]["equations"] = {"x": f"{ex} + U[0]", "y": f"{ey} + U[1]"}
    raw["solver"] = {"method": method, "dtype": dtype, "max_steps": 300}
    if method in ("rk4", "euler", "implicit_adams"):
        raw["solver"]["step"] = 0.1
    check_never_crashes(workdir, _yaml(raw), CSV)
