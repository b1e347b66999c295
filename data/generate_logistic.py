"""Generate data/logistic_growth.csv: two cultures growing logistically, 2 % multiplicative noise.

dN/dt = r N (1 - N/K) with r = 0.8, K = 100; culture A starts at N(0) = 5, culture B at N(0) = 20;
25 times t = 0, 0.5, ..., 12 from the exact solution N(t) = K / (1 + (K/N0 - 1) exp(-r t)), then
Y = N (1 + 0.02 eps) with eps from numpy.random.default_rng(0) of shape (2, 25) (culture A first).
configs/logistic_imitable.yaml fits it with a correction network that can imitate r and K (the
structural check flags both; docs/identifiability.md).

Usage: python data/generate_logistic.py [--out data/logistic_growth.csv]
"""

import argparse
from pathlib import Path

import numpy as np

R, K = 0.8, 100.0
STARTS = {"A": 5.0, "B": 20.0}


def truth(t: np.ndarray, n0: float) -> np.ndarray:
    return K / (1 + (K / n0 - 1) * np.exp(-R * t))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("logistic_growth.csv")))
    a = p.parse_args()
    t = np.linspace(0.0, 12.0, 25)
    X = np.stack([truth(t, n0) for n0 in STARTS.values()])
    Y = X * (1 + 0.02 * np.random.default_rng(0).standard_normal(X.shape))
    rows = ["culture,t,N"] + [f"{name},{ti:.1f},{y:.10g}" for name, ys in zip(STARTS, Y, strict=True)
                              for ti, y in zip(t, ys, strict=True)]
    Path(a.out).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
