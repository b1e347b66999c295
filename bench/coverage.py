"""Coverage of ude's intervals on synthetic data with a known truth (docs/identifiability.md).

For each model, ``--replicates`` data sets are simulated from the true parameters with fresh noise, each
is fitted with ``ude_cli.fit`` (``--profile`` adds profile likelihoods), and we count how often the
nominal 95 % intervals contain the true value. A binomial 95 % range for the count is printed beside it:
a well-calibrated interval's coverage falls in it 95 % of the time.

    python bench/coverage.py --replicates 100 [--profile] [--models logistic,sir,ude_death]

Models (all written out as configs in a temporary directory, so that exactly `ude fit`'s path runs):
- ``logistic``: dN/dt = r N (1 - N/K), r = 0.8, K = 100, N(0) = 5 learned too; 25 times on [0, 12],
  normal noise sd 3 (estimated).
- ``sir``: S, I, R with beta = 1.7, gamma = 0.5 (fractions; N = 1), I observed at 30 times on [0, 14] with
  normal noise sd 0.01 (estimated).
- ``ude_death``: Lotka-Volterra with the predator's rates gamma = 1.8 and delta = 0.8 learned, alpha = 1.3
  known, and the predation term of the prey learned as x*U(y): no network feeds dy/dt, so neither rate is
  imitable; 31 times on [0, 6], 2 % multiplicative noise, log-normal noise model (sigma estimated). Coverage of a UDE's intervals: the network may fit noise and make them too narrow.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.integrate import solve_ivp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _logistic(rng):
    t = np.linspace(0, 12, 25)
    r, K, n0 = 0.8, 100.0, 5.0
    n = K / (1 + (K / n0 - 1) * np.exp(-r * t))
    y = n + rng.normal(0, 3.0, t.size)
    data = {"t": t, "N": y}
    config = """
data: {file: data.csv, time: t, columns: {N: N}}
model:
  states: [N]
  parameters:
    r: {init: 0.5, positive: true}
    K: {init: 80, positive: true}
  equations: {N: r*N*(1 - N/K)}
  initial: {N: {learn: true, positive: true}}
noise: normal
solver: {rtol: 1.0e-8, atol: 1.0e-8}
training: {stages: [{optimizer: lbfgs, iterations: 1000}]}
"""
    return data, config, {"r": r, "K": K, "N(t0)": n0}


def _sir(rng):
    t = np.linspace(0, 14, 30)
    beta, gamma = 1.7, 0.5

    def f(_, u):
        s, i, _r = u
        return [-beta * s * i, beta * s * i - gamma * i, gamma * i]

    sol = solve_ivp(f, (0, 14), [0.99, 0.01, 0.0], t_eval=t, rtol=1e-10, atol=1e-12)
    i = sol.y[1] + rng.normal(0, 0.01, t.size)
    data = {"t": t, "I": i}
    config = """
data: {file: data.csv, time: t, columns: {I: I}}
model:
  states: [S, I, R]
  parameters:
    beta: {init: 1.2, positive: true}
    gamma: {init: 0.3, positive: true}
  equations: {S: -beta*S*I, I: beta*S*I - gamma*I, R: gamma*I}
  initial: {S: 0.99, I: 0.01, R: 0.0}
noise: normal
solver: {rtol: 1.0e-8, atol: 1.0e-8}
training: {stages: [{optimizer: lbfgs, iterations: 1000}]}
"""
    return data, config, {"beta": beta, "gamma": gamma}


def _ude_death(rng):
    t = np.linspace(0, 6, 31)
    alpha, beta, delta, gamma = 1.3, 0.9, 0.8, 1.8

    def f(_, u):
        x, y = u
        return [alpha * x - beta * x * y, delta * x * y - gamma * y]

    sol = solve_ivp(f, (0, 6), [0.44, 4.63], t_eval=t, rtol=1e-10, atol=1e-12)
    y = sol.y * (1 + rng.normal(0, 0.02, sol.y.shape))
    data = {"t": t, "x": y[0], "y": y[1]}
    config = """
data: {file: data.csv, time: t, columns: {x: x, y: y}}
model:
  states: [x, y]
  parameters:
    alpha: {init: 1.3, fixed: true}
    gamma: {init: 1.0, positive: true}
    delta: {init: 0.5, positive: true}
  equations: {x: "alpha*x + x*U[0]", y: delta*x*y - gamma*y}
  initial: {x: 0.44, y: 4.63}
networks:
  U: {inputs: [y], outputs: 1, hidden: [8], activation: tanh}
noise: lognormal
training:
  weight_decay: 1.0e-4
  stages: [{optimizer: lbfgs, iterations: 1500}]
"""
    return data, config, {"gamma": gamma, "delta": delta}


MODELS = {"logistic": _logistic, "sir": _sir, "ude_death": _ude_death}


def run(model: str, replicates: int, profile: bool, seed: int = 0) -> dict:
    import pandas as pd

    from ude_cli import fit, load_config

    make = MODELS[model]
    hits: dict[tuple[str, str], int] = {}
    counted: dict[tuple[str, str], int] = {}
    failures = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(replicates):
            rng = np.random.default_rng(seed + 1000 * k)
            data, config, truth = make(rng)
            d = Path(tmp) / f"rep{k}"
            d.mkdir()
            pd.DataFrame(data).to_csv(d / "data.csv", index=False)
            text = config + ("uncertainty: {profile: true}\n" if profile else "")
            (d / "config.yaml").write_text(f"name: rep{k}\n" + text)
            try:
                result = fit(load_config(d / "config.yaml"))
            except Exception as exc:  # a failed fit counts as a miss of every interval
                failures += 1
                print(f"  replicate {k}: fit failed: {exc}", file=sys.stderr)
                continue
            unc = result.metrics["uncertainty"]
            methods = {"wald": {w["name"]: w for w in (unc["wald"] or {}).get("intervals", [])},
                       "profile": {p["name"]: p for p in unc["profiles"]}}
            for method, table in methods.items():
                for name, true in truth.items():
                    row = table.get(name)
                    if row is None:
                        continue
                    key = (name, method)
                    counted[key] = counted.get(key, 0) + 1
                    lo = -np.inf if row["lower"] is None else row["lower"]
                    hi = np.inf if row["upper"] is None else row["upper"]
                    hits[key] = hits.get(key, 0) + int(lo <= true <= hi)
    return {"hits": hits, "counted": counted, "failures": failures, "seconds": time.perf_counter() - started}


def binomial_range(n: int, p: float = 0.95) -> tuple[float, float]:
    lo, hi = stats.binom.ppf([0.025, 0.975], n, p)
    return lo / n, hi / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--models", default="logistic,sir,ude_death")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"coverage of nominal 95 % intervals, {args.replicates} replicates per model (seed {args.seed})")
    print(f"{'model':10} {'parameter':9} {'method':8} {'covered':>9} {'coverage':>9}  binomial 95 % range if calibrated")
    for model in args.models.split(","):
        out = run(model, args.replicates, args.profile, args.seed)
        for (name, method), n in sorted(out["counted"].items()):
            h = out["hits"][(name, method)]
            lo, hi = binomial_range(n)
            print(f"{model:10} {name:9} {method:8} {h:>4}/{n:<4} {h / n:>9.1%}  [{lo:.1%}, {hi:.1%}]")
        print(f"{model:10} {out['failures']} failed fits; {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
