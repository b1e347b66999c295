"""Generate the synthetic data of the discovery-refit configs in this folder.

Both use the canonical Lotka-Volterra UDE protocol (../../../../shared/peers/README.md): dx/dt = alpha x - 0.9 x y,
dy/dt = -0.8 y + 1.8 x y, solved with scipy DOP853 at rtol = atol = 1e-11, with multiplicative Gaussian noise
Y = X (1 + level eps), eps from numpy.random.default_rng(seed).

- lv_index.csv (seed 0, level 0.05): alpha = 1.3, x(0), y(0) = 0.44249296, 4.6280594, t = 0, 0.25, ..., 5; columns `prey`
  (x) and `predator_index` = 0.5 y (an index proportional to the predators, catchability q = 0.5).
- lv_three_sites.csv (seed 1, level 0.03): three sites with their own alpha = 1.1, 1.3, 1.5 and initial states
  (0.44249296, 4.6280594), (1.0, 2.0), (2.5, 1.0); t = 0, 0.25, ..., 6 each; columns `site, t, prey, predator`
  and the initial states `x0, y0` (known per site).

Usage: python tests/data/discover_refit/generate.py
"""

from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

BETA, GAMMA, DELTA = 0.9, 0.8, 1.8
HERE = Path(__file__).resolve().parent


def solve(alpha: float, u0, t: np.ndarray) -> np.ndarray:
    def f(_, u):
        return [alpha * u[0] - BETA * u[0] * u[1], -GAMMA * u[1] + DELTA * u[0] * u[1]]

    return solve_ivp(f, (0.0, float(t[-1])), list(u0), t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T


def main() -> None:
    t = np.linspace(0.0, 5.0, 21)
    X = solve(1.3, (0.44249296, 4.6280594), t)
    X[:, 1] *= 0.5  # the index observes q * y
    Y = X * (1 + 0.05 * np.random.default_rng(0).standard_normal(X.shape))
    rows = ["t,prey,predator_index"] + [f"{ti:.2f},{a:.10g},{b:.10g}" for ti, (a, b) in zip(t, Y, strict=True)]
    (HERE / "lv_index.csv").write_text("\n".join(rows) + "\n")

    t = np.linspace(0.0, 6.0, 25)
    rng = np.random.default_rng(1)
    rows = ["site,t,prey,predator,x0,y0"]
    for site, alpha, u0 in (("A", 1.1, (0.44249296, 4.6280594)), ("B", 1.3, (1.0, 2.0)), ("C", 1.5, (2.5, 1.0))):
        X = solve(alpha, u0, t)
        Y = X * (1 + 0.03 * rng.standard_normal(X.shape))
        rows += [f"{site},{ti:.2f},{a:.10g},{b:.10g},{u0[0]:.10g},{u0[1]:.10g}" for ti, (a, b) in zip(t, Y, strict=True)]
    (HERE / "lv_three_sites.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
