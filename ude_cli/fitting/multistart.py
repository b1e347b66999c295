"""Multistart: several independent fits of one config, batched into one computation.

Start 0 begins exactly where the config says (so ``--starts 1`` is a plain fit); every other
start draws new network weights (seed + 1000·k) and perturbs each learned mechanistic parameter
in its unconstrained space, which respects bounds and positivity: a positive parameter is
multiplied by ``exp(0.5·z)``, a bounded one moves by ``0.5·z`` through its sigmoid, ``z ~ N(0, 1)``
from ``numpy.random.default_rng(seed + k)``. All starts are solved as one batch (a leading start
dimension in every tensor), so 16 starts cost a few times one, not 16 times.
"""

from __future__ import annotations

import numpy as np

from ..problem import Problem
from .parameters import to_constrained, to_unconstrained

#: standard deviation of the perturbation of a learned parameter, in unconstrained units
SPREAD = 0.5


#: ``training.starts: auto`` fits AUTO_STARTS starts when the problem is small: at most AUTO_MAX_VALUES fitted
#: values and AUTO_MAX_CELLS training observations (there a batch of 4 starts costs about 1.3 times one:
#: bench/README.md, the multistart section); else one.
AUTO_STARTS = 4
AUTO_MAX_VALUES = 2000
AUTO_MAX_CELLS = 500


def fitted_values(problem: Problem) -> int:
    """Learned mechanistic parameters plus network weights and biases."""
    n = sum(not p.fixed for p in problem.parameters.values())
    for spec in problem.networks.values():
        if spec.file is not None:  # a network YAML's graph: its arrays
            from ..petab.network import read_graph

            n += sum(p.numel() for p in read_graph(problem.config.base_dir / spec.file).parameters())
            continue
        sizes = [len(spec.inputs), *spec.hidden, spec.outputs]
        n += sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    return n


def resolve_starts(problem: Problem, starts: int | str) -> tuple[int, str | None]:
    """The number of starts for ``training.starts`` and, for ``auto``, a line saying what was chosen and why."""
    if starts != "auto":
        return int(starts), None
    values = fitted_values(problem)
    cells = sum(int(np.isfinite(e.values[e.train]).sum()) for e in problem.dataset.experiments)
    if values <= AUTO_MAX_VALUES and cells <= AUTO_MAX_CELLS:
        return AUTO_STARTS, (f"training.starts: auto: {AUTO_STARTS} starts, batched ({values} fitted values, {cells} "
                             f"training observations: a small problem); the best is reported")
    return 1, (f"training.starts: auto: 1 start ({values} fitted values, {cells} training observations: above "
               f"{AUTO_MAX_VALUES} values or {AUTO_MAX_CELLS} observations)")


def starting_values(problem: Problem, n_starts: int, seed: int) -> np.ndarray | None:
    """Starting values ``(n_learned, n_starts)`` of the learned mechanistic parameters (None if none)."""
    import torch

    learned = [p for p in problem.parameters.values() if not p.fixed]
    if not learned or n_starts == 1:
        return None
    out = np.empty((len(learned), n_starts))
    for k in range(n_starts):
        z = np.random.default_rng(seed + k).standard_normal(len(learned)) if k else np.zeros(len(learned))
        for i, p in enumerate(learned):
            u = to_unconstrained(p, p.init)
            if u == p.init and p.lower is None and p.upper is None and not p.positive:  # unconstrained
                scale = abs(p.init) if p.init != 0 else 0.1
                out[i, k] = p.init + SPREAD * scale * z[i]
            else:
                out[i, k] = float(to_constrained(p, torch.tensor(u + SPREAD * z[i], dtype=torch.float64)))
    return out


def starts_table(problem: Problem, model, losses: np.ndarray):
    """One row per start: its network seeds, its training loss, its parameter values; sorted by loss."""
    import pandas as pd

    cfg = problem.config
    values = model.parameter_values()
    rows = []
    for k in range(model.n_starts):
        row = {"start": k, "loss": float(losses[k])}
        for j, (name, spec) in enumerate(problem.networks.items()):
            base = spec.seed if spec.seed is not None else cfg.training.seed + 100 + j
            row[f"seed_{name}"] = base + 1000 * k
        row["parameter_seed"] = cfg.training.seed + k
        for name, p in problem.parameters.items():
            if not p.fixed and not p.per_experiment:
                row[name] = float(values[name][k])
            elif not p.fixed:
                for b, e in enumerate(problem.dataset.experiments):
                    row[f"{name}[{e.name}]"] = float(values[name][k, b])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("loss", kind="stable").reset_index(drop=True)
