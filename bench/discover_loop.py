"""Robustness of ``ude discover``: the UDE paper's loop (its ``run_loops.jl``, Scenario 1) over noise seeds.

For each noise level and seed: the canonical Lotka-Volterra data (``lv_protocol.py``: 21 points of the
true model, t = 0 ... 5, DOP853 at 1e-11) with multiplicative Gaussian noise ``Y = X (1 + level * eps)``,
``eps`` from ``numpy.random.default_rng(seed)`` (seed 0 at 5 % is ``data/lotka_volterra.csv``); then the
shipped ``configs/lotka_volterra.yaml`` fitted to it (``ude_cli.api.run_fit``, what ``ude fit`` calls)
and ``ude_cli.discover_run`` (what ``ude discover`` calls) on the run directory. Library calls, not
subprocesses: the same code paths, without an interpreter start per run.

A run's structure is *exact* when the recovered model has x*y alone in each equation. Columns of the
table, per noise level:

- exact: runs with the exact structure;
- recovered: exact structure and verdict ``recovered`` (the wanted outcome);
- wrong accepted: verdict ``recovered`` on a structure that is not exact (a false alarm);
- right rejected: exact structure, verdict ``worse`` or ``failed`` (exit 4);
- failed: verdict ``failed`` (whatever the structure);
- verdicts: the count of each verdict; median s: the median wall time of one discovery.

Usage::

    python bench/discover_loop.py                    # 20 seeds at 1 % and 5 %, ~15 min on 2 cores
    python bench/discover_loop.py --seeds 3 --jobs 2
    python bench/discover_loop.py --json > loop.json

It prints; it asserts nothing (``tests/test_discover_loop.py`` asserts on 3 seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lv_protocol as lv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LV_CONFIG = ROOT / "configs" / "lotka_volterra.yaml"
EXACT = {"U[0]": ["x*y"], "U[1]": ["x*y"]}


def write_data(path: Path, noise: float, seed: int) -> None:
    """The protocol's 21 points with ``noise`` multiplicative noise from ``default_rng(seed)``."""
    t, _, X, _ = lv.make_data(1, 0)
    Y = X * (1 + noise * np.random.default_rng(seed).standard_normal(X.shape))
    lines = ["t,prey,predator", *(f"{a:.2f},{b:.10g},{c:.10g}" for a, b, c in zip(t, Y[0, :, 0], Y[0, :, 1],
                                                                                   strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_one(noise: float, seed: int, directory: Path, reuse: bool = False) -> dict:
    """Fit the shipped config to one noisy data set, discover, and classify the outcome (``reuse``: keep a
    fit already in ``directory/run`` and only discover again)."""
    from ude_cli.api import run_fit
    from ude_cli.discovery.files import discover_run

    directory.mkdir(parents=True, exist_ok=True)
    write_data(directory / "data.csv", noise, seed)
    raw = yaml.safe_load(LV_CONFIG.read_text(encoding="utf-8"))
    raw["data"]["file"] = "data.csv"
    raw.setdefault("output", {})["plots"] = False
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    began = time.perf_counter()
    run = directory / "run"
    if reuse and (run / "metrics.json").is_file():
        ude_loss = json.loads((run / "metrics.json").read_text(encoding="utf-8")).get("loss")
    else:
        result, run = run_fit(config, out=run, plots=False, overwrite=True)
        ude_loss = result.metrics.get("loss")
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    d, _ = discover_run(run, plots=False, out=directory / "discovery")
    discover_s = time.perf_counter() - began
    structure = {t.label: [f.text for f in t.model.features] for t in d.terms}
    exact = structure == EXACT
    return {"noise": noise, "seed": seed, "verdict": d.verdict, "exact": exact,
            "structure": {t.label: t.expression() for t in d.terms}, "fit_s": fit_s, "discover_s": discover_s,
            "ude_loss": ude_loss,
            "recovered_loss": d.chosen.refit.train_loss, "headline": d.headline()}


def _work(args: tuple[float, int, str, bool]) -> dict:
    noise, seed, base, reuse = args
    import torch

    torch.set_num_threads(1)
    try:
        return run_one(noise, seed, Path(base) / f"n{noise:g}_s{seed}", reuse)
    except Exception as exc:  # a crash is an outcome of the loop, reported in its row
        return {"noise": noise, "seed": seed, "verdict": "crashed", "exact": False, "structure": {},
                "fit_s": 0.0, "discover_s": 0.0, "headline": f"{type(exc).__name__}: {exc}"}


def summarise(rows: list[dict]) -> dict:
    """Per noise level: the counts of the table."""
    out = {}
    for noise in sorted({r["noise"] for r in rows}):
        rs = [r for r in rows if r["noise"] == noise]
        verdicts: dict[str, int] = {}
        for r in rs:
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        out[noise] = {
            "runs": len(rs),
            "exact": sum(r["exact"] for r in rs),
            "recovered": sum(r["exact"] and r["verdict"] == "recovered" for r in rs),
            "wrong_accepted": sum((not r["exact"]) and r["verdict"] == "recovered" for r in rs),
            "right_rejected": sum(r["exact"] and r["verdict"] in ("worse", "failed") for r in rs),
            "failed": sum(r["verdict"] in ("failed", "crashed") for r in rs),
            "verdicts": verdicts,
            "median_discover_s": statistics.median(r["discover_s"] for r in rs) if rs else None,
        }
    return out


def table(summary: dict) -> str:
    head = (f"{'noise':>6}  {'exact':>6}  {'recovered':>9}  {'wrong accepted':>14}  {'right rejected':>14}  "
            f"{'failed':>6}  {'median s':>8}  verdicts")
    lines = [head]
    for noise, s in summary.items():
        n = s["runs"]
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(s["verdicts"].items()))
        lines.append(f"{100 * noise:>5g}%  {s['exact']:>3}/{n:<2}  {s['recovered']:>6}/{n:<2}  "
                     f"{s['wrong_accepted']:>11}/{n:<2}  {s['right_rejected']:>11}/{n:<2}  {s['failed']:>3}/{n:<2}  "
                     f"{s['median_discover_s']:>8.1f}  {verdicts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="noise seeds per level (default 20)")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--noise", default="0.01,0.05", help="noise levels, comma-separated (default 0.01,0.05)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    p.add_argument("--reuse", action="store_true",
                   help="with --keep: reuse the fits found there and only discover again (for work on discover)")
    args = p.parse_args(argv)
    levels = [float(x) for x in args.noise.split(",")]
    base = args.keep or Path(tempfile.mkdtemp(prefix="ude-discover-loop-"))
    tasks = [(noise, seed, str(base), args.reuse) for noise in levels
             for seed in range(args.first_seed, args.first_seed + args.seeds)]
    began = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            rows = []
            for r in pool.imap_unordered(_work, tasks):
                rows.append(r)
                if not args.json:
                    print(_row_line(r), file=sys.stderr, flush=True)
    else:
        rows = []
        for task in tasks:
            r = _work(task)
            rows.append(r)
            if not args.json:
                print(_row_line(r), file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r["noise"], r["seed"]))
    summary = summarise(rows)
    wall = time.perf_counter() - began
    if args.json:
        print(json.dumps({"summary": {str(k): v for k, v in summary.items()}, "runs": rows, "wall_s": wall}))
        return 0
    print(f"ude discover on the Lotka-Volterra protocol, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}"
          f" per noise level ({wall:.0f} s wall, {args.jobs} job(s))\n")
    print(table(summary))
    print("\nruns that are not exact-and-recovered:")
    for r in rows:
        if not (r["exact"] and r["verdict"] == "recovered"):
            print("  " + _row_line(r))
    return 0


def _row_line(r: dict) -> str:
    structure = "; ".join(f"{k} = {v}" for k, v in r["structure"].items())
    return (f"noise {100 * r['noise']:g}% seed {r['seed']:>2}: {r['verdict']:<13} "
            f"{'exact' if r['exact'] else 'WRONG'}  {structure}  ({r['discover_s']:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
