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
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "tests" / "data" / "petab" / "sciml"
BEGIN, END = "<!-- petab-sciml:begin -->", "<!-- petab-sciml:end -->"


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
            result = evaluate(case / "petab" / "problem.yaml")
    except UdeError as exc:
        return {"refused": exc.lines()[0].split(": ", 1)[-1]}
    out: dict = {}
    key = "llh" if "llh" in solutions else "log_posterior"
    out["llh"] = abs(result.llh - solutions[key])
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
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args()
    cases = sorted(p for p in args.cases.iterdir() if (p / "solutions.yaml").is_file())
    text = table(cases)
    if args.write is None:
        print(text)
        return
    doc = args.write.read_text()
    a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    args.write.write_text(doc[:a] + "\n" + text + "\n" + doc[b:])
    print(f"wrote the table into {args.write}")


if __name__ == "__main__":
    main()
