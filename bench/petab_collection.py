"""Every problem of a Benchmark-Models-PEtab checkout through `ude_cli.petab.evaluate`: the llh at the nominal
values beside AMICI's reference where tests/data/petab/benchmark/references.yaml has one, or the one-line
reason a problem is refused. For problems the importer was not written against (docs/petab.md, "The whole
collection").

    python bench/petab_collection.py PATH/Benchmark-Models [--timeout 300] [--skip Chen_MSB2009 ...]
"""

from __future__ import annotations

import argparse
import signal
import time
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: AMICI's references (tests/benchmark_models/benchmark_models.yaml at commit 5c524dd) of problems not vendored
OTHER_REFERENCES = {"Bachmann_MSB2011": 418.40573341425295, "Beer_MolBioSystems2014": 58622.9145631413,
                    "Brannmark_JBC2010": -141.889113770537, "Chen_MSB2009": -115700.1192629893,
                    "Fujita_SciSignal2010": 53.08377736998929, "Isensee_JCB2018": -3949.375966548649,
                    "Lucarelli_CellSystems2018": -1681.6059879426584, "Smith_BMCSystBiol2013": -888198.436541014,
                    "Weber_BMC2015": -296.2017922646865, "Zheng_PNAS2012": 278.33353271001477}


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def main() -> None:
    from ude_cli.errors import UdeError
    from ude_cli.petab import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per problem")
    parser.add_argument("--skip", nargs="*", default=[], help="problems left out (listed as such)")
    args = parser.parse_args()
    references = {k: v["llh"] for k, v in
                  yaml.safe_load((ROOT / "tests/data/petab/benchmark/references.yaml").read_text()).items()}
    references.update(OTHER_REFERENCES)
    signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore", UserWarning)
    print("| problem | llh (ude) | llh (AMICI) | difference | solver | seconds |")
    print("|---|---|---|---|---|---|")
    for folder in sorted(p for p in args.folder.iterdir() if p.is_dir()):
        name = folder.name
        if name in args.skip:
            print(f"| {name} | left out (--skip) | | | | |", flush=True)
            continue
        problem = folder / f"{name}.yaml"
        if not problem.is_file():
            problem = next(iter(sorted(folder.glob("*.yaml"))), problem)
        started = time.perf_counter()
        signal.alarm(args.timeout)
        try:
            result = evaluate(problem)
        except UdeError as exc:
            print(f"| {name} | refused: {exc.lines()[0].split(': ', 1)[-1][:160]} | | | | |", flush=True)
            continue
        except _Timeout:
            print(f"| {name} | over {args.timeout} s | | | | |", flush=True)
            continue
        finally:
            signal.alarm(0)
        ref = references.get(name)
        diff = f"{abs(result.llh - ref):.1e}" if ref is not None else "—"
        print(f"| {name} | {result.llh:.6f} | {'—' if ref is None else f'{ref:.6f}'} | {diff} | "
              f"{result.solver['method']} | {time.perf_counter() - started:.1f} |", flush=True)


if __name__ == "__main__":
    main()
