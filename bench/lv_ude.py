"""Lotka-Volterra UDE benchmark: `ude fit` against a plain torchdiffeq baseline, each run in a fresh process.

The protocol is ../shared/peers/README.md (summarised in ``lv_protocol.py``). Every run is its own
process (the repeats of the implementations interleaved), stopped at the training-MSE target.
Prints a plain-text table per section (``--json``: one JSON document); asserts nothing.

Sections (``--sections``, default ``main``; ``all`` for every one):

- main:       baseline, ``ude fit configs/lotka_volterra.yaml`` (as shipped, and with the protocol's
              stages only: ``training.warm_start: none``), and torchode / diffrax / torchdiffeq peer
              scripts where the package imports and the peers folder exists;
- batch:      ms per Adam iteration with 1 and 64 trajectories (a 64-experiment long-format CSV for ude);
- multistart: ``ude fit --starts 16`` against ``--starts 1``;
- startup:    ``ude --help`` and ``ude models`` process wall times;
- many:       several small configs in one ``ude fit`` call, with ``--jobs N`` against sequential;
- dask:       the same configs on a local Dask cluster of 2 workers against 1 (``--dask-flags``).

Example: ``python bench/lv_ude.py`` (quick check: ``--repeats 1 --adam 20 --lbfgs 10``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import harness as h
import lv_protocol as lv

SECTIONS = ["main", "batch", "multistart", "startup", "many", "dask"]
#: peer key -> (script, modules it needs)
PEERS = {
    "peer-torchode": ("ref_torchode.py", ["torchode"]),
    "peer-diffrax": ("ref_diffrax.py", ["jax", "diffrax", "equinox", "optax"]),
    "peer-torchdiffeq": ("ref_torchdiffeq.py", ["torchdiffeq"]),
}
DEFAULT_ROWS = ("baseline,ude,ude-protocol,ude-protocol-cold,ude-protocol-vm,ude-protocol-torchdiffeq,peer-torchode,"
                "peer-diffrax")
#: the ude rows of the protocol: key -> (label, config changes, environment of the run given its directory)
PROTOCOL_ROWS: dict[str, tuple[str, dict, Callable[[Path], dict] | None]] = {
    "ude-protocol": ("ude fit (warm_start: none)", {}, None),
    "ude-protocol-cold": ("ude fit (warm_start: none, empty native-code cache)", {},
                          lambda d: {"UDE_CACHE_DIR": str(d / "native-cache")}),
    "ude-protocol-vm": ("ude fit (warm_start: none, UDE_NATIVE=0)", {}, lambda d: {"UDE_NATIVE": "0"}),
    "ude-protocol-torchdiffeq": ("ude fit (warm_start: none, engine: torchdiffeq)", {"engine": "torchdiffeq"}, None),
    "ude-protocol-auto": ("ude fit (warm_start: none, method: auto)", {"method": "auto"}, None),
}
#: the library call used for the multistart section while `ude fit --starts` does not exist:
#: fit CONFIG with N starts and write the run directory OUT (argv: CONFIG N OUT)
MULTISTART_BY_LIBRARY = ("import sys; from ude_cli import fit; "
                         "fit(sys.argv[1], n_starts=int(sys.argv[2])).save(sys.argv[3], plots=False)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See bench/README.md.")
    p.add_argument("--sections", default="main", help=f"comma-separated, of: {', '.join(SECTIONS)}; or 'all' (default: main)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per implementation and setting (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (run directories, configs, CSV)")
    g = p.add_argument_group("main section")
    g.add_argument("--only", default=DEFAULT_ROWS,
                   help=f"rows, comma-separated, of: baseline, ude, {', '.join(PROTOCOL_ROWS)}, {', '.join(PEERS)} (default: {DEFAULT_ROWS})")
    p.add_argument("--native-cache", type=Path, default=None,
                   help="ude's native-code cache (UDE_CACHE_DIR) for every ude run: default, a new one in the "
                        "temp dir, filled by an untimed warm-up fit first (a row with an empty cache shows the "
                        "first fit)")
    g.add_argument("--adam", type=int, default=None, help="Adam iterations for all (default: protocol / config)")
    g.add_argument("--lbfgs", type=int, default=None, help="LBFGS iterations for all (default: protocol / config)")
    g.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="default: float64")
    g.add_argument("--target", type=float, default=lv.TARGET, help="training-MSE target (default: %(default)s)")
    g.add_argument("--peers-dir", type=Path, default=Path(os.environ.get(
        "UDE_BENCH_PEERS", h.ROOT.parent / "shared" / "peers")), help="folder of the peer scripts (default: $UDE_BENCH_PEERS or ../shared/peers)")
    g = p.add_argument_group("extra sections")
    g.add_argument("--batch-size", type=int, default=64, help="batch: trajectories (default: %(default)s)")
    g.add_argument("--batch-iterations", type=int, default=30, help="batch: Adam iterations per run (default: %(default)s)")
    g.add_argument("--starts", type=int, default=16, help="multistart: starts (default: %(default)s)")
    g.add_argument("--multistart-iterations", type=int, default=30, help="multistart: Adam iterations per run (default: %(default)s)")
    g.add_argument("--startup-repeats", type=int, default=10, help="startup: processes per command (default: %(default)s)")
    g.add_argument("--many-configs", type=int, default=8, help="many/dask: small configs in one call (default: %(default)s)")
    g.add_argument("--many-iterations", type=int, default=20, help="many/dask: Adam iterations per config (default: %(default)s)")
    g.add_argument("--jobs", type=int, default=2, help="many: `ude fit --jobs` value (default: %(default)s)")
    g.add_argument("--workers", type=int, default=2, help="dask: workers (compared with 1) (default: %(default)s)")
    g.add_argument("--dask-flags", default="--jobs {n}",
                   help="dask: `ude fit` options, {n} = number of workers (default: '%(default)s')")
    a = p.parse_args(argv)
    a.sections = SECTIONS if a.sections == "all" else [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = set(a.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)} or all")
    return a


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]
    data: dict


# -- the main comparison ------------------------------------------------------------------------------

@dataclass
class Impl:
    key: str
    label: str
    command: Callable[[Path], list[str]]  # given a fresh directory for the run
    parse: Callable[[h.Proc, Path], dict]  # -> reached, time_to_target, iterations, evals, final_loss, rmse, ms_adam
    env: Callable[[Path], dict] | None = None  # environment variables of the run, given its directory


def _iteration_args(a) -> list[str]:
    return ([] if a.adam is None else ["--adam", str(a.adam)]) + ([] if a.lbfgs is None else ["--lbfgs", str(a.lbfgs)])


def _truth() -> tuple:
    _, _, X, _ = lv.make_data(1)
    return X[0], lv.missing_terms(X[0])


def _parse_script(proc: h.Proc, _d: Path) -> dict:
    """The JSON line of the baseline (and, with other key names, of a peer script)."""
    j = proc.last_json()
    reached = j.get("time_to_target") is not None
    ms = j.get("ms_per_adam_iteration")
    seconds = j.get("seconds_per_iteration")  # the peers' name, in seconds; NaN when too few iterations
    if ms is None and seconds is not None and not math.isnan(seconds):
        ms = 1e3 * seconds
    return {
        "reached": reached,
        "time_to_target": j.get("time_to_target"),
        "iterations": j.get("iterations_to_target", j.get("iters_to_target")) if reached else j.get("iterations"),
        "evals": j.get("nfe"),  # peers report only a per-iteration median (nfe_median)
        "final_loss": j.get("final_loss", j.get("final_train_loss")),
        "rmse": j.get("learned_term_rmse"),
        "ms_adam": ms,
    }


def _parse_ude(proc: h.Proc, d: Path) -> dict:
    m = h.read_ude_run(d / "run")
    reached = str(m.get("stop_reason", "")).startswith("loss below")
    states, missing = _truth()
    return {
        "reached": reached,
        "time_to_target": m["wall_seconds"] if reached else None,
        "iterations": m["iterations"],
        "evals": m["solver_evaluations"],
        "final_loss": m["loss"],
        "rmse": h.learned_term_rmse(d / "run", states, missing),
        "ms_adam": m["ms_per_adam_iteration"],
        "stop_reason": m.get("stop_reason"),
    }


def main_impls(a, tmp: Path, notes: list[str]) -> list[Impl]:
    ude = h.ude_executable()
    wanted = [k.strip() for k in a.only.split(",") if k.strip()]
    impls = []

    def ude_impl(key: str, label: str, config: Path, env: Callable[[Path], dict] | None = None) -> Impl:
        return Impl(key, label, lambda d: [*ude, "fit", str(config), "--stop-below", repr(a.target), "--no-plots",
                                           "--out", str(d / "run"), "-q"], _parse_ude, env)

    overrides = a.adam is not None or a.lbfgs is not None or a.dtype != "float64"
    for key in wanted:
        if key == "baseline":
            impls.append(Impl(key, f"baseline torchdiffeq ({a.dtype})", lambda d: h.python_script(
                "baseline_torchdiffeq.py", "--stop-at-target", "--dtype", a.dtype, "--target", repr(a.target),
                *_iteration_args(a)), _parse_script))
        elif key == "ude":
            config = h.LV_CONFIG
            if overrides:
                config = h.write_config(h.lv_config(adam=a.adam, lbfgs=a.lbfgs, dtype=a.dtype), tmp / "lv_ude.yaml")
            impls.append(ude_impl(key, "ude fit (shipped config" + (", overridden)" if overrides else ")"), config))
        elif key in PROTOCOL_ROWS:
            label, changes, env = PROTOCOL_ROWS[key]
            config = h.write_config(protocol_config(a, **changes), tmp / f"lv_{key}.yaml")
            impls.append(ude_impl(key, label, config, env))
        elif key in PEERS:
            script, modules = PEERS[key]
            path = a.peers_dir / script
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            if not path.exists():
                notes.append(f"{key}: skipped, no {path} (--peers-dir)")
            elif missing:
                notes.append(f"{key}: skipped, {', '.join(missing)} not importable (not a ude dependency)")
            else:
                dtype = "f64" if a.dtype == "float64" else "f32"
                impls.append(Impl(key, f"{key.removeprefix('peer-')} peer script ({dtype})", lambda d, p=path, t=dtype: [
                    sys.executable, str(p), "--stop-at-target", "--dtype", t, "--target", repr(a.target),
                    *_iteration_args(a)], _parse_script))
        else:
            notes.append(f"{key}: unknown row, ignored")
    return impls


def protocol_config(a, **changes) -> dict:
    """The shipped config with the protocol's stages (not the config's) and no warm start."""
    adam = lv.ADAM_ITERATIONS if a.adam is None else a.adam
    lbfgs = lv.LBFGS_ITERATIONS if a.lbfgs is None else a.lbfgs
    return h.lv_config(warm_start="none", adam=adam, lbfgs=lbfgs, dtype=a.dtype, **changes)


def warm_native_cache(a, tmp: Path) -> list[str]:
    """Fill the native-code cache (ude_cli/engines/native.py) with an untimed fit of the protocol's model, so that
    the timed runs load the compiled library as every fit after a machine's first does; notes."""
    cache = Path(os.environ["UDE_CACHE_DIR"]) / "native"
    if any(cache.glob("*.so")):
        return [f"native-code cache {cache.parent}: already filled"]
    config = h.write_config(h.lv_config(warm_start="none", adam=2, lbfgs=0, dtype=a.dtype), tmp / "lv_warm_up.yaml")
    proc = h.run_process([*h.ude_executable(), "fit", str(config), "--no-plots", "--out", str(tmp / "warm-up"), "-q"])
    waited = 0.0
    while proc.ok and not any(cache.glob("*.so")) and waited < 300:
        time.sleep(0.1)
        waited += 0.1
    found = any(cache.glob("*.so"))
    metrics = h.read_ude_run(tmp / "warm-up") if proc.ok else {}
    return [f"native-code cache {cache.parent}: " + (
        f"filled by an untimed warm-up fit ({proc.wall:.1f} s, then {waited:.1f} s more for the compiler)" if found
        else f"NOT filled ({metrics.get('native_code_note') or proc.why()}): the ude rows ran without native code")]


def section_main(a, tmp: Path) -> Section:
    notes: list[str] = list(a.cache_notes)
    impls = main_impls(a, tmp, notes)
    runs: dict[str, list[dict]] = {i.key: [] for i in impls}
    for r in range(a.repeats):
        for impl in impls:  # interleaved, so that a change of machine load spreads over all rows
            d = tmp / f"{impl.key}-{r}"
            d.mkdir()
            proc = h.run_process(impl.command(d), env=impl.env(d) if impl.env else None)
            try:
                res = impl.parse(proc, d) if proc.ok else {"error": proc.why()}
            except Exception as exc:  # a missing file or key: report it in the row, keep going
                res = {"error": f"{type(exc).__name__}: {exc}"}
            res.update(wall=round(proc.wall, 3), peak_mib=round(proc.peak_mib, 1))
            runs[impl.key].append(res)
            h.note(f"[main {r + 1}/{a.repeats}] {impl.key}: {res.get('error') or _short(res)}")
    summaries = {i.key: _summarise(runs[i.key]) for i in impls}
    base = summaries.get("baseline", {})
    rows = []
    for impl in impls:
        s = summaries[impl.key]
        s["ratio_time_to_target"] = _ratio(s.get("time_to_target"), base.get("time_to_target"))
        s["ratio_wall"] = _ratio(s.get("wall"), base.get("wall"))
        rows.append([impl.label, f"{s['reached']}/{s['runs']}", h.fmt(s.get("time_to_target"), ".2f"),
                     h.fmt(s.get("wall"), ".2f"), h.fmt(s.get("iterations"), ".0f"), h.fmt(s.get("evals"), ".0f"),
                     h.fmt(s.get("final_loss"), ".3g"), h.fmt(s.get("rmse"), ".3f"), h.fmt(s.get("ms_adam"), ".1f"),
                     h.fmt(s.get("peak_mib"), ".0f"), h.fmt(s["ratio_time_to_target"], ".2f"),
                     h.fmt(s["ratio_wall"], ".2f")])
        errors = [x["error"] for x in runs[impl.key] if "error" in x]
        if errors:
            notes.append(f"{impl.key}: {len(errors)} run(s) failed; first: {errors[0]}")
    header = ["implementation", "reached", "to target s", "process s", "iterations", "solver evals", "final MSE",
              "term RMSE", "ms/Adam it", "peak MiB", "x base", "x base proc"]
    return Section(f"Lotka-Volterra UDE to training MSE < {a.target:g}, medians of {a.repeats} process(es)",
                   header, rows, notes, {"summary": summaries, "runs": runs})


def _short(res: dict) -> str:
    ttt = res.get("time_to_target")
    return (f"{'target at ' + format(ttt, '.2f') + ' s' if ttt is not None else 'target not reached'}, "
            f"{res.get('iterations')} it, process {res['wall']:.2f} s")


def _summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    reached = [r for r in ok if r["reached"]]
    out = {"runs": len(runs), "failed": len(runs) - len(ok), "reached": len(reached),
           "time_to_target": h.median(r["time_to_target"] for r in reached)}
    for key in ("wall", "iterations", "evals", "final_loss", "rmse", "ms_adam", "peak_mib"):
        out[key] = h.median(r.get(key) for r in ok)
    return out


def _ratio(x, base) -> float | None:
    return x / base if x is not None and base else None


# -- extra sections ---------------------------------------------------------------------------------------

def _needs(flag: str) -> str:
    return f"n/a (needs `ude fit {flag}`)"


def _ude_fit(config: Path, out: Path, *extra: str) -> list[str]:
    return [*h.ude_executable(), "fit", str(config), "--no-plots", "--out", str(out), "-q", *extra]


def _repeat(a, what: str, run: Callable[[Path], dict], tmp: Path) -> dict:
    """``run`` in ``a.repeats`` fresh directories; the medians of what it returns (or the error)."""
    results = []
    for r in range(a.repeats):
        d = tmp / f"{what}-{r}"
        d.mkdir(parents=True)
        try:
            results.append(run(d))
        except Exception as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}"})
        h.note(f"[{what} {r + 1}/{a.repeats}] {results[-1]}")
    ok = [x for x in results if "error" not in x]
    if not ok:
        return {"error": results[0]["error"], "runs": results}
    return {**{k: h.median(x[k] for x in ok) for k in ok[0]}, "runs": results}


def _check(proc: h.Proc) -> h.Proc:
    if not proc.ok:
        raise RuntimeError(proc.why())
    return proc


def batch_data_config(size: int, iterations: int, dtype: str, folder: Path) -> Path:
    """A ``size``-experiment long-format CSV from the protocol's batch, and a config that reads it."""
    t, u0, _, Y = lv.make_data(size)
    csv = folder / f"lv_batch{size}.csv"
    lines = ["experiment,t,prey,predator,x0,y0"]
    for b in range(size):
        lines += [f"e{b:03d},{ti:.2f},{x:.10g},{y:.10g},{u0[b, 0]:.10g},{u0[b, 1]:.10g}"
                  for ti, (x, y) in zip(t, Y[b], strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    cfg = h.lv_config(warm_start="none", adam=iterations, lbfgs=0, dtype=dtype)
    cfg["name"] = f"lv_batch{size}"
    cfg["data"] = {"file": str(csv), "time": "t", "experiment": "experiment", "columns": {"x": "prey", "y": "predator"}}
    cfg["model"]["initial"] = {"x": {"column": "x0"}, "y": {"column": "y0"}}  # the true initial states
    return h.write_config(cfg, folder / f"lv_batch{size}.yaml")


def section_batch(a, tmp: Path) -> Section:
    k = a.batch_iterations
    sizes = [1, a.batch_size]
    folder = tmp / "batch"
    folder.mkdir()

    def baseline(size):
        def run(_d):
            j = _check(h.run_process(h.python_script(
                "baseline_torchdiffeq.py", "--batch", str(size), "--adam", str(k), "--lbfgs", "0",
                "--dtype", a.dtype))).last_json()
            return {"ms_adam": j["ms_per_adam_iteration"]}
        return run

    def ude(size):
        config = batch_data_config(size, k, a.dtype, folder)

        def run(d):
            _check(h.run_process(_ude_fit(config, d / "run")))
            return {"ms_adam": h.read_ude_run(d / "run")["ms_per_adam_iteration"]}
        return run

    data: dict[str, dict] = {"baseline": {}, "ude": {}}
    for size in sizes:
        data["baseline"][size] = _repeat(a, f"batch-baseline-{size}", baseline(size), tmp)
        data["ude"][size] = _repeat(a, f"batch-ude-{size}", ude(size), tmp)
    rows, notes = [], []
    for name, label in (("baseline", "baseline torchdiffeq"), ("ude", "ude fit (experiment column)")):
        ms = [data[name][s].get("ms_adam") for s in sizes]
        rows.append([label, *[h.fmt(x, ".1f") for x in ms], h.fmt(_ratio(ms[1], ms[0]), ".2f")])
        notes += [f"{name}, batch {s}: {data[name][s]['error']}" for s in sizes if "error" in data[name][s]]
    ude_over_base = [_ratio(data["ude"][s].get("ms_adam"), data["baseline"][s].get("ms_adam")) for s in sizes]
    rows.append(["ude / baseline", *[h.fmt(x, ".2f") for x in ude_over_base], ""])
    header = ["implementation", *[f"ms/it batch {s}" for s in sizes], f"x batch {sizes[0]}"]
    return Section(f"Batch of trajectories: ms per Adam iteration (median of {k} iterations, {a.repeats} process(es))",
                   header, rows, notes, data)


def section_multistart(a, tmp: Path) -> Section:
    config = h.write_config(h.lv_config(warm_start="none", adam=a.multistart_iterations, lbfgs=0, dtype=a.dtype),
                            tmp / "lv_multistart.yaml")
    by_cli = h.ude_fit_supports("--starts")
    notes = [] if by_cli else [f"`ude fit --starts` missing: {_needs('--starts N')}; measured through the library "
                               f"call ude_cli.fit(config, n_starts=N) in a fresh process instead"]

    def run_with(n):
        def run(d):
            if by_cli:
                proc = _check(h.run_process(_ude_fit(config, d / "run", "--starts", str(n))))
            else:
                proc = _check(h.run_process([sys.executable, "-c", MULTISTART_BY_LIBRARY, str(config), str(n),
                                             str(d / "run")]))
            m = h.read_ude_run(d / "run")
            return {"seconds": m["wall_seconds"], "wall": round(proc.wall, 3), "starts": m.get("starts"),
                    "ms_adam": m.get("ms_per_adam_iteration")}
        return run

    data = {n: _repeat(a, f"multistart-{n}", run_with(n), tmp) for n in (1, a.starts)}
    rows = []
    for n, s in data.items():
        rows.append([f"--starts {n}", h.fmt(s.get("seconds"), ".2f"), h.fmt(s.get("wall"), ".2f"),
                     h.fmt(s.get("ms_adam"), ".1f")])
        if "error" in s:
            notes.append(f"--starts {n}: {s['error']}")
    one, many = data[1], data[a.starts]
    rows.append([f"ratio {a.starts}/1", h.fmt(_ratio(many.get("seconds"), one.get("seconds")), ".2f"),
                 h.fmt(_ratio(many.get("wall"), one.get("wall")), ".2f"),
                 h.fmt(_ratio(many.get("ms_adam"), one.get("ms_adam")), ".2f")])
    header = ["setting", "in-process s", "process s", "ms/Adam it"]
    return Section(f"Multistart: {a.multistart_iterations} Adam iterations, {a.starts} starts against 1 "
                   f"(medians of {a.repeats})", header, rows, notes, {str(k): v for k, v in data.items()})


def section_startup(a, tmp: Path) -> Section:
    ude = h.ude_executable()
    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "python -c 'import ude_cli'": [sys.executable, "-c", "import ude_cli"],
        "ude --help": [*ude, "--help"],
        "ude models": [*ude, "models"],
        "ude fit --help": [*ude, "fit", "--help"],
    }
    rows, notes, data = [], [], {}
    for label, cmd in commands.items():
        h.run_process(cmd)  # warm-up, not counted: file caches
        procs = [h.run_process(cmd) for _ in range(a.startup_repeats)]
        ok = [p for p in procs if p.ok]
        walls = [1e3 * p.wall for p in ok]
        data[label] = {"ms": walls, "peak_mib": h.median(p.peak_mib for p in ok)}
        rows.append([label, h.fmt(h.median(walls), ".0f"), h.fmt(min(walls) if walls else None, ".0f"),
                     h.fmt(data[label]["peak_mib"], ".0f")])
        if len(ok) < len(procs):
            notes.append(f"{label}: {len(procs) - len(ok)} failed; {next(p for p in procs if not p.ok).why()}")
        h.note(f"[startup] {label}: {rows[-1][1]} ms")
    return Section(f"Start-up: process wall of {a.startup_repeats} runs", ["command", "median ms", "min ms", "peak MiB"],
                   rows, notes, data)


def small_configs(a, tmp: Path) -> list[Path]:
    """``--many-configs`` copies of the protocol config, each with its own seeds and name."""
    folder = tmp / "many"
    if not folder.exists():
        folder.mkdir()
        for i in range(a.many_configs):
            cfg = h.lv_config(warm_start="none", adam=a.many_iterations, lbfgs=0, dtype=a.dtype)
            cfg["name"] = f"lv_small_{i:02d}"
            cfg["training"]["seed"] = i
            cfg["networks"]["U"]["seed"] = 100 + i
            h.write_config(cfg, folder / f"lv_small_{i:02d}.yaml")
    return sorted(folder.glob("*.yaml"))


def _many_calls(a, tmp: Path, settings: dict[str, str]) -> tuple[list[list[str]], list[str], dict]:
    """One `ude fit CONFIGS... FLAGS` process per setting (label -> flags); rows of walls and speed-ups
    against the first setting."""
    configs = [str(c) for c in small_configs(a, tmp)]
    notes, data = [], {}
    for label, flags in settings.items():
        if flags and not h.ude_fit_supports(flags):
            data[label] = {"error": _needs(flags)}
            continue

        def run(d, flags=flags):
            cmd = [*h.ude_executable(), "fit", *configs, "--no-plots", "-q", *flags.split()]
            return {"wall": round(_check(h.run_process(cmd, cwd=d)).wall, 3)}  # runs/ in the fresh folder d

        data[label] = _repeat(a, f"many-{label.replace(' ', '_')}", run, tmp)
    first = data[next(iter(settings))].get("wall")
    rows = []
    for label, d in data.items():
        rows.append([label, h.fmt(d.get("wall"), ".2f", none=d.get("error", "n/a")),
                     h.fmt(_ratio(first, d.get("wall")), ".2f")])
        if "error" in d and not d["error"].startswith("n/a"):
            notes.append(f"{label}: {d['error']}")
    return rows, notes, data


def section_many(a, tmp: Path) -> Section:
    settings = {"sequential": "", f"--jobs {a.jobs}": f"--jobs {a.jobs}"}
    rows, notes, data = _many_calls(a, tmp, settings)
    notes.append(f"{a.many_configs} configs x {a.many_iterations} Adam iterations, one `ude fit` call each; "
                 f"{os.cpu_count()} CPU(s)")
    return Section(f"Many small fits in one call (medians of {a.repeats})", ["setting", "process s", "speed-up"],
                   rows, notes, data)


def section_dask(a, tmp: Path) -> Section:
    settings = {f"{n} worker(s)": a.dask_flags.format(n=n) for n in (1, a.workers)}
    rows, notes, data = _many_calls(a, tmp, settings)
    notes.append(f"flags: {a.dask_flags!r} (--dask-flags); {a.many_configs} configs x {a.many_iterations} "
                 "Adam iterations; speed-up against 1 worker")
    return Section(f"Dask: {a.workers} workers against 1 (medians of {a.repeats})", ["setting", "process s", "speed-up"],
                   rows, notes, data)


# -- output ------------------------------------------------------------------------------------------------------

def machine() -> dict:
    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    commit = subprocess.run(["git", "-C", str(h.ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip() if shutil.which("git") else ""
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": version("torch"), "torchdiffeq": version("torchdiffeq"), "ude": version("ude-cli"),
            "commit": commit or None, "load_average": _load()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def print_report(sections: list[Section], info: dict) -> None:
    print(f"machine: {info['cpu']}, {info['cpus']} CPU(s); {info['platform']}; python {info['python']}, "
          f"torch {info['torch']}, torchdiffeq {info['torchdiffeq']}, ude {info['ude']} ({info['commit']})")
    print(f"load average (1, 5, 15 min) at start {info['load_average']}, at end {info['load_average_end']}"
          " (timings are distorted when it is above 0)")
    for s in sections:
        print(f"\n{s.title}\n")
        print(h.table(s.header, s.rows))
        for n in s.notes:
            print(f"  note: {n}")
    if any(s.title.startswith("Lotka") for s in sections):
        print("\ncolumns: reached = runs that reached the target; to target s = in-process training time to the "
              "target; process s = whole-process wall (start-up, data, training, writing); iterations and solver "
              "evals up to the stop; term RMSE = learned term against -0.9xy, 1.8xy along the true trajectory; "
              "peak MiB = the child's max RSS; x base = ratio to the baseline (in-process, whole process).")


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="ude-bench-"))
    os.environ["UDE_CACHE_DIR"] = str(a.native_cache or tmp / "native-cache")  # every ude run below
    a.cache_notes = warm_native_cache(a, tmp) if set(a.sections) - {"startup"} else []
    info["native_cache"] = a.cache_notes
    builders = {"main": section_main, "batch": section_batch, "multistart": section_multistart,
                "startup": section_startup, "many": section_many, "dask": section_dask}
    try:
        sections = [builders[name](a, tmp) for name in a.sections]
    finally:
        if a.keep:
            h.note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info["load_average_end"] = _load()
    if a.json:
        doc = {"machine": info, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               "sections": {name: {"title": s.title, "header": s.header, "rows": s.rows, "notes": s.notes,
                                   "data": s.data} for name, s in zip(a.sections, sections, strict=True)}}
        print(json.dumps(doc, indent=1, default=str))
    else:
        print_report(sections, info)


if __name__ == "__main__":
    main()
