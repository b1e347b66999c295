"""Stiff solves: ude's bdf (CVODES, compiled engine) on Robertson's equations beside scipy's stiff solvers.

Robertson's chemical kinetics as configs/robertson.yaml fits it (k1 = 0.04, k2 = 3e7, k3 = 1e4 on [0, 1e5],
the 41 times of data/robertson.csv, rtol 1e-8, atol 1e-16). Rows:

- ude bdf, gradient: one evaluation of the training loss (log-scale MSE) and its gradient with respect to
  the two learned rates, as training takes it (forward solve with forward sensitivities, then backward);
- ude bdf, forward: the solve alone (no gradient), as a prediction takes it;
- ude bdf, UDE: configs/robertson_ude.yaml's loss and gradient at its initial weights (25 weights; forward
  sensitivities cost grows with the number of inputs differentiated); its deviation is n/a (not the truth);
- scipy Radau / BDF / LSODA, forward only (``solve_ivp`` at the same tolerances and times; Radau and BDF
  also with the exact Jacobian, ``jac=``): what a gradient by finite differences would need 3 of (central
  differences: 5) and an adjoint-free scipy fit pays per evaluation;
- diffrax Kvaerno5, where jax and diffrax import (not a ude dependency; skipped with a note otherwise).

The rhs evals of ude's rows are those of the nominal solve (CVODES's count; the sensitivity solve's are not
counted). Every row: the median of ``--repeats`` calls after one untimed warm-up, in this process, and the largest
relative deviation of its solution from scipy's Radau at rtol 1e-12 (all three states, every time).
Prints a table; nothing is asserted. Timings on a shared machine are noisy: the load average is printed.

Usage: python bench/robertson.py [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "data"))

import generate_robertson as rob  # noqa: E402
import harness as h  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after one warm-up, and its last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), out


def deviation(states: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(states - reference) / np.abs(reference)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    import torch

    from ude_cli.config import load_config
    from ude_cli.fitting.model import UDEModel
    from ude_cli.likelihood.objective import Objective
    from ude_cli.problem import resolve

    load = os.getloadavg()[0]
    cfg = load_config(ROOT / "configs/robertson.yaml")
    model = UDEModel(resolve(cfg))
    with torch.no_grad():  # the true rates, so that every row solves the same problem
        model.parameters_.raw["k2"].fill_(float(np.log(rob.K2)))
        model.parameters_.raw["k3"].fill_(float(np.log(rob.K3)))
    objective = Objective(model, cfg.training.loss)
    times = model.groups[0].times
    rtol, atol = cfg.solver.rtol, cfg.solver.atol
    reference = rob.truth(times[1:], rtol=1e-12, atol=1e-20)
    rows = []

    def gradient():
        model.zero_grad(set_to_none=True)
        sols = model()
        objective.loss(sols).sum().backward()
        return sols[0]

    def forward():
        with torch.no_grad():
            return model()[0]

    for label, fn in (("ude bdf: loss + gradient (2 rates)", gradient), ("ude bdf: forward solve", forward)):
        nfe = model.rhs.nfe
        ms, sol = timed(fn, a.repeats)
        evals = (model.rhs.nfe - nfe) // (a.repeats + 1)
        rows.append([label, h.fmt(ms, ".3g"), str(evals), h.fmt(deviation(sol.detach()[1:, 0, 0].numpy(), reference), ".2g")])

    # the UDE (configs/robertson_ude.yaml) at its initial weights: the network's 25 weights differentiated
    ude_cfg = load_config(ROOT / "configs/robertson_ude.yaml")
    ude = UDEModel(resolve(ude_cfg))
    ude_objective = Objective(ude, ude_cfg.training.loss)

    def ude_gradient():
        ude.zero_grad(set_to_none=True)
        ude_objective.loss(ude()).sum().backward()

    nfe = ude.rhs.nfe
    ms, _ = timed(ude_gradient, a.repeats)
    rows.append(["ude bdf: UDE loss + gradient (25 weights)", h.fmt(ms, ".3g"),
                 str((ude.rhs.nfe - nfe) // (a.repeats + 1)), "n/a"])

    from scipy.integrate import solve_ivp

    for method, jac in (("Radau", None), ("Radau", rob.jacobian), ("BDF", None), ("BDF", rob.jacobian), ("LSODA", None)):
        def scipy_solve(method=method, jac=jac):
            kwargs = {"jac": jac} if jac is not None else {}
            return solve_ivp(rob.rhs, (0.0, float(times[-1])), [1.0, 0.0, 0.0], t_eval=times[1:], method=method,
                             rtol=rtol, atol=atol, **kwargs)

        ms, sol = timed(scipy_solve, a.repeats)
        label = f"scipy {method}{' (exact Jacobian)' if jac is not None else ''}: forward solve"
        rows.append([label, h.fmt(ms, ".3g"), str(sol.nfev), h.fmt(deviation(sol.y.T, reference), ".2g")])

    notes = []
    if all(importlib.util.find_spec(m) for m in ("jax", "diffrax")):
        rows.append(diffrax_row(times, rtol, atol, a.repeats, reference))
    else:
        notes.append("diffrax Kvaerno5: skipped, jax / diffrax not importable (not ude dependencies)")
    print(f"Robertson on [0, 1e5], {len(times)} times, rtol {rtol:g}, atol {atol:g}; median of {a.repeats} calls "
          f"(load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)\n")
    print(h.table(["solver", "ms per call", "rhs evals", "max rel. deviation"], rows))
    for n in notes:
        print(n)


def diffrax_row(times, rtol, atol, repeats, reference) -> list[str]:
    import diffrax
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def f(t, y, args):
        return jnp.array(rob.rhs(t, y))

    term = diffrax.ODETerm(f)
    ts = jnp.array(times)

    @jax.jit
    def solve():
        return diffrax.diffeqsolve(term, diffrax.Kvaerno5(), 0.0, float(times[-1]), None, jnp.array([1.0, 0.0, 0.0]),
                                   saveat=diffrax.SaveAt(ts=ts[1:]), max_steps=100_000,
                                   stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol)).ys

    ms, ys = timed(lambda: solve().block_until_ready(), repeats)
    return ["diffrax Kvaerno5: forward solve (jit)", h.fmt(ms, ".3g"), "n/a", h.fmt(deviation(np.asarray(ys), reference), ".2g")]


if __name__ == "__main__":
    main()
