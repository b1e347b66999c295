"""The vendored PEtab benchmark problems evaluated at their nominal values: a table for docs/petab.md.

For each problem under tests/data/petab/benchmark: `ude_cli.petab.evaluate` (the log-likelihood with every
normalising constant, at rtol 1e-10 / atol 1e-12), AMICI's reference where it has one (references.yaml), the
largest relative difference of the simulations from the collection's own simulatedData table, the solver and
the wall time of the evaluation (one process; the first includes torch's and CasADi's start-up). A problem
the importer refuses is listed with the one-line reason.

    python bench/petab_benchmarks.py                  # print the markdown table
    python bench/petab_benchmarks.py --write docs/petab.md   # replace the table between the markers there
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import harness as h
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tests" / "data" / "petab" / "benchmark"
BEGIN, END = "<!-- petab-benchmarks:begin -->", "<!-- petab-benchmarks:end -->"
#: problems whose simulatedData file holds something else: not compared
NOT_SIMULATIONS = {"Zheng_PNAS2012": "its simulations file holds its measurements (3 digits)"}


def rows() -> list[dict]:
    from ude_cli.errors import UdeError
    from ude_cli.petab import evaluate

    references = yaml.safe_load((BENCH / "references.yaml").read_text())
    out = []
    for folder in sorted(p for p in BENCH.iterdir() if p.is_dir()):
        name = folder.name
        ref = references.get(name, {}).get("llh")
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result = evaluate(folder / f"{name}.yaml")
        except UdeError as exc:
            out.append({"problem": name, "status": "refused: " + exc.lines()[0].split(": ", 1)[-1]})
            continue
        seconds = time.perf_counter() - started
        sim_file = folder / f"simulatedData_{name}.tsv"
        worst = None
        if sim_file.is_file() and name not in NOT_SIMULATIONS:
            # the collection's rows need not be in the measurement table's order: both sorted by their keys
            sim = pd.read_csv(sim_file, sep="\t", dtype={"observableParameters": str}, keep_default_na=False)
            ours = result.simulations.copy()
            meas = pd.read_csv(next(folder.glob("measurement*.tsv")), sep="\t", dtype=str, keep_default_na=False)
            ours["observableParameters"] = meas.get("observableParameters", "")
            if "observableParameters" not in sim:
                sim["observableParameters"] = ""
            sim = sim.rename(columns={"simulationCondition": "simulationConditionId"})  # Raia's file's spelling
            keys = ["observableId", "simulationConditionId", "observableParameters", "time"]
            if (sim["time"].astype(float) == np.inf).all():  # measured at steady state: ude measures it at t0
                sim["time"] = 0.0
            a = ours.sort_values(keys, kind="stable")["simulation"].to_numpy(dtype=float)
            b = sim.sort_values(keys, kind="stable")["simulation"].to_numpy(dtype=float)
            if len(a) == len(b):
                worst = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
            else:  # (Blasi's has more rows than its measurements: per observable, the one steady state)
                by = sim.groupby("observableId")["simulation"].agg(["min", "max"])
                if bool((by["min"] == by["max"]).all()):
                    first = ours.groupby("observableId")["simulation"].first()
                    theirs = by["min"].reindex(first.index).to_numpy(dtype=float)
                    worst = float(np.max(np.abs(first.to_numpy() - theirs) / np.maximum(np.abs(theirs), 1e-300)))
        diff = abs(result.llh - ref) if ref is not None else None
        status = "—" if ref is None else ("pass" if diff is not None and diff <= 1e-3 else "differs")
        out.append({"problem": name, "llh": result.llh, "reference": ref, "diff": diff, "status": status,
                    "sim": worst, "solver": result.solver["method"], "seconds": seconds,
                    "estimated": len(result.gradient), "measurements": len(result.simulations)})
    return out


def table(records: list[dict]) -> str:
    lines = ["| problem | estimated | measurements | llh (ude) | llh (AMICI) | difference | within 1e-3 | "
             "simulations vs the collection's (max rel.) | solver | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "llh" not in r:
            lines.append(f"| {r['problem']} | | | | | | {r['status']} | | | |")
            continue

        def num(x, fmt):
            return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

        lines.append(f"| {r['problem']} | {r['estimated']} | {r['measurements']} | {r['llh']:.6f} | "
                     f"{num(r['reference'], '.6f')} | {num(r['diff'], '.1e')} | {r['status']} | {num(r['sim'], '.1e')} | "
                     f"{r['solver']} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args()
    text = table(rows())
    h.print_or_write(text, args.write, BEGIN, END)


if __name__ == "__main__":
    main()
