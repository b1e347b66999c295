"""The official PEtab test suite's SBML cases (v1.0.0 and v2.0.0) through `ude evaluate`: the pass table of
docs/petab.md.

For each case (`tests/data/petab/test_suite/VERSION/NNNN`, vendored from PEtab-dev/petab_test_suite): the
log-likelihood and the simulations at the nominal values against `_NNNN_solution.yaml` (`tol_llh`,
`tol_simulations`), or the one line with which the importer refuses the case. What a case tests comes from
the suite's README.

    python bench/petab_test_suite.py                         # prints the table
    python bench/petab_test_suite.py --write docs/petab.md   # replaces it there
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import harness as h
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "data" / "petab" / "test_suite"
BEGIN, END = "<!-- petab-test-suite:begin -->", "<!-- petab-test-suite:end -->"


def descriptions(version: Path) -> dict[str, str]:
    """Case -> what it tests (the README's paragraph under its heading)."""
    text = (version / "README.md").read_text()
    out = {}
    for case, body in re.findall(r"# \[(\d{4})\]\(\d{4}/\)\s*\n+(.*?)(?=\n# \[|\Z)", text, flags=re.S):
        out[case] = " ".join(body.split())
    return out


def check_case(case: Path) -> dict:
    """``{status, llh error, simulation error, line}`` of one case."""
    from ude_cli.errors import UdeError
    from ude_cli.petab import evaluate

    solution = yaml.safe_load((case / f"_{case.name}_solution.yaml").read_text())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = evaluate(case / f"_{case.name}.yaml")
    except UdeError as exc:
        return {"status": "refused", "line": exc.lines()[0].split(": ", 1)[-1]}
    reference = pd.concat([pd.read_csv(case / f, sep="\t") for f in solution["simulation_files"]])
    ours = result.simulations
    llh_error = abs(result.llh - solution["llh"])
    if len(ours) != len(reference) or list(ours["observableId"]) != list(reference["observableId"]):
        sim_error = float("inf")
    else:
        sim_error = float(np.max(np.abs(ours["simulation"].to_numpy(float) - reference["simulation"].to_numpy(float))))
    ok = llh_error <= solution["tol_llh"] and sim_error <= solution["tol_simulations"]
    return {"status": "pass" if ok else "fail", "llh": llh_error, "sim": sim_error, "ude": result.llh,
            "reference": solution["llh"]}


def table() -> str:
    rows = ["| version | case | what it tests | result | llh (ude) | llh (reference) | llh error | worst simulation "
            "error |", "|---|---|---|---|---|---|---|---|"]
    counts: dict[str, list[int]] = {}
    for version in sorted(p for p in SUITE.iterdir() if p.is_dir()):
        what = descriptions(version)
        for case in sorted(p for p in version.iterdir() if p.is_dir()):
            r = check_case(case)
            tally = counts.setdefault(version.name, [0, 0])
            tally[1] += 1
            tally[0] += r["status"] == "pass"
            if r["status"] == "refused":
                rows.append(f"| {version.name} | {case.name} | {what.get(case.name, '')} | refused: {r['line']} | | | | |")
            else:
                rows.append(f"| {version.name} | {case.name} | {what.get(case.name, '')} | {r['status']} | "
                            f"{r['ude']:.6f} | {r['reference']:.6f} | {r['llh']:.1e} | {r['sim']:.1e} |")
    summary = "; ".join(f"{v}: {p} of {n} pass" for v, (p, n) in counts.items())
    return "\n".join([f"{summary} (tolerances: each case's own, 1e-3).", "", *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args()
    h.print_or_write(table(), args.write, BEGIN, END)


if __name__ == "__main__":
    main()
