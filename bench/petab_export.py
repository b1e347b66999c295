"""Every bundled config exported as a PEtab SciML problem and read back: a table for docs/petab.md.

For each configs/*.yaml: `ude_cli.petab.export` into a temporary folder (without its own check), then
`ude_cli.petab.evaluate` of the config (the original's log-likelihood, ude's objective) and of the exported
problem.yaml (re-imported by ude's PEtab importer), both at rtol 1e-10 and atol 1e-12 (or the config's tighter
atol), and once more at rtol 1e-12 where the two differ by more than 1e-8 (to tell the solver's error from the
translation's). A config the export refuses is listed with its one-line reason.

    python bench/petab_export.py                        # print the markdown table
    python bench/petab_export.py --write docs/petab.md  # replace the table between the markers there
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import harness as h

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- petab-export:begin -->", "<!-- petab-export:end -->"


def rows() -> list[dict]:
    from ude_cli.config import load_config
    from ude_cli.errors import UdeError
    from ude_cli.petab import evaluate, export

    out = []
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        name = config.stem
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            started = time.perf_counter()
            try:
                result = export(config, Path(tmp) / "petab", check=False)
            except UdeError as exc:
                out.append({"config": name, "refused": exc.lines()[0].split(f"{config}: ", 1)[-1]})
                continue
            atol = min(1e-12, load_config(config).solver.atol)
            row = {"config": name, "files": len(result.files), "notes": result.notes}
            for rtol in (1e-10, 1e-12):
                a = evaluate(config, rtol=rtol, atol=atol)
                b = evaluate(result.problem, rtol=rtol, atol=atol)
                row[rtol] = (a.llh, b.llh, abs(a.llh - b.llh))
                row["measurements"] = len(b.simulations)
                if row[rtol][2] <= 1e-8:
                    break
            row["seconds"] = time.perf_counter() - started
            out.append(row)
    return out


def table(records: list[dict]) -> str:
    lines = ["| config | measurements | llh (ude evaluate CONFIG) | llh (exported, re-imported) | difference | "
             "at rtol 1e-12 | seconds |", "|---|---|---|---|---|---|---|"]
    for r in records:
        if "refused" in r:
            lines.append(f"| {r['config']} | refused: {r['refused']} | | | | | |")
            continue
        a, b, d = r[1e-10]
        tight = f"{r[1e-12][2]:.1e}" if 1e-12 in r else ""
        lines.append(f"| {r['config']} | {r['measurements']} | {a:.10f} | {b:.10f} | {d:.1e} | {tight} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args()
    text = table(rows())
    h.print_or_write(text, args.write, BEGIN, END)


if __name__ == "__main__":
    main()
