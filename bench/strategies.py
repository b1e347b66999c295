"""The training strategies on the UDE paper's scenario 2: Lotka-Volterra, the predator seen at 6 of 60 times.

The protocol's system (bench/README.md, /work/shared/peers): dx/dt = 1.3 x - 0.9 x y, dy/dt = -0.8 y + 1.8 x y,
x(0), y(0) = 0.44249296, 4.6280594, solved with scipy DOP853 at 1e-11 on ``--span`` time units (60 evenly
spaced times), 5 % multiplicative noise (numpy default_rng(0)); the prey observed at all 60 times, the
predator at 6 of them (evenly spread, the first and last included). The UDE: dx/dt = 1.3 x + U[0],
dy/dt = -0.8 y + U[1], the protocol's 2-5-5-5-2 rbf network.

One row per ``training.strategy`` (each in-process, one after the other): training MSE; the learned terms'
relative RMS error against the true -0.9 x y and 1.8 x y along the true trajectory (300 points); training
seconds and iterations; for ``auto``, what it chose. Prints a table; nothing here asserts (the slow test
the known answers of the strategies are asserted in tests/test_strategies.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRUE_U0 = (0.44249296, 4.6280594)


def truth(t: np.ndarray) -> np.ndarray:
    from scipy.integrate import solve_ivp

    def f(_, u):
        return [1.3 * u[0] - 0.9 * u[0] * u[1], -0.8 * u[1] + 1.8 * u[0] * u[1]]

    return solve_ivp(f, (t[0], t[-1]), list(TRUE_U0), t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T


def write_data(directory: Path, span: float, n: int = 60, seen: int = 6, noise: float = 0.05) -> Path:
    t = np.linspace(0.0, span, n)
    y = truth(t) * (1 + noise * np.random.default_rng(0).standard_normal((n, 2)))
    keep = set(np.round(np.linspace(0, n - 1, seen)).astype(int).tolist())
    lines = ["t,prey,predator"] + [f"{a:.10g},{b:.10g},{c:.10g}" if i in keep else f"{a:.10g},{b:.10g},"
                                   for i, (a, (b, c)) in enumerate(zip(t, y, strict=True))]
    path = directory / "sparse_lv.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_config(data: Path, strategy: str) -> dict:
    return {"data": {"file": str(data), "time": "t", "columns": {"x": "prey", "y": "predator"}},
            "model": {"states": ["x", "y"],
                      "parameters": {"alpha": {"init": 1.3, "fixed": True}, "gamma": {"init": 0.8, "fixed": True}},
                      "equations": {"x": "alpha*x + U[0]", "y": "-gamma*y + U[1]"},
                      "initial": {"x": TRUE_U0[0], "y": TRUE_U0[1]}},
            "networks": {"U": {"inputs": ["x", "y"], "outputs": 2, "hidden": [5, 5, 5], "activation": "rbf",
                               "normalize": False, "final_scale": 1.0, "seed": 100}},
            "solver": {"method": "dopri5", "rtol": 1e-6, "atol": 1e-6},
            "training": {"strategy": strategy}}


def term_errors(model, span: float) -> tuple[float, float]:
    """Relative RMS error of the learned terms against -0.9 x y and 1.8 x y along the true trajectory."""
    t = np.linspace(0.0, span, 300)
    x = truth(t)
    learned = model.terms_along(t, x[:, None, :])["U"][:, 0, :]
    true = np.stack([-0.9 * x[:, 0] * x[:, 1], 1.8 * x[:, 0] * x[:, 1]], 1)
    err = np.sqrt(((learned - true) ** 2).mean(0)) / np.sqrt((true ** 2).mean(0))
    return float(err[0]), float(err[1])


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def stage_started(self, *args): pass

    def advanced(self, *args): pass

    def stage_finished(self, *args): pass

    def message(self, text: str) -> None:
        self.lines.append(text)


def fit_one(data: Path, strategy: str, span: float, workdir: Path) -> dict:
    from tests.helpers import config
    from ude_cli import fit

    lines = _Lines()
    result = fit(config(raw_config(data, strategy), workdir), monitor=lines)
    m = result.metrics
    ex, ey = term_errors(result.model, span)
    chosen = next((s for s in lines.lines if s.startswith("training strategy:")), "")
    return {"strategy": strategy, "ran": m["strategy"], "mse": m["loss"], "x_term": ex, "y_term": ey,
            "seconds": m["wall_seconds"], "iterations": m["iterations"], "chosen": chosen}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--span", type=float, default=15.0, help="time span of the 60 times (default 15: 2 periods)")
    p.add_argument("--strategies", default="single_shooting,multiple_shooting,curriculum,auto")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), a.span)
        rows = [fit_one(data, s, a.span, Path(tmp)) for s in a.strategies.split(",")]
    print(f"Lotka-Volterra on [0, {a.span:g}], prey at 60 times, predator at 6, 5 % noise")
    print(f"{'strategy':<18} {'ran':<18} {'train MSE':>10} {'x-term err':>10} {'y-term err':>10} {'seconds':>8} {'iters':>6}")
    for r in rows:
        print(f"{r['strategy']:<18} {r['ran']:<18} {r['mse']:>10.3g} {r['x_term']:>10.1%} {r['y_term']:>10.1%} "
              f"{r['seconds']:>8.1f} {r['iterations']:>6}")
    for r in rows:
        if r["chosen"]:
            print(r["chosen"])


if __name__ == "__main__":
    main()
