"""What a noise model costs per training iteration, on the canonical Lotka-Volterra UDE.

Rows, each the median of ``--repeats`` fresh ``ude fit`` processes of the protocol's network with Adam only
(``--adam`` iterations, lr 0.01, no warm start), in native code (the cache warmed by an untimed fit first):

- ``training.loss: mse`` (the shipped config's objective: squared errors, no noise model);
- normal noise with sigma fixed (``noise: {sigma: 0.05}``): the same solve, the likelihood instead of the MSE;
- normal noise with sigma estimated per observable (two more parameters);
- log-normal noise with sigma estimated.

It prints ms per Adam iteration (the median step of loss.csv's cumulative seconds) and each row's ratio to
the first, so that the cost of estimating sigma is read beside a fixed sigma in the same run. To compare with
another version of ude, run this file with that version installed: the first row is the protocol's.

    python bench/likelihood.py [--repeats 5] [--adam 300]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import harness as h

VARIANTS = [
    ("mse", "training.loss: mse (no noise model)", None),
    ("normal_fixed", "normal, sigma fixed at 0.05", {"distribution": "normal", "sigma": 0.05}),
    ("normal_estimated", "normal, sigma estimated per observable", {"distribution": "normal"}),
    ("lognormal_estimated", "log-normal, sigma estimated per observable", {"distribution": "lognormal"}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per row (default: %(default)s)")
    p.add_argument("--adam", type=int, default=300, help="Adam iterations per fit (default: %(default)s)")
    a = p.parse_args()
    ude = h.ude_executable()
    with tempfile.TemporaryDirectory(prefix="ude-bench-likelihood-") as tmp_name:
        tmp = Path(tmp_name)
        env = {"UDE_CACHE_DIR": str(tmp / "cache")}
        configs = {}
        for key, _, noise in VARIANTS:
            cfg = h.lv_config(warm_start="none", adam=a.adam, lbfgs=0)
            if noise is not None:
                cfg["noise"] = noise
            configs[key] = h.write_config(cfg, tmp / f"{key}.yaml")
        for key in configs:  # untimed: compile each model's native code into the cache
            h.run_process([*ude, "fit", str(configs[key]), "--no-plots", "-q", "--out", str(tmp / f"warm-{key}")],
                          env=env)
        ms: dict[str, list[float]] = {key: [] for key in configs}
        evals: dict[str, list[float]] = {key: [] for key in configs}
        for r in range(a.repeats):
            for key, config in configs.items():  # interleaved: a change of load spreads over all rows
                out = tmp / f"{key}-{r}"
                proc = h.run_process([*ude, "fit", str(config), "--no-plots", "-q", "--out", str(out)], env=env)
                if not proc.ok:
                    raise SystemExit(f"{key}: {proc.why()}")
                run = h.read_ude_run(out)
                if run.get("native_code") is not True:
                    h.note(f"{key}: not in native code ({run.get('native_code_note')})")
                ms[key].append(run["ms_per_adam_iteration"])
                evals[key].append(run["solver_evaluations"] / max(run["iterations"], 1))
                h.note(f"[{r + 1}/{a.repeats}] {key}: {run['ms_per_adam_iteration']} ms per Adam iteration")
    base = h.median(ms["mse"])
    print(f"Lotka-Volterra UDE (2-5-5-5-2 rbf), Adam x {a.adam}, native code: medians of {a.repeats} processes\n")
    print("The solver's steps depend on the parameters each objective leads Adam through, so the right-hand-side\n"
          "evaluations per iteration are shown too: the objective's own cost is the difference at equal evaluations.\n")
    print("| objective | ms/Adam it | x first row | RHS evaluations/it |\n|---|---|---|---|")
    for key, label, _ in VARIANTS:
        m = h.median(ms[key])
        print(f"| {label} | {h.fmt(m, '.3f')} | {h.fmt(m / base if m and base else None, '.2f')} | "
              f"{h.fmt(h.median(evals[key]), '.0f')} |")


if __name__ == "__main__":
    main()
