"""Generate data/robertson.csv: Robertson's chemical kinetics with 1 % multiplicative noise.

dA/dt = -k1 A + k3 B C, dB/dt = k1 A - k2 B^2 - k3 B C, dC/dt = k2 B^2, with k1 = 0.04, k2 = 3e7,
k3 = 1e4 and A, B, C = 1, 0, 0 at t = 0 (Robertson 1966; Hairer & Wanner, Solving ODEs II, IV.1): rates
eleven orders of magnitude apart, the classic stiff test. 40 log-spaced times from 1e-4 to 1e5 (and
t = 0, where only A is given) solved with scipy Radau at rtol 1e-12, atol 1e-20 and the exact
Jacobian; then Y = X (1 + 0.01 eps), eps from numpy.random.default_rng(0) with shape (40, 3).

Usage: python data/generate_robertson.py [--out data/robertson.csv]
"""

import argparse
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

K1, K2, K3 = 0.04, 3e7, 1e4
TIMES = np.logspace(-4, 5, 40)


def rhs(_, y, k1=K1, k2=K2, k3=K3):
    a, b, c = y
    return [-k1 * a + k3 * b * c, k1 * a - k2 * b * b - k3 * b * c, k2 * b * b]


def jacobian(_, y, k1=K1, k2=K2, k3=K3):
    a, b, c = y
    return [[-k1, k3 * c, k3 * b], [k1, -2 * k2 * b - k3 * c, -k3 * b], [0, 2 * k2 * b, 0]]


def truth(t: np.ndarray, rtol: float = 1e-12, atol: float = 1e-20, k=(K1, K2, K3)) -> np.ndarray:
    """The states at ``t`` (which starts after 0), ``(len(t), 3)``."""
    return solve_ivp(rhs, (0.0, float(t[-1])), [1.0, 0.0, 0.0], t_eval=t, method="Radau", rtol=rtol, atol=atol,
                     jac=jacobian, args=k).y.T


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("robertson.csv")))
    a = p.parse_args()
    X = truth(TIMES)
    Y = X * (1 + 0.01 * np.random.default_rng(0).standard_normal(X.shape))
    rows = ["t,A,B,C", "0,1,,"] + [f"{t:.6g},{y[0]:.10g},{y[1]:.10g},{y[2]:.10g}" for t, y in zip(TIMES, Y, strict=True)]
    Path(a.out).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
