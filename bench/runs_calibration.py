"""How often ``ude discover``'s runs test calls a *correct* model systematic: its false-alarm rate.

For each noise level and seed, the protocol's 21 points (``lv_protocol.py``) with multiplicative noise
``Y = X (1 + level * eps)`` (``eps`` from ``numpy.random.default_rng(seed)``, as ``discover_loop.py``); the true
form (``dx/dt = 1.3 x + a x y``, ``dy/dt = -0.8 y + b x y``) refitted to them by the discovery's own refit
(:func:`ude_cli.discovery.refit.refit`); then the runs test of its residuals three ways: textbook (independent
signs), calibrated for the fit with each residual's own size as the noise's scale (the wild bootstrap, the
calibration before issue 16's fix), and calibrated with a variance that is a power of the fitted values (what
``ude discover`` uses). A calibrated test at level 0.01 should reject about 1 % of these correct models.

Usage::

    python bench/runs_calibration.py                       # seeds 0..219 at 1 % and 5 %, ~4 min on one core
    python bench/runs_calibration.py --seeds 40 --json

It prints; it asserts nothing (``tests/test_discover_trust.py`` checks the loop's three seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lv_protocol as lv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def true_form_fit(noise: float, seed: int, directory: Path):
    """The true form refitted to one noisy data set: ``(objective, system, refit)``."""
    from ude_cli.config import config_from_dict
    from ude_cli.discovery.refit import DataObjective, OdeSystem, refit
    from ude_cli.expressions import parse_expression
    from ude_cli.problem import Parameter, resolve

    t, _, X, _ = lv.make_data(1, 0)
    Y = X * (1 + noise * np.random.default_rng(seed).standard_normal(X.shape))
    path = directory / f"data_{noise:g}_{seed}.csv"
    path.write_text("t,prey,predator\n" + "\n".join(f"{a:.2f},{b:.10g},{c:.10g}" for a, b, c in zip(
        t, Y[0, :, 0], Y[0, :, 1], strict=True)) + "\n", encoding="utf-8")
    raw = {"name": "lv", "data": {"file": str(path), "columns": {"x": "prey", "y": "predator"}},
           "model": {"states": ["x", "y"], "parameters": {"alpha": {"init": lv.ALPHA, "fixed": True},
                                                          "gamma": {"init": lv.GAMMA, "fixed": True}},
                     "equations": {"x": "alpha*x + U[0]", "y": "-gamma*y + U[1]"},
                     "initial": {"x": lv.U0[0], "y": lv.U0[1]}},
           "networks": {"U": {"inputs": ["x", "y"], "outputs": 2}}}
    problem = resolve(config_from_dict(raw, label=str(path), path=directory / "config.yaml"))
    params = dict(problem.parameters)
    params["a"] = Parameter("a", -lv.BETA, False, None, None, False)
    params["b"] = Parameter("b", lv.DELTA, False, None, None, False)
    system = OdeSystem(problem, {"x": parse_expression("alpha*x + a*x*y"), "y": parse_expression("-gamma*y + b*x*y")},
                       params)
    objective = DataObjective(problem)
    return objective, system, refit(system, objective, {"a": -lv.BETA, "b": lv.DELTA})


def p_values(noise: float, seed: int, directory: Path) -> dict:
    from ude_cli.discovery.refit import predict_all
    from ude_cli.discovery.stability import calibrated_runs_p, local_fit

    objective, system, fit = true_form_fit(noise, seed, directory)
    linear = local_fit(fit)
    cells = (objective.cell_groups(), objective.cell_states(), objective.cell_experiments())
    preds, _ = predict_all(system, fit.values, fit.initial)
    observed = objective.observed(preds, fit.values)
    fitted = np.concatenate([o[objective.mask(b, "train")] for b, o in enumerate(observed)])
    return {"noise": noise, "seed": seed, "textbook": fit.runs_p, "wild": calibrated_runs_p(linear, *cells),
            "variance function": calibrated_runs_p(linear, *cells, fitted=fitted)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=220, help="noise seeds per level (default 220)")
    p.add_argument("--noise", default="0.01,0.05", help="noise levels, comma-separated (default 0.01,0.05)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = p.parse_args(argv)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ude-runs-") as tmp:
        rows = [p_values(float(noise), seed, Path(tmp)) for noise in args.noise.split(",") for seed in range(args.seeds)]
    if args.json:
        print(json.dumps({"runs": rows, "wall_s": time.perf_counter() - began}))
        return 0
    print(f"runs test on the true form refitted to the protocol's data, seeds 0..{args.seeds - 1} "
          f"({time.perf_counter() - began:.0f} s): the share of correct models called systematic\n")
    print(f"{'noise':>6}  {'test':<18} {'p < 0.01':>9} {'p < 0.05':>9} {'p < 0.10':>9}")
    for noise in sorted({r["noise"] for r in rows}):
        rs = [r for r in rows if r["noise"] == noise]
        for k in ("textbook", "wild", "variance function"):
            ps = np.array([r[k] for r in rs])
            print(f"{100 * noise:>5g}%  {k:<18} " + " ".join(f"{int((ps < a).sum()):>4}/{len(ps):<4}"
                                                           for a in (0.01, 0.05, 0.10)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
