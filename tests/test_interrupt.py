"""Interrupted, killed and failed writes never leave a half-written run, and a resumed fit is exact.

The slow tests run ``python -m ude_cli fit`` as real processes and send real signals: SIGKILL at
several moments (training, writing the run directory, writing a checkpoint), SIGINT and SIGTERM
mid-fit followed by ``ude fit --resume``. After each, the output location holds nothing, a
complete run whose every file parses, or an incomplete run with a checkpoint that loads. The fast
tests do the same in-process, and check an unwritable or full output location.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ude_cli.cli import app, exits

runner = CliRunner()

#: Every file of a complete run without figures (figures add figures/*.png and *.pdf).
RUN_FILES = {"params.csv", "params.json", "predictions.csv", "trajectory.csv", "metrics.json", "loss.csv",
             "run.json", "model.pt", "inputs/config.yaml", "inputs/d.csv"}


def tiny_config(directory: Path, *, iterations: int = 40, lbfgs: int = 10, plots: bool = False, extra: str = "") -> Path:
    """A fit that takes seconds: one state, a 4-unit network, rk4 with 4 steps, no warm start; solved by
    torchdiffeq, whose iterations are slow enough for a signal to land where a test means it to (the
    compiled engine runs the whole fit in a fraction of a second).

    Stage 1 is 3 Adam iterations, so its log line ("stage 1/3") says training is under way."""
    directory.mkdir(parents=True, exist_ok=True)
    t = np.linspace(0, 2, 5)
    (directory / "d.csv").write_text(
        "t,conc\n" + "".join(f"{a:g},{2 * np.exp(-0.7 * a) + 0.05 * np.sin(3 * a):.6f}\n" for a in t))
    path = directory / "config.yaml"
    path.write_text(f"""\
name: tiny
data: {{file: d.csv, columns: {{y: conc}}}}
model:
  states: [y]
  equations: {{y: "-k*y + U"}}
  parameters: {{k: {{init: 0.3, positive: true}}}}
networks:
  U: {{inputs: [y], hidden: [4], activation: tanh}}
solver: {{method: rk4, step: 0.5, engine: torchdiffeq}}
training:
  warm_start: none
  stages:
    - {{optimizer: adam, lr: 0.02, iterations: 3}}
    - {{optimizer: adam, lr: 0.02, iterations: {iterations}}}
    - {{optimizer: lbfgs, iterations: {lbfgs}}}
{extra}output: {{plots: {str(plots).lower()}}}
""")
    return path


# -- what a run directory may look like -----------------------------------------------------------

def _parses(path: Path) -> None:
    import pandas as pd

    suffix = path.suffix
    if suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".csv":
        pd.read_csv(path)
    elif suffix == ".yaml":
        yaml.safe_load(path.read_text(encoding="utf-8"))
    elif suffix == ".pt":
        torch.load(path, weights_only=True)
    elif suffix == ".png":
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.read_bytes().endswith(b"IEND\xaeB`\x82")
    elif suffix == ".pdf":
        data = path.read_bytes()
        assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
    else:
        raise AssertionError(f"unexpected file {path}")


def assert_valid_run_or_nothing(out: Path) -> str:
    """``out`` is absent, a complete run, or an incomplete resumable run; say which."""
    if not out.exists():
        return "nothing"
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not [f for f in files if f.startswith(".") or "/." in f], f"temporary files left: {files}"
    for f in files:
        _parses(out / f)
    info = json.loads((out / "run.json").read_text())
    if info["status"] == "complete":
        assert files >= RUN_FILES, files
        return "complete"
    assert info["status"] == "incomplete", info["status"]
    assert {"checkpoint.pt", "run.json", "inputs/config.yaml", "inputs/d.csv"} <= files, files
    from ude_cli.runs.checkpoint import load_checkpoint

    load_checkpoint(out)
    return "incomplete"


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def tensors(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def assert_same_model(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


# -- real processes -------------------------------------------------------------------------------

class Fit:
    """``python -m ude_cli fit ...`` in a real process; its stderr lines are collected as they come."""

    def __init__(self, *args: str | Path, cwd: Path):
        env = {**os.environ, "CI": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "ude_cli", "fit", *map(str, args)], cwd=cwd, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Until a stderr line contains ``text`` (fails if the process ends first)."""
        end = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or self._reader.is_alive(), f"ended before {text!r}: {self.lines}"
            assert time.monotonic() < end, f"no {text!r} after {timeout} s: {self.lines}"
            time.sleep(0.01)

    def wait_for_path(self, parent: Path, prefix: str, timeout: float = 300) -> None:
        """Until an entry of ``parent`` starts with ``prefix`` (polled every millisecond)."""
        end = time.monotonic() + timeout
        while not any(name.startswith(prefix) for name in os.listdir(parent)):
            assert self.proc.poll() is None, f"ended before {prefix!r} appeared: {self.lines}"
            assert time.monotonic() < end, f"no {prefix!r} after {timeout} s"
            time.sleep(0.001)

    def wait_for_staged(self, parent: Path, prefix: str, name: str, timeout: float = 300) -> None:
        """Until ``name`` exists in the staging directory (or the staging directory has gone: the run
        was moved into place, or the process ended)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            staging = [parent / n for n in os.listdir(parent) if n.startswith(prefix)]
            if not staging or (staging[0] / name).exists():
                return
            time.sleep(0.001)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny config (the one the resumed runs must reproduce)."""
    root = tmp_path_factory.mktemp("reference")
    tiny_config(root, iterations=150)
    fit = Fit("config.yaml", "--out", "run", cwd=root)
    assert fit.finish() == 0, fit.lines
    assert assert_valid_run_or_nothing(root / "run") == "complete"
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_fit_then_resume_matches_an_uninterrupted_run(tmp_path, reference, signum):
    tiny_config(tmp_path, iterations=150)
    fit = Fit("config.yaml", "--out", "run", cwd=tmp_path)
    fit.wait_for("stage 1/3")  # stage 2 (150 Adam iterations) is under way
    fit.signal(signum)
    assert fit.finish() == exits.INTERRUPTED, fit.lines
    name = signal.Signals(signum).name
    assert fit.lines[-1] == (f"error: run: interrupted by {name}; a checkpoint was saved; continue with: "
                             f"ude fit --resume run")
    assert not any("Traceback" in line for line in fit.lines)
    assert assert_valid_run_or_nothing(tmp_path / "run") == "incomplete"
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["stopped_at"]["stage"] == 1 and 0 < info["stopped_at"]["iteration"] < 160

    resumed = Fit("--resume", "run", cwd=tmp_path)
    assert resumed.finish() == 0, resumed.lines
    assert assert_valid_run_or_nothing(tmp_path / "run") == "complete"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert_same_model(tmp_path / "run", reference)
    assert json.loads((tmp_path / "run" / "params.json").read_text()) == \
        json.loads((reference / "params.json").read_text())
    assert leftovers(tmp_path / "run") == []


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 1.5])
def test_sigterm_before_training_writes_nothing(tmp_path, delay):
    """SIGTERM while Python starts or ude imports its libraries: exit 130 with one line once ``ude``
    runs (before that, the default action ends the process), and nothing written either way."""
    tiny_config(tmp_path, iterations=400)  # still training 1.5 s after the start
    fit = Fit("config.yaml", "--out", "run", cwd=tmp_path)
    time.sleep(delay)
    fit.signal(signal.SIGTERM)
    code = fit.finish()
    assert not any("Traceback" in line for line in fit.lines), fit.lines
    if code == exits.INTERRUPTED:
        assert fit.lines[-1].startswith("error: ") and "interrupted" in fit.lines[-1], fit.lines
    else:
        assert code == -signal.SIGTERM and fit.lines == [], (code, fit.lines)
    assert assert_valid_run_or_nothing(tmp_path / "run") in ("nothing", "incomplete")
    print(f"SIGTERM {delay} s after start: exit {code}, {fit.lines}")


@pytest.mark.slow
def test_sigkill_during_training_leaves_nothing(tmp_path):
    tiny_config(tmp_path, iterations=150)
    fit = Fit("config.yaml", "--out", "run", cwd=tmp_path)
    fit.wait_for("stage 1/3")
    fit.signal(signal.SIGKILL)
    assert fit.finish() == -signal.SIGKILL
    assert assert_valid_run_or_nothing(tmp_path / "run") == "nothing"
    assert leftovers(tmp_path / "run") == []


@pytest.mark.slow
def test_sigkill_while_the_run_directory_is_written(tmp_path):
    """Killed as writing starts, the target holds nothing. Then, over an existing run with
    ``--overwrite``, killed as each file appears in the staging directory (from the first table to
    run.json, written last, just before the move into place): the target always holds a complete
    run, the old one or the new one. A later fit tidies what the killed ones left."""
    tiny_config(tmp_path, iterations=5, plots=True)
    out = tmp_path / "run"

    fit = Fit("config.yaml", "--out", "run", cwd=tmp_path)
    fit.wait_for_path(tmp_path, ".run.staging-")
    fit.signal(signal.SIGKILL)
    assert fit.finish() == -signal.SIGKILL
    assert assert_valid_run_or_nothing(out) == "nothing"
    fit = Fit("config.yaml", "--out", "run", cwd=tmp_path)
    assert fit.finish() == 0, fit.lines
    assert assert_valid_run_or_nothing(out) == "complete"

    outcomes = []
    for moment in ("params.csv", "trajectory.csv", "model.pt", "inputs/config.yaml", "figures/fit.png",
                   "figures/loss.pdf", "run.json"):
        stamp = (out / "run.json").stat().st_mtime_ns
        fit = Fit("config.yaml", "--out", "run", "--overwrite", cwd=tmp_path)
        fit.wait_for_path(tmp_path, ".run.staging-")
        fit.wait_for_staged(tmp_path, ".run.staging-", moment)
        fit.signal(signal.SIGKILL)
        code = fit.finish()
        held = assert_valid_run_or_nothing(out)
        if held == "nothing":  # killed between moving the old run aside and the new one in: the next fit
            assert any(name.startswith(".run.old-") for name in leftovers(out))  # puts it back
            held = "old run set aside"
        else:
            assert held == "complete"
            held = "old run" if (out / "run.json").stat().st_mtime_ns == stamp else "new run"
        outcomes.append((moment, code, held))
    print("SIGKILL as a file appears in staging (file, exit code, what the target held):", outcomes)
    assert outcomes[0][2] == "old run", outcomes

    final = Fit("config.yaml", "--out", "run", "--overwrite", cwd=tmp_path)
    assert final.finish() == 0, final.lines
    assert assert_valid_run_or_nothing(out) == "complete"
    assert leftovers(out) == [], "the staging directories of killed fits are removed"


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written(tmp_path):
    tiny_config(tmp_path, iterations=150)
    fit = Fit("config.yaml", "--out", "run", cwd=tmp_path)
    fit.wait_for("stage 1/3")
    fit.signal(signal.SIGINT)
    fit.wait_for_path(tmp_path, ".run.staging-")
    fit.signal(signal.SIGKILL)
    fit.finish()
    assert assert_valid_run_or_nothing(tmp_path / "run") in ("nothing", "incomplete")


# -- in-process: resume, leftovers, unwritable and full output locations ---------------------------

def test_resume_after_an_interrupt_is_exact(tmp_path):
    """The library path of the slow tests: stop after N iterations, save, resume, compare."""
    from ude_cli.api import run_fit
    from ude_cli.config import load_config
    from ude_cli.errors import Interrupted

    config = tiny_config(tmp_path, iterations=12, lbfgs=3)
    run_fit(load_config(config), out=tmp_path / "whole")
    calls = iter(range(1000))
    with pytest.raises(Interrupted) as info:
        run_fit(load_config(config), out=tmp_path / "cut", should_stop=lambda: "test" if next(calls) == 8 else None)
    assert info.value.where == str(tmp_path / "cut")
    assert assert_valid_run_or_nothing(tmp_path / "cut") == "incomplete"
    run_fit(resume=tmp_path / "cut")
    assert assert_valid_run_or_nothing(tmp_path / "cut") == "complete"
    assert_same_model(tmp_path / "cut", tmp_path / "whole")


def test_an_interrupted_overwrite_keeps_the_complete_run(tmp_path):
    """--overwrite over a finished run, interrupted: the finished run stays, the checkpoint goes beside it."""
    from ude_cli.api import run_fit
    from ude_cli.config import load_config
    from ude_cli.errors import Interrupted

    config = tiny_config(tmp_path, iterations=12, lbfgs=3)
    run_fit(load_config(config), out=tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    calls = iter(range(1000))
    with pytest.raises(Interrupted) as info:
        run_fit(load_config(config), out=tmp_path / "run", overwrite=True,
                should_stop=lambda: "test" if next(calls) == 8 else None)
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert info.value.where == str(tmp_path / "run.interrupted")
    assert "untouched" in info.value.hint and "--resume " + str(tmp_path / "run.interrupted") in info.value.hint
    assert assert_valid_run_or_nothing(tmp_path / "run.interrupted") == "incomplete"
    run_fit(resume=tmp_path / "run.interrupted")
    assert_same_model(tmp_path / "run.interrupted", tmp_path / "run")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_fit_are_tidied(tmp_path):
    """A fit killed while staging leaves ``.run.staging-PID-*``; killed between moving the old run
    aside and the new one in, it leaves ``.run.old-PID``: the next fit removes the first and puts
    the old run back (so ``--overwrite`` is still needed to replace it)."""
    config = tiny_config(tmp_path, iterations=2)
    pid = _dead_pid()
    (tmp_path / f".run.staging-{pid}-abc").mkdir()
    (tmp_path / f".run.staging-{pid}-abc" / "params.csv").write_text("name,val")  # half-written
    old = tmp_path / f".run.old-{pid}"
    old.mkdir()
    (old / "run.json").write_text('{"status": "complete"}')
    result = runner.invoke(app, ["fit", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == exits.OUTPUT
    assert result.stderr == f"error: {tmp_path / 'run'}: run directory already exists; pass --overwrite to replace " \
                            f"it, or --out to choose another\n"
    assert (tmp_path / "run" / "run.json").read_text() == '{"status": "complete"}'
    assert leftovers(tmp_path / "run") == []


def _readonly_dir(path: Path):
    """A directory this process cannot write to, or None (root ignores permissions: then a read-only
    tmpfs is mounted when that is possible)."""
    path.mkdir()
    path.chmod(0o555)
    if not os.access(path, os.W_OK):
        return path, None
    path.chmod(0o755)
    if shutil.which("mount") and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0:
        return path, path
    return None, None


def test_unwritable_output_location_is_one_line_before_the_fit(tmp_path):
    config = tiny_config(tmp_path / "cfg", iterations=2)
    ro, mounted = _readonly_dir(tmp_path / "ro")
    if ro is None:
        pytest.skip("cannot make a read-only directory here")
    try:
        t0 = time.perf_counter()
        result = runner.invoke(app, ["fit", str(config), "--out", str(ro / "run")])
        assert result.exit_code == exits.OUTPUT
        assert result.stderr == f"error: {ro}: the output location is not writable\n"
        assert time.perf_counter() - t0 < 20  # refused before training
        assert os.listdir(ro) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(mounted)], check=False)
        else:
            ro.chmod(0o755)


def test_output_below_a_file_is_one_line(tmp_path):
    config = tiny_config(tmp_path, iterations=2)
    (tmp_path / "notes.txt").write_text("not a directory")
    result = runner.invoke(app, ["fit", str(config), "--out", str(tmp_path / "notes.txt" / "run")])
    assert result.exit_code == exits.OUTPUT
    assert result.stderr == (f"error: {tmp_path / 'notes.txt'}: is a file, so the run directory cannot be created "
                             f"below it; choose another --out\n")


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """os.write failing with ENOSPC half-way through the run directory (simulated in-process)."""
    config = tiny_config(tmp_path, iterations=2)
    existing = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(config), "--out", str(existing), "--quiet"]).exit_code == 0
    before = {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    import ude_cli.runs.rundir as rundir

    real_fdopen, written = os.fdopen, []

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
            return False

        def write(self, data):
            if len(written) >= 3:  # the fourth file hits a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(len(data))
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(rundir.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    result = runner.invoke(app, ["fit", str(config), "--out", str(existing), "--overwrite", "--quiet"])
    assert result.exit_code == exits.OUTPUT
    assert result.stderr == (f"error: {existing}: cannot write trajectory.csv: No space left on device; nothing was "
                             f"written there; free some space or choose another --out\n")
    assert {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before
    assert leftovers(existing) == []


def test_a_really_full_filesystem(tmp_path):
    """A 256 KiB tmpfs filled to its last few KiB (needs root to mount; skipped elsewhere)."""
    config = tiny_config(tmp_path / "cfg", iterations=2)
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with open(disk / "ballast", "wb", buffering=0) as fh:  # fill it up, then free the last 8 KiB
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(disk / "ballast", os.path.getsize(disk / "ballast") - 8192)
        result = runner.invoke(app, ["fit", str(config), "--out", str(disk / "run"), "--quiet"])
        assert result.exit_code == exits.OUTPUT, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {disk / 'run'}: cannot write ")
        assert lines[0].endswith(": No space left on device; nothing was written there; free some space or choose "
                                 "another --out")
        assert sorted(os.listdir(disk)) == ["ballast"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)
