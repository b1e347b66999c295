"""Dandekar_Patterns2020 (PEtab SciML benchmark collection): `ude evaluate` at the collection's values, then
`ude fit` of the training problem from the importer's start, beside the collection's expected log-likelihoods.

The problem (tests/data/petab/sciml_benchmark/Dandekar_Patterns2020, sebapersson/Benchmark-Models-PEtab-SciML
commit 09634e1): an SIR model with quarantine whose quarantine rate is a 3-10-1 silu network of S/N, I/N, R/N,
fitted to UK COVID-19 data (64 days, 2 observables); a validation problem holds the following 16 days. The
collection gives the log-likelihood at its parameters (the array file's weights and the table's nominal values):
-118.3492 (training), -30.3959 (validation). It publishes no fit times.

What is printed, each computed here in this run:

1. the log-likelihood of both problems at the collection's values (`ude_cli.petab.evaluate`), beside theirs;
2. `ude fit TRAIN.yaml` (the library's `fit_one`, as the command runs it: the importer's start, its default
   training: LBFGS, 500 iterations), its wall time and the training log-likelihood it reached
   (`metrics.json`: likelihood.nll, ude's log-likelihood with every normalising constant);
3. the validation problem's log-likelihood at the fitted values: the validation problem imported, its network
   weights replaced by the fitted ones, evaluated at the fitted mechanistic values.

    python bench/petab_dandekar_fit.py            # about a minute or two on a shared 2-core machine
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "data" / "petab" / "sciml_benchmark" / "Dandekar_Patterns2020"


def main() -> None:
    from ude_cli.batch.outcomes import fit_one
    from ude_cli.petab import evaluate, import_problem

    warnings.simplefilter("ignore", UserWarning)
    expected = yaml.safe_load((FOLDER / "expected_Dandekar_Patterns2020.yaml").read_text())["llh"]
    train, validation = (FOLDER / f"{p}_Dandekar_Patterns2020.yaml" for p in ("train", "validation"))
    at = {"train": evaluate(train).llh, "validation": evaluate(validation).llh}
    print("| problem | llh (ude, collection's values) | llh (collection) | difference |")
    print("|---|---|---|---|")
    for name, key in (("train", "training"), ("validation", "validation")):
        print(f"| {name} | {at[name]:.6f} | {expected[key]:.6f} | {abs(at[name] - expected[key]):.1e} |")

    with tempfile.TemporaryDirectory(prefix="ude-dandekar-") as tmp:
        started = time.perf_counter()
        outcome, result = fit_one(train, out=Path(tmp) / "run", plots=False)
        seconds = time.perf_counter() - started
        if not outcome.ok:
            raise SystemExit(f"the fit failed: {outcome.error}")
        reached = -float(result.metrics["likelihood"]["nll"])
        values = {k: float(v) for k, v in result.values.items() if k in ("beta", "gamma", "delta")}
        net = result.model.rhs.networks["net1"]  # best start first
        weights = {}
        for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            weights[f"weight{k}"] = w[0].detach().numpy().T  # PyTorch layout (out, in)
            weights[f"bias{k}"] = b[0, 0].detach().numpy()
        config = import_problem(validation, Path(tmp) / "validation")
        np.savez(config.parent / "net1.npz", **weights)
        held_out = evaluate(config, values=values).llh
        iterations = result.metrics.get("iterations")
    print()
    print("| | llh train | llh validation | seconds | iterations |")
    print("|---|---|---|---|---|")
    print(f"| start (importer's: the collection's values) | {at['train']:.4f} | {at['validation']:.4f} | | |")
    print(f"| ude fit from the start | {reached:.4f} | {held_out:.4f} | {seconds:.1f} | {iterations} |")
    print(f"| collection (expected_Dandekar_Patterns2020.yaml) | {expected['training']:.4f} | "
          f"{expected['validation']:.4f} | not published | |")
    print()
    print("fitted: " + ", ".join(f"{k} {v:.6g}" for k, v in values.items()))


if __name__ == "__main__":
    main()
