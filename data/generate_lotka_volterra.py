"""Generate data/lotka_volterra.csv by the canonical Lotka-Volterra UDE protocol.

Protocol (../shared/peers/README.md, "The protocol"): dx/dt = 1.3x - 0.9xy, dy/dt = -0.8y + 1.8xy,
x(0), y(0) = 0.44249296, 4.6280594; 21 points t = 0, 0.25, ..., 5 solved with scipy DOP853 at
rtol = atol = 1e-11; 5 % multiplicative Gaussian noise Y = X (1 + 0.05 eps), eps from
numpy.random.default_rng(0) drawn with shape (1, 21, 2).

Usage: python data/generate_lotka_volterra.py [--out data/lotka_volterra.csv] [--truth]
(--truth also writes the noiseless states, data/lotka_volterra_truth.csv).
"""

import argparse
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

ALPHA, BETA, GAMMA, DELTA = 1.3, 0.9, 0.8, 1.8
U0 = (0.44249296, 4.6280594)


def truth(t: np.ndarray) -> np.ndarray:
    def f(_, u):
        return [ALPHA * u[0] - BETA * u[0] * u[1], -GAMMA * u[1] + DELTA * u[0] * u[1]]

    return solve_ivp(f, (0, float(t[-1])), U0, t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("lotka_volterra.csv")))
    p.add_argument("--truth", action="store_true")
    a = p.parse_args()
    t = np.linspace(0.0, 5.0, 21)
    X = truth(t)[None]  # (1, 21, 2): the batch axis of the protocol
    Y = X * (1 + 0.05 * np.random.default_rng(0).standard_normal(X.shape))
    rows = ["t,prey,predator"] + [f"{ti:.2f},{x:.10g},{y:.10g}" for ti, (x, y) in zip(t, Y[0], strict=True)]
    Path(a.out).write_text("\n".join(rows) + "\n")
    if a.truth:
        rows = ["t,prey,predator"] + [f"{ti:.2f},{x:.12g},{y:.12g}" for ti, (x, y) in zip(t, X[0], strict=True)]
        Path(a.out).with_name("lotka_volterra_truth.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
