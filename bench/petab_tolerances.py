"""A benchmark problem's llh at its nominal values against the ODE solver's tolerances, beside AMICI's reference.

AMICI's stored reference log-likelihoods (tests/data/petab/benchmark/references.yaml) were computed by CVODES
(BDF) at rtol = atol = 1e-8 (AMICI's tests/benchmark_models/test_petab_benchmark.py,
``test_nominal_parameters_llh``), and AMICI's own test accepts a value within ``1e-3 + 1e-3 * |reference|``
(``np.isclose``). For each solver of ``ude`` (dopri5 and the stiff BDF) this prints the llh at a ladder of
tolerances, and how far each is from the value both converge to at the tightest: where the reference is more
than 1e-3 from the converged value and a loose BDF solve lands as far from it, the reference carries its
solver's error.

    python bench/petab_tolerances.py [--problem Crauste_CellSystems2017]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tests" / "data" / "petab" / "benchmark"
LADDER = [(1e-6, 1e-6), (1e-8, 1e-8), (1e-8, 1e-10), (1e-10, 1e-12), (1e-12, 1e-14)]


def llh_at(config: Path, method: str, rtol: float, atol: float) -> float:
    from ude_cli.petab import evaluate

    cfg = yaml.safe_load(config.read_text())
    cfg["solver"].update({"method": method, "rtol": rtol, "atol": atol})
    variant = config.with_name(f"config_{method}_{rtol:g}_{atol:g}.yaml")
    variant.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return evaluate(variant, rtol=rtol, atol=atol).llh


def main() -> None:
    from ude_cli.petab import import_problem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="Crauste_CellSystems2017")
    args = parser.parse_args()
    reference = yaml.safe_load((BENCH / "references.yaml").read_text()).get(args.problem, {}).get("llh")
    warnings.simplefilter("ignore", UserWarning)
    with tempfile.TemporaryDirectory() as tmp:
        config = import_problem(BENCH / args.problem / f"{args.problem}.yaml", Path(tmp) / "imported")
        values = {(m, r, a): llh_at(config, m, r, a) for m in ("dopri5", "bdf") for r, a in LADDER}
    converged = values[("dopri5", *LADDER[-1])]
    print(f"{args.problem}: llh at the nominal values; converged value (dopri5 at rtol {LADDER[-1][0]:g}, atol "
          f"{LADDER[-1][1]:g}) {converged:.7f}; AMICI's reference "
          + (f"{reference:.7f} ({reference - converged:+.1e} from it)" if reference is not None else "none"))
    print()
    print("| solver | rtol | atol | llh | minus the converged value |")
    print("|---|---|---|---|---|")
    for (method, rtol, atol), llh in values.items():
        print(f"| {method} | {rtol:g} | {atol:g} | {llh:.7f} | {llh - converged:+.1e} |")
    if reference is not None:
        print(f"| AMICI (CVODES BDF, stored) | 1e-8 | 1e-8 | {reference:.7f} | {reference - converged:+.1e} |")


if __name__ == "__main__":
    main()
