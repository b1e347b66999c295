"""Shared fixtures: small configs and CSVs written into a temporary directory."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

# Native code (ude_cli/engines/native.py) gives the virtual machine's numbers bit for bit (tests/test_native.py);
# elsewhere the suite stays in the virtual machine, so that it does not start a C compiler per model in
# the background. Compiled libraries never go to the user's cache. Subprocesses inherit both.
os.environ.setdefault("UDE_NATIVE", "0")
os.environ["UDE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ude-test-cache-")


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> path of a dedented file in the test's temporary directory."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


def lv_truth(t, alpha=1.3, beta=0.9, gamma=0.8, delta=1.8, u0=(0.44249296, 4.6280594)):
    """Lotka-Volterra states at times t (scipy DOP853, tight tolerances)."""
    from scipy.integrate import solve_ivp

    def f(_, u):
        return [alpha * u[0] - beta * u[0] * u[1], -gamma * u[1] + delta * u[0] * u[1]]

    return solve_ivp(f, (t[0], t[-1]), list(u0), t_eval=t, method="DOP853", rtol=1e-11, atol=1e-11).y.T


@pytest.fixture
def lv_csv(tmp_path):
    """Noiseless Lotka-Volterra data, 21 points on [0, 5], columns t, prey, predator."""
    t = np.linspace(0, 5, 21)
    y = lv_truth(t)
    path = tmp_path / "lv.csv"
    lines = ["t,prey,predator"] + [f"{a:.6f},{b:.12g},{c:.12g}" for a, (b, c) in zip(t, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(os.environ["UDE_CACHE_DIR"], ignore_errors=True)
