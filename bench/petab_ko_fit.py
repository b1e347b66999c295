"""Ko_NeurIPS2023 (a neural ODE of a double pendulum, 4-50-50-2 gelu; PEtab SciML) fitted with `ude fit`
from the importer's start: the log-likelihood reached, beside the start's, on the training and the
validation problem.

`ude import` of the training problem (the network is a graph network: its gelu is the tanh approximation,
which ude's MLP has not got, so it runs on torchdiffeq), then `ude_cli.api.fit` with LBFGS for
--iterations iterations from the array file's weights (the importer's start) at the solver tolerances
--rtol/--atol; then `ude_cli.petab.evaluate` of the training and the validation problem at the start's and at
the fitted weights, at evaluate's tight tolerances (rtol 1e-10, atol 1e-12). The problem's README says its
nominal weights are not an optimum; it publishes no fitted value (PEtab.jl's or the paper's, which reports
errors of its own training scheme, not this likelihood). Times: wall seconds on this machine (shared, noisy).

    python bench/petab_ko_fit.py [--iterations 300] [--rtol 1e-6] [--atol 1e-8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
KO = ROOT / "tests" / "data" / "petab" / "sciml_benchmark" / "Ko_NeurIPS2023"


def main() -> None:
    from ude_cli.api import fit
    from ude_cli.config import load_config
    from ude_cli.petab import evaluate, import_problem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-8)
    args = parser.parse_args()
    expected = yaml.safe_load((KO / "expected_Ko_NeurIPS2023.yaml").read_text())["llh"]
    warnings.simplefilter("ignore", UserWarning)
    with tempfile.TemporaryDirectory() as tmp:
        train = import_problem(KO / "train_Ko_NeurIPS2023.yaml", Path(tmp) / "train")
        valid = import_problem(KO / "validation_Ko_NeurIPS2023.yaml", Path(tmp) / "validation")
        start = {"train": evaluate(train).llh, "validation": evaluate(valid).llh}
        cfg = yaml.safe_load(train.read_text())
        cfg["training"] = {"warm_start": "none", "stages": [{"optimizer": "lbfgs", "iterations": args.iterations}]}
        cfg["solver"].update(rtol=args.rtol, atol=args.atol)
        cfg["uncertainty"], cfg["output"] = {"hessian": "off", "bands": False}, {"plots": False}
        train.write_text(yaml.safe_dump(cfg))
        began = time.perf_counter()
        result = fit(load_config(train), n_starts=1)
        seconds = time.perf_counter() - began
        net = result.model.rhs.networks["net1"]
        best = int(result.metrics.get("best_start", 0))
        fitted = {name: array[best].detach().numpy() for name, array in zip(net.names, net.arrays, strict=True)}
        for config in (train, valid):
            np.savez(config.parent / "net1.npz", **fitted)  # type: ignore[arg-type]
        reached = {"train": evaluate(train).llh, "validation": evaluate(valid).llh}
    m = result.metrics
    print(f"Ko_NeurIPS2023: LBFGS {m['iterations']} iterations ({m['stop_reason']}), {seconds:.0f} s wall "
          f"({m['solver_engine']} engine, rtol {args.rtol:g}, atol {args.atol:g}; {m['solver_evaluations']} "
          f"right-hand sides)")
    print("| problem | llh expected at the start (file) | llh at the start (ude) | llh fitted (ude) |")
    print("|---|---|---|---|")
    for split, key in (("train", "training"), ("validation", "validation")):
        print(f"| {split} | {expected[key]:.4f} | {start[split]:.4f} | {reached[split]:.4f} |")


if __name__ == "__main__":
    main()
