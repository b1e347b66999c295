"""The torchdiffeq ode_demo spiral: `ude fit` with the default config beside an ode_demo-style training.

The problem (torchdiffeq ``examples/ode_demo.py``, data from ``data/generate_spiral.py``):
dy/dt = (y**3) @ [[-0.1, 2.0], [-2.0, -0.1]], y(0) = (2, 0), 1000 points on [0, 25], no noise; a neural
ODE with a 2-50-2 tanh network.

Rows, each a fresh process (``--repeats``, interleaved):

- ``ude fit`` of a config with nothing but the data, the states and the network (the default training:
  the collocation warm start, then LBFGS on the trajectory);
- the same with ``training.warm_start: none`` and the old default stages (Adam 0.01 x 300, then LBFGS
  x 700): the schedule before issue 12;
- ode_demo's own training, as its script does it: the network on ``y**3``, RMSprop (lr 1e-3), 20 random
  windows of 10 points per iteration, L1 loss, dopri5 at torchdiffeq's default tolerances, ``--niters``
  iterations (ode_demo: 2000). Its full-trajectory MSE is measured at the end (not part of its time).

Columns: training MSE on the whole series at the end; training seconds (in-process, from the first
iteration); iterations; ms per iteration of each kind (median of consecutive rows of loss.csv for
``ude``, of the iterations for ode_demo). Prints a table; ``--json`` prints one JSON document.
Benchmarks print; nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness as h

ROOT = Path(__file__).resolve().parents[1]


def config(data: Path, old_schedule: bool = False) -> dict:
    cfg = {"name": "spiral", "data": {"file": str(data), "time": "t", "columns": {"y1": "y1", "y2": "y2"}},
           "model": {"states": ["y1", "y2"], "equations": {"y1": "f[0]", "y2": "f[1]"}},
           "networks": {"f": {"inputs": ["y1", "y2"], "outputs": 2, "hidden": [50], "activation": "tanh"}}}
    if old_schedule:
        cfg["training"] = {"warm_start": "none", "stages": h.stages(300, 700)}
    return cfg


def ms_per_iteration(loss_csv: Path) -> dict:
    """Median ms per iteration by (optimizer, objective), from loss.csv's cumulative seconds."""
    import csv

    with open(loss_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    steps: dict[str, list[float]] = {}
    for prev, row in zip(rows, rows[1:], strict=False):
        if row["stage"] != prev["stage"]:
            continue
        n = int(row["iteration"]) - int(prev["iteration"])
        if n > 0:
            key = f"{row['optimizer']} {row['objective']}"
            steps.setdefault(key, []).append(1e3 * (float(row["seconds"]) - float(prev["seconds"])) / n)
    return {k: round(statistics.median(v), 3) for k, v in steps.items()}


def run_ude(data: Path, tmp: Path, old_schedule: bool, k: int) -> dict:
    cfg = h.write_config(config(data, old_schedule), tmp / f"spiral_{int(old_schedule)}_{k}.yaml")
    out = tmp / f"run_{int(old_schedule)}_{k}"
    proc = h.run_process([*h.ude_executable(), "fit", str(cfg), "-o", str(out), "--no-plots", "-q"])
    if not proc.ok:
        return {"error": proc.why()}
    m = json.loads((out / "metrics.json").read_text())
    return {"mse": m["loss"], "seconds": m["wall_seconds"], "iterations": m["iterations"],
            "ms_per_iteration": ms_per_iteration(out / "loss.csv"), "process_s": round(proc.wall, 2),
            "poor": m.get("fit_quality", {}).get("poor")}


def ode_demo(niters: int, seed: int) -> dict:
    """torchdiffeq's examples/ode_demo.py training loop (without its plots), timed."""
    import numpy as np
    import torch
    from torch import nn
    from torchdiffeq import odeint

    sys.path.insert(0, str(ROOT / "data"))
    from generate_spiral import truth

    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)
    t_np = np.linspace(0.0, 25.0, 1000)
    true_y = torch.tensor(truth(t_np), dtype=torch.float32)[:, None, :]  # (T, 1, 2) as in ode_demo
    t = torch.tensor(t_np, dtype=torch.float32)
    true_y0 = true_y[0]
    batch_time, batch_size = 10, 20

    def get_batch():
        s = torch.from_numpy(np.random.choice(np.arange(len(t) - batch_time, dtype=np.int64), batch_size,
                                              replace=False))
        batch_y0 = true_y[s]
        batch_t = t[:batch_time]
        batch_y = torch.stack([true_y[s + i] for i in range(batch_time)], dim=0)
        return batch_y0, batch_t, batch_y

    class ODEFunc(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, mean=0, std=0.1)
                    nn.init.constant_(m.bias, val=0)

        def forward(self, t, y):
            return self.net(y ** 3)

    func = ODEFunc()
    optimizer = torch.optim.RMSprop(func.parameters(), lr=1e-3)
    steps = []
    start = time.perf_counter()
    for _ in range(niters):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        batch_y0, batch_t, batch_y = get_batch()
        pred_y = odeint(func, batch_y0, batch_t)
        loss = torch.mean(torch.abs(pred_y - batch_y))
        loss.backward()
        optimizer.step()
        steps.append(1e3 * (time.perf_counter() - t0))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        mse = float(torch.mean((odeint(func, true_y0, t) - true_y) ** 2))
    return {"mse": mse, "seconds": round(seconds, 3), "iterations": niters,
            "ms_per_iteration": {"rmsprop window batch": round(statistics.median(steps[1:]), 3)}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="processes per row (default: %(default)s)")
    p.add_argument("--niters", type=int, default=2000, help="ode_demo iterations (default: %(default)s, as ode_demo)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--child-ode-demo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child_ode_demo:
        print(json.dumps(ode_demo(a.niters, a.seed)))
        return
    rows: dict[str, list[dict]] = {"ude fit (default config)": [], "ude fit (old default schedule, no warm start)": [],
                                   f"torchdiffeq ode_demo ({a.niters} iterations)": []}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ude-bench-spiral-") as d:
        tmp = Path(d)
        data = tmp / "spiral.csv"
        h.run_process([sys.executable, str(ROOT / "data" / "generate_spiral.py"), "--out", str(data)])
        for k in range(a.repeats):
            rows["ude fit (default config)"].append(run_ude(data, tmp, False, k))
            rows["ude fit (old default schedule, no warm start)"].append(run_ude(data, tmp, True, k))
            proc = h.run_process(h.python_script("spiral.py", "--child-ode-demo", "--niters", str(a.niters),
                                                 "--seed", str(k)))
            rows[f"torchdiffeq ode_demo ({a.niters} iterations)"].append(
                proc.last_json() if proc.ok else {"error": proc.why()})
    load1 = os.getloadavg()[0]
    if a.json:
        print(json.dumps({"load": [load0, load1], "rows": rows}))
        return
    print(f"spiral (torchdiffeq ode_demo), {a.repeats} process(es) per row; load average {load0:.2f} -> {load1:.2f}")
    table = []
    for name, runs in rows.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            table.append([name, "failed: " + runs[0]["error"], "", "", ""])
            continue
        med = {k: h.median([r[k] for r in ok]) for k in ("mse", "seconds", "iterations")}
        kinds = sorted({k for r in ok for k in r["ms_per_iteration"]})
        per = "; ".join(f"{k} {h.median([r['ms_per_iteration'][k] for r in ok if k in r['ms_per_iteration']]):.3g}"
                        for k in kinds)
        table.append([name, h.fmt(med["mse"]), h.fmt(med["seconds"], ".1f"), h.fmt(med["iterations"], ".0f"), per])
    print(h.table(["row", "final MSE", "training s", "iterations", "ms per iteration"], table))


if __name__ == "__main__":
    main()
