"""The canonical Lotka-Volterra UDE benchmark protocol: truth, data, network initialisation.

Protocol (../shared/peers/README.md, "The protocol"):

- truth: dx/dt = 1.3 x - 0.9 x y, dy/dt = -0.8 y + 1.8 x y, x(0), y(0) = 0.44249296, 4.6280594;
- data: 21 points t = 0, 0.25, ..., 5, solved with scipy DOP853 at rtol = atol = 1e-11, then 5 %
  multiplicative Gaussian noise Y = X (1 + 0.05 eps), eps from numpy default_rng(0) drawn with the
  shape (trajectories, times, 2);
- a batch of B trajectories: the first starts at the true initial state, the others at it times
  factors uniform in [0.5, 1.5] drawn from default_rng(1) with the shape (B - 1, 2);
- UDE: dx/dt = 1.3 x + NN_1(x, y), dy/dt = -0.8 y + NN_2(x, y); NN 2-5-5-5-2 with Gaussian rbf
  exp(-z^2) activations, Glorot-uniform weights (out, in) from default_rng(100), zero biases;
- reported: the learned term's RMSE against the true missing terms (-0.9 x y, 1.8 x y) along the
  true trajectory (the first one, at the 21 data times).

Shared by ``baseline_torchdiffeq.py`` and ``lv_ude.py``; numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import solve_ivp

ALPHA, BETA, GAMMA, DELTA = 1.3, 0.9, 0.8, 1.8
U0 = (0.44249296, 4.6280594)
TMAX, DT = 5.0, 0.25
NOISE = 0.05
TARGET = 1e-2
#: the protocol's schedule: Adam (lr 0.01) iterations, then LBFGS iterations
ADAM_ITERATIONS, LBFGS_ITERATIONS = 300, 700
SIZES = (2, 5, 5, 5, 2)
NETWORK_SEED = 100


def rhs(_t: float, u: np.ndarray) -> list[float]:
    """The true Lotka-Volterra right-hand side."""
    x, y = u
    return [ALPHA * x - BETA * x * y, -GAMMA * y + DELTA * x * y]


def times() -> np.ndarray:
    return np.linspace(0.0, TMAX, round(TMAX / DT) + 1)


def initial_states(batch: int = 1, seed: int = 0) -> np.ndarray:
    """``(batch, 2)`` initial states: the true one, then random multiples of it."""
    u0 = np.array([U0])
    if batch > 1:
        factors = np.random.default_rng(seed + 1).uniform(0.5, 1.5, (batch - 1, 2))
        u0 = np.vstack([u0, u0[0] * factors])
    return u0


def make_data(batch: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``t (T,)``, ``u0 (B, 2)``, true states ``X (B, T, 2)`` and noisy observations ``Y (B, T, 2)``."""
    t = times()
    u0 = initial_states(batch, seed)
    X = np.stack([solve_ivp(rhs, (0.0, TMAX), z, t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T
                  for z in u0])
    Y = X * (1 + NOISE * np.random.default_rng(seed).standard_normal(X.shape))
    return t, u0, X, Y


def missing_terms(X: np.ndarray) -> np.ndarray:
    """The terms the network should learn, ``(..., 2)``: -0.9 x y and 1.8 x y."""
    xy = X[..., 0] * X[..., 1]
    return np.stack([-BETA * xy, DELTA * xy], -1)


def glorot_uniform(sizes: tuple[int, ...] = SIZES, seed: int = NETWORK_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer: weights ``(out, in)`` uniform in +-sqrt(6 / (in + out)) and zero biases."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = math.sqrt(6.0 / (n_in + n_out))
        layers.append((rng.uniform(-limit, limit, (n_out, n_in)), np.zeros(n_out)))
    return layers


def rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(truth)) ** 2)))
