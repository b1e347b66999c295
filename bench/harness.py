"""Plumbing of the benchmarks: child processes with their wall time and peak memory, `ude` feature
detection, reading a run directory's figures back, configs written to a temp dir, a text table.

Nothing here times or asserts anything by itself; ``lv_ude.py`` decides what to run.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lv_protocol as lv
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LV_CONFIG = ROOT / "configs" / "lotka_volterra.yaml"


# -- child processes ---------------------------------------------------------------------------------

@dataclass
class Proc:
    """A finished child process."""

    cmd: list[str]
    returncode: int
    wall: float  # seconds from start to exit, start-up included
    peak_mib: float  # max RSS of the child (and of the children it waited for)
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_json(self) -> dict:
        """The last stdout line that is a JSON object (the scripts' result line)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise ValueError("no JSON line on stdout")

    def why(self) -> str:
        """One line on a failure: the last line of stderr."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return f"exit {self.returncode}: {lines[-1].strip() if lines else 'no message'}"


#: Runs a command and writes its wall time, exit status and peak RSS (from ``wait4``) to a JSON file.
#: A small launcher of its own, because a child's peak RSS counts the memory of the process that
#: spawned it: a launcher of ~10 MiB instead of this harness (with numpy, scipy and torch loaded).
_LAUNCHER = """import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump({"wall": wall, "returncode": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss}, f)
"""


def run_process(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Proc:
    """Run ``cmd`` to completion in a fresh process (``env``: variables to set besides this process's);
    measure its wall time and its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="ude-bench-proc-") as d:
        out, err, report = Path(d, "stdout"), Path(d, "stderr"), Path(d, "report.json")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            launcher = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *cmd], cwd=cwd,
                                      stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **env} if env else None)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if not report.exists():  # the command could not be started
            return Proc(cmd, launcher.returncode or 127, 0.0, 0.0, stdout, stderr)
        r = json.loads(report.read_text())
    peak = r["maxrss"] / 2**20 if sys.platform == "darwin" else r["maxrss"] / 2**10  # bytes / KiB
    return Proc(cmd, r["returncode"], r["wall"], peak, stdout, stderr)


def python_script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / name), *args]


def ude_executable() -> list[str]:
    """The `ude` console script of this interpreter's environment (else ``python -m ude_cli``)."""
    beside = Path(sys.executable).with_name("ude")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ude")
    return [found] if found else [sys.executable, "-m", "ude_cli"]


@functools.cache
def _fit_help() -> str:
    proc = run_process([*ude_executable(), "fit", "--help"])
    return proc.stdout + proc.stderr


def ude_fit_supports(flags: str) -> bool:
    """Whether every ``--option`` in ``flags`` appears in ``ude fit --help``."""
    text = _fit_help()
    return all(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text) for f in re.findall(r"--[\w-]+", flags))


# -- run directories -----------------------------------------------------------------------------------

def read_ude_run(path: Path) -> dict:
    """metrics.json of a run, plus ``ms_per_adam_iteration`` from loss.csv (median of the steps
    between consecutive Adam iterations; its ``seconds`` column is cumulative)."""
    metrics = json.loads((path / "metrics.json").read_text())
    with open(path / "loss.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = []
    for prev, row in zip(rows, rows[1:], strict=False):
        if (row["optimizer"] == prev["optimizer"] == "adam" and row.get("objective", "trajectory") == "trajectory"
                and int(row["iteration"]) == int(prev["iteration"]) + 1):
            steps.append(1e3 * (float(row["seconds"]) - float(prev["seconds"])))
    metrics["ms_per_adam_iteration"] = round(statistics.median(steps), 3) if steps else None
    return metrics


def learned_term_rmse(path: Path, states, missing, network: str = "U") -> float | None:
    """RMSE of the network of a saved run against ``missing`` (T, 2), evaluated at ``states`` (T, 2).

    The run is read back with ``ude_cli.runs.load.load_run``; the network takes ``(S, B, n_in)``.
    ``None`` when the network does not take exactly the states (x, y)."""
    import numpy as np
    import torch

    from ude_cli.runs.load import load_run

    run = load_run(path)
    spec = run.config.networks.get(network)
    if spec is None or list(spec.inputs) != list(run.problem.states):
        return None
    net = run.model.rhs.networks[network]
    with torch.no_grad():
        out = net(torch.tensor(np.asarray(states)[None], dtype=run.model.dtype)).numpy()
    best = out[run.best_start]
    return float(np.sqrt(np.mean((best - np.asarray(missing)) ** 2)))


# -- configs ---------------------------------------------------------------------------------------------

def load_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def lv_config(*, warm_start: str | None = None, adam: int | None = None, lbfgs: int | None = None,
              dtype: str | None = None, engine: str | None = None, method: str | None = None) -> dict:
    """The shipped Lotka-Volterra config, its data path made absolute, with optional changes."""
    cfg = load_yaml(LV_CONFIG)
    cfg["data"]["file"] = str((LV_CONFIG.parent / cfg["data"]["file"]).resolve())
    if warm_start is not None:
        cfg["training"]["warm_start"] = warm_start
    if adam is not None or lbfgs is not None:
        cfg["training"]["stages"] = stages(lv.ADAM_ITERATIONS if adam is None else adam,
                                           lv.LBFGS_ITERATIONS if lbfgs is None else lbfgs)
    if dtype is not None:
        cfg["solver"]["dtype"] = dtype
    if engine is not None:
        cfg["solver"]["engine"] = engine
    if method is not None:
        cfg["solver"]["method"] = method
    return cfg


def stages(adam: int, lbfgs: int) -> list[dict]:
    out = [{"optimizer": "adam", "lr": 0.01, "iterations": adam}] if adam > 0 else []
    return out + ([{"optimizer": "lbfgs", "iterations": lbfgs}] if lbfgs > 0 else [])


# -- summaries and the table ---------------------------------------------------------------------------------

def median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(value, spec: str = ".3g", none: str = "n/a") -> str:
    if value is None:
        return none
    if isinstance(value, str):
        return value
    return format(value, spec)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def note(text: str) -> None:
    """Progress and notes go to stderr, so that stdout holds only the result."""
    print(text, file=sys.stderr, flush=True)


def print_or_write(text: str, write: Path | None, begin: str, end: str) -> None:
    """Print a generated table, or with ``write`` put it between the ``begin`` and ``end`` markers of that file."""
    if write is None:
        print(text)
        return
    doc = write.read_text()
    a, b = doc.index(begin) + len(begin), doc.index(end)
    write.write_text(doc[:a] + "\n" + text + "\n" + doc[b:])
    print(f"wrote the table into {write}")
