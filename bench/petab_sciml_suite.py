"""The PEtab SciML test suite's `sciml_problem_import` cases through `ude evaluate`: the pass table of
docs/petab.md.

For each case folder (`<case>/petab/problem.yaml`, `<case>/solutions.yaml`): the log-likelihood, the
simulations (`simulations.tsv`) and the gradient (`grad_mech.tsv`, `grad_<net>.hdf5`, element by element)
at the nominal values, each against the suite's tolerance (`tol_llh`, `tol_simulations`, `tol_grad`); or
the one line with which the importer refuses the case. What a case tests comes from the suite's README
(its first line).

    python bench/petab_sciml_suite.py                          # the cases vendored under tests/data/petab/sciml
    python bench/petab_sciml_suite.py --cases DIR              # every case folder in DIR (a suite checkout's
                                                               # test_cases/sciml_problem_import)
    python bench/petab_sciml_suite.py --cases DIR --write docs/petab.md
    python bench/petab_sciml_suite.py --init-cases DIR [--write docs/petab.md]  # the initialization cases: the
        # imported starting weights against net1_ref.hdf5 (tests/data/petab/sciml_init holds all three)
    python bench/petab_sciml_suite.py --ml-cases DIR [--write docs/petab.md]   # the ml_model_import cases:
        # each network YAML built as ude's network with the case's weights, its outputs against the
        # case's (atol 1e-3, the suite's default, or the case's own: check_ml_case); or the reason it
        # cannot be built
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import harness as h
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "tests" / "data" / "petab" / "sciml"
BEGIN, END = "<!-- petab-sciml:begin -->", "<!-- petab-sciml:end -->"
ML_BEGIN, ML_END = "<!-- petab-sciml-ml:begin -->", "<!-- petab-sciml-ml:end -->"
INIT_BEGIN, INIT_END = "<!-- petab-sciml-init:begin -->", "<!-- petab-sciml-init:end -->"
VENDORED_ML = ROOT / "tests" / "data" / "petab" / "sciml_ml"
#: the solver's tolerances for the suite's cases: ReLU networks in the right-hand side (036, 038) have kinks
#: that make the gradient converge slowly with the tolerance (at ude evaluate's default 1e-10 / 1e-12 their
#: gradients miss the suite's by 0.5 and 1.7)
RTOL, ATOL = 1e-13, 1e-14


def check_ml_case(case: Path) -> dict:
    """The worst absolute error of ude's network against the case's outputs, or the reason it is refused.

    A network that is a chain of fully connected layers with one activation is ude's MLP (what the compiled
    engine compiles): checked as that MLP and as the graph; any other as the graph
    (:mod:`ude_cli.petab.network`). Tolerance: the suite's atol 1e-3, or the case's own where its generating
    script gives one (the dropout cases: their reference is a mean of 50000 random training-mode draws, and
    ude's network is the expectation of that mean); for those the standard error of the reference is estimated
    from 2000 draws of PyTorch's random layers."""
    import h5py
    import torch

    from ude_cli.errors import UdeError
    from ude_cli.petab.network import load_hdf5, read_graph
    from ude_cli.petab.sciml import read_network, read_weights, to_mlp

    solutions = yaml.safe_load((case / "solutions.yaml").read_text())
    try:
        graph = read_graph(case / solutions["net_file"]).double()
    except UdeError as exc:
        return {"refused": exc.lines()[0].split(": ", 1)[-1]}
    try:
        chain = read_network(case / solutions["net_file"], "net0")
    except UdeError:
        chain = None
    inputs = sorted(k for k in solutions if k.startswith("net_input"))
    worst, standard_error = 0.0, 0.0
    for k, out in enumerate(solutions["net_output"]):
        xs = [torch.tensor(np.asarray(h5py.File(case / solutions[key][k], "r")["inputs/input0/data"]),
                           dtype=torch.float64) for key in inputs]
        y = np.asarray(h5py.File(case / out, "r")["outputs/output0/data"], dtype=float)
        if "net_ps" in solutions:
            load_hdf5(graph, [case / solutions["net_ps"][k]], "net0")
        with torch.no_grad():
            got = graph(*xs).numpy()
        if got.shape != y.shape:
            return {"error": math.inf, "pass": False, "kind": "graph", "note": f"output shape {got.shape}, "
                    f"expected {y.shape}"}
        worst = max(worst, float(np.max(np.abs(got - y))))
        if chain is not None:
            net = to_mlp(chain, read_weights([case / solutions["net_ps"][k]], chain))
            with torch.no_grad():
                mlp = net(torch.cat([x.reshape(-1) for x in xs]).reshape(1, 1, -1))[0, 0].numpy()
            worst = max(worst, float(np.max(np.abs(mlp - y.ravel()))))
        standard_error = max(standard_error, _reference_standard_error(graph, xs))
    tol = _case_tolerance(case)
    kind = (f"MLP {'-'.join(map(str, chain.sizes))} {chain.activation}" if chain is not None
            else "graph: " + ", ".join(f"{t}" + (f" x{n}" if n > 1 else "") for t, n in _layer_types(case, solutions).items()))
    return {"error": worst, "pass": worst <= tol, "kind": kind, "tol": tol, "standard_error": standard_error}


def _layer_types(case: Path, solutions: dict) -> dict[str, int]:
    raw = yaml.safe_load((case / solutions["net_file"]).read_text())
    types: dict[str, int] = {}
    for layer in raw["layers"]:
        types[layer["layer_type"]] = types.get(layer["layer_type"], 0) + 1
    for node in raw["forward"]:
        if node["op"] in ("call_function", "call_method") and node["target"] not in types:
            types[node["target"]] = 1
    return types


def _case_tolerance(case: Path) -> float:
    """The suite's atol 1e-3, or the one the case's generating script (create_testdata/net.py) passes to its
    check (``test_nn(..., atol=...)``)."""
    import re

    scripts = [case / "create_testdata" / name for name in ("net.py", "net.py.txt")]  # .txt: the vendored copy
    script = next((p for p in scripts if p.is_file()), scripts[0])
    if script.is_file():
        m = re.search(r"test_nn\([^)]*atol\s*=\s*([0-9.eE+-]+)", script.read_text())
        if m:
            return float(m.group(1))
    return 1e-3


def _reference_standard_error(graph, xs, draws: int = 2000, reference_draws: int = 50000) -> float:
    """The largest standard error of a Monte Carlo reference (the suite's mean of ``reference_draws`` random
    training-mode outputs of a network with dropout), from ``draws`` draws of PyTorch's own dropout layers; 0
    without dropout."""
    import copy

    import torch

    from ude_cli.petab.network.layers import ExpectedAlphaDropout, ExpectedDropout

    random = copy.deepcopy(graph)
    found = False
    for lid, layer in list(random.layers.items()):
        if isinstance(layer, ExpectedAlphaDropout | ExpectedDropout):
            kind = type(layer).__name__.removeprefix("Expected")
            torch_kind = kind if kind == "AlphaDropout" else _dropout_kind(graph, lid)
            random.layers[lid] = getattr(torch.nn, torch_kind)(layer.p).train()
            found = True
    if not found:
        return 0.0
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        samples = torch.stack([random(*xs) for _ in range(draws)])
    return float(samples.std(0).max()) / math.sqrt(reference_draws)


def _dropout_kind(graph, lid: str) -> str:
    """The torch class of a dropout layer (Dropout, Dropout1d, ...) from the graph's source file."""
    raw = yaml.safe_load(Path(graph.source).read_text())
    return next(layer["layer_type"] for layer in raw["layers"] if layer["layer_id"] == lid)


def ml_table(cases: list[Path]) -> str:
    lines = ["| case | network | result | worst output error | tolerance |", "|---|---|---|---|---|"]
    passed = 0
    for case in cases:
        r = check_ml_case(case)
        if "refused" in r:
            lines.append(f"| {case.name} | | not supported: {r['refused']} | | |")
            continue
        passed += bool(r["pass"])
        tol = f"{r['tol']:.0e}"
        if r.get("standard_error"):
            tol += (f" (the case's own: its reference is a mean of 50000 random dropout draws, largest standard "
                    f"error {r['standard_error']:.1e}; worst error {r['error'] / r['standard_error']:.1f} times that)")
        note = f": {r['note']}" if r.get("note") else ""
        lines.append(f"| {case.name} | {r['kind']} | {'pass' if r['pass'] else 'FAIL'}{note} | {r['error']:.1e} | {tol} |")
    lines.append("")
    lines.append(f"{passed} of {len(cases)} cases pass (atol 1e-3, the suite's, or the case's own for a Monte Carlo "
                 f"reference).")
    return "\n".join(lines)


def check_init_case(case: Path) -> dict:
    """The worst absolute difference between the imported starting weights and the case's ``net1_ref.hdf5``."""
    import json
    import tempfile

    import h5py

    from ude_cli.errors import UdeError
    from ude_cli.petab import import_problem

    solutions = yaml.safe_load((case / "solutions.yaml").read_text())
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="ude-init-") as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                config = import_problem(case / "petab" / "problem.yaml", Path(tmp) / "c")
        except UdeError as exc:
            return {"refused": exc.lines()[0].split(": ", 1)[-1]}
        networks = json.loads((config.parent / "petab.json").read_text())["networks"]
        for net, ref in solutions["parameter_files"].items():
            with np.load(config.parent / f"{net}.npz") as ours, h5py.File(case / ref, "r") as f:
                for k, layer in enumerate(networks[net]["layers"]):
                    for part in ("weight", "bias"):
                        expected = np.asarray(f["parameters"][net][layer][part], dtype=float)
                        worst = max(worst, float(np.max(np.abs(ours[f"{part}{k}"].reshape(expected.shape) - expected))))
    return {"error": worst, "pass": worst <= solutions.get("tol", 1e-3)}


def init_table(cases: list[Path]) -> str:
    lines = ["| case | what it tests (suite README) | result | worst weight error |", "|---|---|---|---|"]
    passed = 0
    for case in cases:
        r = check_init_case(case)
        if "refused" in r:
            lines.append(f"| {case.name} | {what(case)} | not supported: {r['refused']} | |")
            continue
        passed += bool(r["pass"])
        lines.append(f"| {case.name} | {what(case)} | {'pass' if r['pass'] else 'FAIL'} | {r['error']:.1e} |")
    lines.append("")
    lines.append(f"{passed} of {len(cases)} cases pass (the imported starting weights against net1_ref.hdf5, "
                 f"absolute tolerance as solutions.yaml gives it).")
    return "\n".join(lines)


def check_case(case: Path) -> dict:
    """Errors of one case against its solutions.yaml: {"llh", "simulations", "gradient"} (worst absolute
    errors), "pass", or "refused" with the reason."""
    import h5py

    from ude_cli.errors import UdeError
    from ude_cli.petab import evaluate

    solutions = yaml.safe_load((case / "solutions.yaml").read_text())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = evaluate(case / "petab" / "problem.yaml", rtol=RTOL, atol=ATOL)
    except UdeError as exc:
        return {"refused": exc.lines()[0].split(": ", 1)[-1]}
    out: dict = {}
    if "llh" in solutions:
        out["llh"] = abs(result.llh - solutions["llh"])
    else:  # a problem with priors: its log-posterior (and the gradients are of it)
        out["llh"] = abs((result.log_posterior if result.log_posterior is not None else result.llh)
                         - solutions["log_posterior"])
    tol_llh = solutions.get("tol_llh", solutions.get("tol_log_posterior", 1e-3))
    sims = pd.concat([pd.read_csv(case / f, sep="\t") for f in solutions["simulation_files"]], ignore_index=True)
    ours = result.simulations
    keyed = {(r.observableId, r.simulationConditionId, float(r.time)): r.simulation for r in ours.itertuples()}
    out["simulations"] = max(abs(keyed[(r.observableId, r.experimentId, float(r.time))] - r.simulation)
                             for r in sims.itertuples())
    worst = 0.0
    for name, file in solutions.get("grad_files", {}).items():
        if name == "mech":
            ref = pd.read_csv(case / file, sep="\t")
            for r in ref.itertuples():
                worst = max(worst, abs(result.gradient.get(r.parameterId, math.nan) - r.value))
            continue
        with h5py.File(case / file, "r") as f:
            for lid, group in f["parameters"][name].items():
                for part in ("weight", "bias"):
                    expected = np.asarray(group[part], dtype=float)
                    if expected.size == 0:
                        continue
                    got = np.asarray(result.gradient_networks.get(name, {}).get(lid, {}).get(part, []), dtype=float)
                    worst = max(worst, float(np.max(np.abs(got.reshape(expected.shape) - expected)))
                                if got.size == expected.size else math.inf)
    out["gradient"] = worst
    out["pass"] = (out["llh"] <= tol_llh and out["simulations"] <= solutions.get("tol_simulations", 1e-3)
                   and worst <= solutions.get("tol_grad", 0.1))
    return out


def what(case: Path) -> str:
    readme = case / "README.md"
    if not readme.is_file():
        return ""
    lines = [line.strip() for line in readme.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return lines[0].replace("|", "/")[:90] if lines else ""


def table(cases: list[Path]) -> str:
    lines = ["| case | what it tests (suite README) | result | llh error | simulations error | gradient error |",
             "|---|---|---|---|---|---|"]
    passed = 0
    for case in cases:
        r = check_case(case)
        if "refused" in r:
            lines.append(f"| {case.name} | {what(case)} | not supported: {r['refused']} | | | |")
            continue
        passed += bool(r["pass"])
        lines.append(f"| {case.name} | {what(case)} | {'pass' if r['pass'] else 'FAIL'} | {r['llh']:.1e} | "
                     f"{r['simulations']:.1e} | {r['gradient']:.1e} |")
    lines.append("")
    lines.append(f"{passed} of {len(cases)} cases pass (tolerances: llh and simulations 1e-3 absolute, gradient 0.1 "
                 f"absolute, element by element, as the suite's solutions.yaml give them).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=VENDORED, help="folder of case folders")
    parser.add_argument("--ml-cases", type=Path, help="folder of ml_model_import case folders (instead)")
    parser.add_argument("--init-cases", type=Path, help="folder of initialization case folders (instead)")
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args()
    if args.ml_cases is not None:
        folder, make, (begin, end) = args.ml_cases, ml_table, (ML_BEGIN, ML_END)
    elif args.init_cases is not None:
        folder, make, (begin, end) = args.init_cases, init_table, (INIT_BEGIN, INIT_END)
    else:
        folder, make, (begin, end) = args.cases, table, (BEGIN, END)
    cases = sorted(p for p in folder.iterdir() if (p / "solutions.yaml").is_file())
    text = make(cases)
    h.print_or_write(text, args.write, begin, end)


if __name__ == "__main__":
    main()
