"""Borghans_BiophysChem1997 with a global stage before ude's fit: CMA-ES on ude's own objective, then `ude fit`.

From each perturbed start (bench/petab_fits.py's draw: every estimated value times a factor in [0.5, 2]),
BIPOP-CMA-ES (pycma; not a ude dependency: ``pip install cma``) searches the parameter table's box, a
log10 coordinate for each log-bounded parameter (initial standard deviation --sigma decades), a linear one
(a quarter of the box) for the others, within --evaluations evaluations of the imported config's objective.
Each trial point is solved alone by ude's compiled engine, dopri5 with ``solver.max_steps`` 200 (the
problem is not stiff at its nominal values), so that a stiff trial point fails quickly; one that cannot be
solved ranks last. The best point found
is then the start of ``ude_cli.api.fit`` (LBFGS, 300 iterations, the imported config's solver). It prints the
llh after each phase beside the reference 83.32 (docs/petab.md, "Fits from perturbed starts").

    pip install cma && python bench/borghans_global.py [--starts 3] [--evaluations 20000] [--sigma 1]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ROOT / "tests/data/petab/benchmark/Borghans_BiophysChem1997/Borghans_BiophysChem1997.yaml"
REFERENCE = 83.3237


def search_space(params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per parameter: log10 (log-bounded) or linear; lower and upper bounds and initial standard deviations."""
    is_log, lo, hi, std = [], [], [], []
    for p in params.values():
        log = p.positive and p.lower is not None and p.upper is not None and p.lower > 0
        if log:
            is_log.append(True), lo.append(math.log10(p.lower)), hi.append(math.log10(p.upper)), std.append(1.0)
        else:
            a = -math.inf if p.lower is None else p.lower
            b = math.inf if p.upper is None else p.upper
            width = b - a if math.isfinite(b - a) else max(abs(p.init), 0.1) * 4
            is_log.append(False), lo.append(a), hi.append(b), std.append(0.25 * width)
    return np.array(is_log), np.array(lo), np.array(hi), np.array(std)


def search(config: Path, evaluations: int, sigma0: float, seed: int) -> tuple[float, float, float, dict]:
    """CMA-ES from ``config``'s values: (llh at the start, llh reached, seconds, the values found by name)."""
    import cma
    import torch

    from ude_cli.api import check
    from ude_cli.config import load_config
    from ude_cli.engines.torchdiffeq import SolverError
    from ude_cli.fitting.model import UDEModel
    from ude_cli.fitting.parameters import to_unconstrained
    from ude_cli.likelihood.objective import Objective

    cfg = yaml.safe_load(config.read_text())
    search_file = config.with_name("search.yaml")
    search_file.write_text(yaml.safe_dump(dict(cfg, solver={**cfg.get("solver", {}), "method": "dopri5",
                                                            "max_steps": 200}), sort_keys=False))
    problem = check(load_config(search_file))
    params = {**{n: p for n, p in problem.parameters.items() if not p.fixed},
              **{n: p for n, p in problem.noise_parameters.items() if not p.fixed}}
    is_log, lo, hi, std = search_space(params)
    model = UDEModel(problem, n_starts=1)
    objective = Objective(model, problem.config.training.loss)
    raw = {n: model.parameters_.raw[n] if n in problem.parameters else model.noise.raw[n] for n in params}
    n_obs = objective.counts["train"]

    def values(x: np.ndarray) -> np.ndarray:
        return np.where(is_log, 10.0 ** x, x)

    def loss(x: np.ndarray) -> float:
        with torch.no_grad():
            for (name, p), v in zip(params.items(), values(np.asarray(x)), strict=True):
                raw[name].fill_(to_unconstrained(p, float(v)))
            try:
                value = float(objective.loss(model())[0])
            except SolverError:
                return 1e10
        return value if math.isfinite(value) else 1e10

    x0 = np.array([math.log10(p.init) if g else p.init for p, g in zip(params.values(), is_log, strict=True)])
    started = time.perf_counter()
    options = {"bounds": [list(np.where(np.isfinite(lo), lo, -1e30)), list(np.where(np.isfinite(hi), hi, 1e30))],
               "CMA_stds": list(std), "seed": seed, "verbose": -9, "maxfevals": evaluations}
    best, fbest, *_ = cma.fmin(loss, x0, sigma0, options, restarts=8, bipop=True)
    return (-loss(x0) * n_obs, -fbest * n_obs, time.perf_counter() - started,
            dict(zip(params, map(float, values(best)), strict=True)))


def main() -> None:
    try:
        import cma  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs pycma: pip install cma") from None

    from petab_fits import perturbed  # type: ignore[import-not-found]  # bench/ is on sys.path when run as a script

    from ude_cli.api import fit
    from ude_cli.config import load_config
    from ude_cli.errors import UdeError
    from ude_cli.petab import import_problem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=20000)
    parser.add_argument("--sigma", type=float, default=1.0, help="initial CMA-ES step (decades for log parameters)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.starts):
            config = import_problem(PROBLEM, Path(tmp) / f"s{k}")
            perturbed(config, rng, 300)
            start_llh, found_llh, searched, found = search(config, args.evaluations, args.sigma, args.seed + k)
            cfg = yaml.safe_load(config.read_text())
            for name, v in found.items():
                if name in cfg["model"]["parameters"]:
                    cfg["model"]["parameters"][name]["init"] = v
                for obs_name, obs in cfg["observables"].items():
                    sigma = obs["noise"]["sigma"]
                    if isinstance(sigma, dict) and name == f"sigma_{obs_name}":  # the noise parameter's name
                        sigma["init"] = v
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            started = time.perf_counter()
            try:
                reached = f"{-fit(load_config(config)).metrics['likelihood']['nll']:.3f}"
            except UdeError as exc:  # the fit's own solver settings (auto) may fail where the search's dopri5 did not
                reached = f"failed ({exc.lines()[0][:120]})"
            print(f"start {k}: llh {start_llh:.2f} -> CMA-ES {found_llh:.3f} ({searched:.0f} s) -> fit {reached} "
                  f"({time.perf_counter() - started:.1f} s); reference {REFERENCE}", flush=True)


if __name__ == "__main__":
    main()
