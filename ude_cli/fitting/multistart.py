"""Multistart: several independent fits of one config, batched into one computation.

Start 0 begins exactly where the config says (so ``--starts 1`` is a plain fit); every other
start draws new network weights (seed + 1000·k) and perturbs each learned mechanistic parameter
in its unconstrained space, which respects bounds and positivity: a positive parameter is
multiplied by ``exp(0.5·z)``, a bounded one moves by ``0.5·z`` through its sigmoid, ``z ~ N(0, 1)``
from ``numpy.random.default_rng(seed + k)``. All starts are solved as one batch (a leading start
dimension in every tensor), so 16 starts cost a few times one, not 16 times.
"""

from __future__ import annotations

import math

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
    learned = [p for p in problem.parameters.values() if not p.fixed]
    if not learned or n_starts == 1:
        return None
    return np.stack([_draw(learned, seed + k, SPREAD) if k else np.array([p.init for p in learned])
                     for k in range(n_starts)], axis=1)


def _draw(learned: list, seed: int, spread: float) -> np.ndarray:
    """One start's values of the learned parameters: each moved by ``spread * z`` in its unconstrained space,
    ``z ~ N(0, 1)`` from ``numpy.random.default_rng(seed)`` (relative to its size when it is unconstrained)."""
    import torch

    z = np.random.default_rng(seed).standard_normal(len(learned))
    out = np.empty(len(learned))
    for i, p in enumerate(learned):
        u = to_unconstrained(p, p.init)
        if u == p.init and p.lower is None and p.upper is None and not p.positive:  # unconstrained
            scale = abs(p.init) if p.init != 0 else 0.1
            out[i] = p.init + spread * scale * z[i]
        else:
            out[i] = float(to_constrained(p, torch.tensor(u + spread * z[i], dtype=torch.float64)))
    return out


#: fresh draws of a start whose initial guess cannot be solved, then as many again with the spread halved each time
REDRAWS = 3
#: the parameter seed of redraw r of start k: seed + k + REDRAW_SEED_STEP * r
REDRAW_SEED_STEP = 100_003


def redraw_unsolvable(model, problem: Problem, seed: int) -> list[str]:
    """Draw again the starts (after the first) whose initial guess cannot be solved, in place.

    A perturbed start can make the equations blow up (Crauste_CellSystems2017: a pathogen growing past 1e14 in
    finite time), and one trajectory that cannot be solved fails the whole batch. When the batch's initial
    guess fails, each start is solved alone; one that fails gets fresh draws (:data:`REDRAWS`, then as many with
    the spread halved each time, towards the config's values), and failing all of them, the config's values
    (its own network weights kept). The first start is the config's and is left: if it fails, training says so.
    Nothing is checked when training begins with collocation (the automatic warm start), which never solves the
    initial guess and moves every start first.
    Returns a line per start drawn again; ``model.parameter_seeds`` records each start's draw.
    """
    from .train import effective_stages

    learned = [p for p in problem.parameters.values() if not p.fixed]
    if model.n_starts == 1 or not learned:
        return []
    if effective_stages(model, problem.config.training)[0].objective == "collocation":
        return []  # the first stage matches the data's slopes without solving: the initial guess is never solved
    if _failure(model) is None:
        return []
    notes = []
    config_values = np.array([p.init for p in learned])
    for k in range(1, model.n_starts):
        one = single_start(model, k)
        why = _failure(one)
        if why is None:
            continue
        for attempt in range(1, 2 * REDRAWS + 1):
            spread = SPREAD * 0.5 ** max(0, attempt - REDRAWS)
            draw_seed = seed + k + REDRAW_SEED_STEP * attempt
            values = _draw(learned, draw_seed, spread)
            _set_start(one, 0, learned, values)
            if _failure(one) is None:
                _set_start(model, k, learned, values)
                model.parameter_seeds[k] = draw_seed
                notes.append(f"start {k + 1}: its initial guess cannot be solved ({why}); drawn again (parameter "
                             f"seed {draw_seed}, spread {spread:g} in unconstrained units)")
                break
        else:
            _set_start(model, k, learned, config_values)
            model.parameter_seeds[k] = None
            notes.append(f"start {k + 1}: its initial guess cannot be solved ({why}), nor {2 * REDRAWS} draws "
                         "again; it starts from the config's values, with its own network weights")
    return notes


def _failure(model) -> str | None:
    """Why ``model``'s initial guess cannot be solved (None: it can)."""
    import torch

    from ..engines.torchdiffeq import SolverError

    try:
        with torch.no_grad():
            sols = model()
    except SolverError as exc:
        return exc.message.split(";")[0]
    if not all(bool(torch.isfinite(s).all()) for s in sols):
        return "the states are not finite"
    return None


def _set_start(model, k: int, learned: list, values: np.ndarray) -> None:
    """Start ``k``'s learned parameters at ``values`` (every experiment's, for a per-experiment parameter)."""
    import torch

    with torch.no_grad():
        for p, v in zip(learned, values, strict=True):
            model.parameters_.raw[p.name][k] = to_unconstrained(p, float(v))


def single_start(model, start: int):
    """A copy of ``model`` holding only start ``start`` (intervals are about the reported fit; a start is checked alone)."""
    from .model import UDEModel

    one = UDEModel(model.problem, n_starts=1)
    S = model.n_starts
    source = model.state_dict()
    target = one.state_dict()
    new = {}
    for key, value in target.items():
        v = source[key]
        if v.shape == value.shape:
            new[key] = v.clone()
        elif v.ndim == value.ndim and v.shape[0] == S and value.shape[0] == 1 and v.shape[1:] == value.shape[1:]:
            new[key] = v[start:start + 1].clone()
        else:
            raise ValueError(f"cannot take start {start} of {key}: {tuple(v.shape)} vs {tuple(value.shape)}")
    one.load_state_dict(new)
    fitted, copy = model.compiled, one.compiled
    if fitted is not None and copy is not None and fitted.method == "bdf" and copy.method != "bdf":
        copy.switch_to_stiff(fitted.choice_reason.split(": ", 1)[-1])  # auto chose bdf during the fit: keep it
    return one


def start_values(problem: Problem, model) -> dict[str, np.ndarray]:
    """params.csv name -> every start's value ``(S,)`` of each learned parameter (one per experiment of a
    per-experiment one)."""
    values = model.parameter_values()
    out: dict[str, np.ndarray] = {}
    for name, p in problem.parameters.items():
        if not p.fixed and not p.per_experiment:
            out[name] = np.asarray(values[name], dtype=float).reshape(model.n_starts)
        elif not p.fixed:
            for b, e in enumerate(problem.dataset.experiments):
                out[f"{name}[{e.name}]"] = np.asarray(values[name], dtype=float)[:, b]
    return out


def starts_table(problem: Problem, model, losses: np.ndarray):
    """One row per start: its network seeds, its training loss, its parameter values; sorted by loss."""
    import pandas as pd

    cfg = problem.config
    values = start_values(problem, model)
    rows = []
    for k in range(model.n_starts):
        row = {"start": k, "loss": float(losses[k])}
        for j, (name, spec) in enumerate(problem.networks.items()):
            base = spec.seed if spec.seed is not None else cfg.training.seed + 100 + j
            row[f"seed_{name}"] = base + 1000 * k
        row["parameter_seed"] = model.parameter_seeds[k]
        row.update({name: float(v[k]) for name, v in values.items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("loss", kind="stable").reset_index(drop=True)


#: without a finite interval to compare with, a start's value differs from the best's beyond this relative change
UNCOMPARED_CHANGE = 1e-2
#: two alternative starts are the same optimum when every value agrees to this relative change
SAME_OPTIMUM = 1e-3


def distinct_optima(values: dict[str, np.ndarray], nll: np.ndarray, best: int,
                    intervals: dict[str, tuple[float, float]], tolerance: float) -> list[dict]:
    """The starts that reached an optimum as good as the best start's, elsewhere: a negative log-likelihood
    within ``tolerance`` of the best's (nll: per start) at values outside the best's ``intervals`` (name ->
    (lower, upper); a value without a finite interval: more than :data:`UNCOMPARED_CHANGE` from the best's).

    With ``tolerance`` half the intervals' own likelihood-ratio threshold, such a start's values are ones a correct
    profile interval must contain (its profile is at most that start's NLL), so intervals that exclude them
    describe the best start's optimum only. A start at the same optimum as an earlier listed one is folded into
    it (``also``). Returns one dict per distinct optimum: start, delta_nll, values, outside (name -> interval)."""
    out: list[dict] = []
    order = sorted((k for k in range(len(nll)) if k != best and np.isfinite(nll[k])), key=lambda k: nll[k])
    for k in order:
        delta = float(nll[k] - nll[best])
        if not delta < tolerance:
            continue
        here = {n: float(v[k]) for n, v in values.items()}
        outside: dict[str, list[float] | None] = {}
        for name, v in here.items():
            if name in intervals:  # an open end (inf, or nan: not computed) excludes nothing
                lo, hi = intervals[name]
                if (math.isfinite(lo) and v < lo) or (math.isfinite(hi) and v > hi):
                    outside[name] = [lo, hi]
            else:
                b = float(values[name][best])
                if abs(v - b) > UNCOMPARED_CHANGE * max(abs(b), 1e-12):
                    outside[name] = None
        if not outside:
            continue
        same = next((o for o in out if all(abs(o["values"][n] - here[n]) <= SAME_OPTIMUM * max(abs(here[n]), 1e-12)
                                           for n in here)), None)
        if same is not None:
            same["also"].append(k)
            continue
        out.append({"start": k, "delta_nll": delta, "values": here, "outside": outside, "also": []})
    return out


def optima_line(found: list[dict], best: int, best_values: dict[str, float], tolerance: float, level: float) -> str:
    """The warning for :func:`distinct_optima`'s findings (starts named as starts.csv's ``start`` column)."""
    def values(d: dict[str, float]) -> str:
        return ", ".join(f"{n} = {v:.4g}" for n, v in d.items())

    parts = []
    for o in found:
        who = f"start {o['start']}" + (f" (and {', '.join(str(k) for k in o['also'])})" if o["also"] else "")
        where = ", ".join(f"{n} [{lo:.4g}, {hi:.4g}]" for n, (lo, hi) in
                          ((n, i) for n, i in o["outside"].items() if i is not None))
        rest = [n for n, i in o["outside"].items() if i is None]
        beyond = (f"outside the intervals of {where}" if where else "") + (
            ("; " if where else "") + f"{', '.join(rest)} more than {UNCOMPARED_CHANGE:.0%} away (no interval)"
            if rest else "")
        parts.append(f"{who} at {values(o['values'])}, its negative log-likelihood {o['delta_nll']:.2g} above the "
                     f"best's ({beyond})")
    return (f"the starts reached distinct, equally good optima: start {best} (reported) at {values(best_values)}; "
            + "; ".join(parts) + f". Within {tolerance:.3g} of the best's negative log-likelihood (half the "
            f"{level * 100:g} % likelihood-ratio threshold) the data cannot tell them apart: the intervals describe one "
            "of them; other data, or bounds from prior knowledge, must decide")
