"""Generate data/spiral.csv: torchdiffeq's ode_demo problem (``examples/ode_demo.py``).

dy/dt = (y**3) @ A with A = [[-0.1, 2.0], [-2.0, -0.1]], y(0) = (2, 0); 1000 points on [0, 25];
no noise. Solved with scipy DOP853 at rtol = atol = 1e-12 (ode_demo uses torchdiffeq's dopri5 at its
default tolerances; the two agree to about 1e-6).

Usage: python data/generate_spiral.py [--out data/spiral.csv]
"""

import argparse
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = (2.0, 0.0)


def truth(t: np.ndarray) -> np.ndarray:
    return solve_ivp(lambda _, y: (y ** 3) @ A, (0.0, float(t[-1])), Y0, t_eval=t, method="DOP853",
                     rtol=1e-12, atol=1e-12).y.T


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("spiral.csv")))
    a = p.parse_args()
    t = np.linspace(0.0, 25.0, 1000)
    Y = truth(t)
    rows = ["t,y1,y2"] + [f"{ti:.12g},{u:.10g},{v:.10g}" for ti, (u, v) in zip(t, Y, strict=True)]
    Path(a.out).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
