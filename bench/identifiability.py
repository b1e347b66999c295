"""Speed of the intervals (issue 14, item 6): the canonical Lotka-Volterra UDE with alpha, gamma and both
initial values learned (4 values, the 2-5-5-5-2 rbf network), on the compiled engine in native code.

Prints, in one run: the fit's own time (the baseline), the Wald intervals with the network profiled out,
and the profiles of all 4 values (everything else, the 87 network weights included, re-optimised at each
point), with each interval. Targets: Wald under 1 s, profiles under 20 s on a 2-core machine.

    python bench/identifiability.py
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = f"""
name: lv_four_learned
data: {{file: {ROOT / 'data/lotka_volterra.csv'}, time: t, columns: {{x: prey, y: predator}}}}
model:
  states: [x, y]
  parameters:
    alpha: {{init: 1.0, positive: true}}
    gamma: {{init: 1.0, positive: true}}
  equations: {{x: "alpha*x + U[0]", y: "-gamma*y + U[1]"}}
  initial: {{x: {{learn: true, positive: true}}, y: {{learn: true, positive: true}}}}
networks:
  U: {{inputs: [x, y], outputs: 2, hidden: [5, 5, 5], activation: rbf, final_scale: 1.0, normalize: false,
       seed: 100}}
solver: {{method: dopri5, rtol: 1.0e-6, atol: 1.0e-6}}
training:
  weight_decay: 1.0e-3
  stages: [{{optimizer: lbfgs, iterations: 1000}}]
uncertainty: {{hessian: profiled, bands: false}}
"""


def main() -> None:
    from ude_cli import fit, load_config
    from ude_cli.fitting.multistart import single_start
    from ude_cli.identifiability.function import LikelihoodFunction, final_weight_decay, targets
    from ude_cli.identifiability.hessian import wald_intervals
    from ude_cli.identifiability.uncertainty import assess

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(textwrap.dedent(CONFIG))
        cfg = load_config(path)
        fit(cfg)  # once: native code compiled into the cache, as on a user's second fit
        t0 = time.perf_counter()
        result = fit(cfg)
        fit_seconds = time.perf_counter() - t0 - result.metrics["uncertainty"]["seconds"]
        problem, model = result.problem, result.model
        one = single_start(model, 0)
        f = LikelihoodFunction(one, final_weight_decay(problem))
        ts = targets(one, problem, f.objective)
        wald_intervals(f, ts, network="profiled")  # warm: the single-start copy's native code loaded
        t0 = time.perf_counter()
        wald = wald_intervals(f, ts, network="profiled")
        wald_seconds = time.perf_counter() - t0
        profiled_cfg = cfg.model_copy(update={"uncertainty": cfg.uncertainty.model_copy(update={"profile": True})})
        from ude_cli.problem import resolve

        t0 = time.perf_counter()
        unc = assess(resolve(profiled_cfg), model, 0)
        profile_seconds = time.perf_counter() - t0
    print(f"engine {result.metrics['solver_engine']}, native code {result.metrics.get('native_code')}")
    print(f"{'the fit (baseline)':40} {fit_seconds:8.2f} s   train mse {result.metrics['loss']:.4g}")
    print(f"{'wald, network profiled out':40} {wald_seconds:8.2f} s   ({wald.evaluations} evaluations)")
    print(f"{'profiles of 4 values + wald':40} {profile_seconds:8.2f} s")
    print(f"{'value':8} {'estimate':>10} {'wald interval':>24} {'inflation':>10} {'profile interval':>24} points")
    by_wald = {w.name: w for w in wald.intervals}
    for p in unc.profiles:
        w = by_wald[p.name]
        print(f"{p.name:8} {p.value:10.4g} [{w.lower:10.4g}, {w.upper:10.4g}] {w.inflation or float('nan'):10.3g} "
              f"[{p.lower:10.4g}, {p.upper:10.4g}] {len(p.points)}")


if __name__ == "__main__":
    main()
