"""Native code for the compiled engine (ude_cli/engines/native.py): the virtual machine's numbers bit for bit, a
switch between the two mid-fit that changes nothing, a cache that outlives the process, and the virtual
machine, with the reason recorded, whenever there is no working compiler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ude_cli import api
from ude_cli.cli import app
from ude_cli.engines import native

from .helpers import config, model, write_csv
from .test_compiled import perturbed, rich_config, solutions_and_gradients

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")
ACTIVATIONS = ["tanh", "relu", "gelu", "softplus", "rbf", "sigmoid", "silu"]


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """Native code on, with an empty cache of its own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("UDE_NATIVE", "1")
    monkeypatch.setenv("UDE_CACHE_DIR", str(folder))
    return folder / "native"


def every_activation(tmp_path, method: str) -> dict:
    """rich_config with one small network per activation, all feeding the equations."""
    cfg = rich_config(tmp_path, method, step=0.1 if method != "dopri5" else None)
    nets = {f"N{a}": {"inputs": ["u", "v", "t"], "outputs": 1, "hidden": [4], "activation": a, "final_scale": 0.3}
            for a in ACTIVATIONS}
    cfg["networks"] = {**cfg["networks"], **nets}
    cfg["model"]["equations"]["v"] += " + " + " + ".join(f"0.2*N{a}[0]" for a in ACTIVATIONS)
    return cfg


@needs_compiler
@pytest.mark.parametrize("method", ["dopri5", "rk4", "euler"])
def test_native_code_gives_the_virtual_machines_numbers_bit_for_bit(tmp_path, cache, monkeypatch, method):
    cfg = every_activation(tmp_path, method)
    monkeypatch.setenv("UDE_NATIVE", "0")
    vm = perturbed(model(cfg, tmp_path, n_starts=2))
    monkeypatch.setenv("UDE_NATIVE", "1")
    nat = perturbed(model(cfg, tmp_path, n_starts=2))
    assert nat._compiled.native.wait(120) is not None, nat._compiled.native.reason
    sol_v, grad_v = solutions_and_gradients(vm, "compiled")
    sol_n, grad_n = solutions_and_gradients(nat, "compiled")
    assert vm._compiled.native_since is None and nat._compiled.native_since is not None
    assert torch.equal(sol_v, sol_n)
    assert grad_v.keys() == grad_n.keys() and len(grad_v) >= 10
    for name in grad_v:
        assert torch.equal(grad_v[name], grad_n[name]), name
    assert vm.rhs.nfe == nat.rhs.nfe


def tiny(tmp_path, iterations: int = 40) -> dict:
    t = np.linspace(0, 4, 11)
    write_csv(tmp_path / "d.csv", "t,y", [(float(a), float(2.0 * np.exp(-0.7 * a) + 0.1 * np.sin(a))) for a in t])
    return {"data": {"file": "d.csv", "time": "t", "columns": {"y": "y"}},
            "model": {"states": ["y"], "equations": {"y": "-k*y + N[0]"}, "parameters": {"k": {"init": 0.3}}},
            "networks": {"N": {"inputs": ["y"], "outputs": 1, "hidden": [5, 5]}},
            "training": {"warm_start": "none", "stages": [{"optimizer": "adam", "lr": 0.02, "iterations": iterations},
                                                          {"optimizer": "lbfgs", "iterations": 10}]},
            "solver": {"method": "dopri5"}}


@needs_compiler
def test_switching_to_native_code_mid_fit_changes_no_number(tmp_path, cache, monkeypatch):
    cfg = tiny(tmp_path)
    monkeypatch.setenv("UDE_NATIVE", "0")
    vm = api.fit(config(cfg, tmp_path))
    monkeypatch.setenv("UDE_NATIVE", "1")
    poll = native.NativeLibrary.poll
    calls = {"n": 0}

    def late_poll(self):  # the library becomes ready after 15 solves, as when it compiles in the background
        self._done.wait(120)
        calls["n"] += 1
        return poll(self) if calls["n"] > 15 else None

    monkeypatch.setattr(native.NativeLibrary, "poll", late_poll)
    switched = api.fit(config(cfg, tmp_path))
    assert calls["n"] > 15
    assert vm.metrics["native_code"] is False and switched.metrics["native_code"] is True
    assert "compiled in" in switched.metrics["native_code_note"]
    assert vm.history["loss"].tolist() == switched.history["loss"].tolist()
    assert vm.parameters["value"].tolist() == switched.parameters["value"].tolist()
    assert vm.metrics["loss"] == switched.metrics["loss"]


def functions(tmp_path):
    m = model(tiny(tmp_path), tmp_path)
    return m._compiled._adaptive.functions()


@needs_compiler
def test_the_library_is_kept_and_loaded_by_the_next_process(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("UDE_NATIVE", "0")  # this process compiles nothing: only the child below does
    fns = functions(tmp_path)
    monkeypatch.setenv("UDE_NATIVE", "1")
    source = tmp_path / "functions.casadi"
    with open(source, "w") as fh:  # the same functions, rebuilt in a process that exits at once
        fh.write(json.dumps([fn.serialize() for fn in fns]))
    script = ("import json, sys, casadi as ca; from ude_cli.engines.native import library, prepare; "
              "library(prepare([ca.Function.deserialize(s) for s in json.load(open(sys.argv[1]))]))")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(source)], check=True, timeout=60)
    assert time.perf_counter() - started < 10  # it did not wait for the compiler
    deadline = time.time() + 120
    while not list(cache.glob("*.so")) and time.time() < deadline:
        time.sleep(0.2)
    assert len(list(cache.glob("*.so"))) == 1
    assert not [p for p in cache.iterdir() if p.suffix != ".so"]  # no temporary file left
    library = native.NativeLibrary(native.prepare(fns))
    assert library.cached and library._thread is None
    loaded = library.poll()
    assert loaded is not None and sorted(loaded) == sorted(fn.name() for fn in fns)


@pytest.mark.parametrize(("env", "reason"), [
    ({"UDE_NATIVE": "0"}, "native code disabled (UDE_NATIVE=0)"),
    ({"UDE_CC": "/no/such/cc"}, "no C compiler found"),
    ({"UDE_CC": "false"}, "the C compiler failed (false)"),
])
def test_without_a_working_compiler_the_virtual_machine_fits_alone(tmp_path, cache, monkeypatch, env, reason):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = api.fit(config(tiny(tmp_path, iterations=5), tmp_path))
    assert result.metrics["solver_engine"] == "compiled"
    assert result.metrics["native_code"] is False
    assert result.metrics["native_code_note"].startswith(f"CasADi's virtual machine: {reason}")
    assert not list(cache.glob("*.so"))


def test_an_unwritable_cache_leaves_the_virtual_machine(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("UDE_NATIVE", "1")
    monkeypatch.setenv("UDE_CACHE_DIR", str(blocker))
    library = native.NativeLibrary(native.prepare(functions(tmp_path)))
    if native.compiler() is None:
        assert library.reason == "no C compiler found"
    else:
        assert library.reason.startswith(f"cannot write to the cache {blocker / 'native'}")
    assert library.poll() is None


@needs_compiler
def test_ude_fit_says_when_it_ran_native_code(tmp_path, cache):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path, iterations=20)))
    runner = CliRunner()
    first = runner.invoke(app, ["fit", str(path), "--no-plots", "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    deadline = time.time() + 120
    while not list(cache.glob("*.so")) and time.time() < deadline:
        time.sleep(0.2)
    second = runner.invoke(app, ["fit", str(path), "--no-plots", "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert "(compiled engine, native code)" in second.output
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["native_code"] is True  # the same process: the first fit's library, compiled by now
    assert metrics["native_code_note"].startswith("compiled earlier in this process (")
    before = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert before["loss"] == metrics["loss"]  # whichever ran
    ude = Path(sys.executable).with_name("ude")
    third = subprocess.run([str(ude), "fit", str(path), "--no-plots", "--out", str(tmp_path / "c")],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert third.returncode == 0, third.stderr
    assert "(compiled engine, native code)" in third.stdout
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["native_code_note"] == "loaded from the cache" and metrics["loss"] == before["loss"]


@needs_compiler
def test_a_compiled_step_loop_with_other_numbers_is_dropped(tmp_path, cache, monkeypatch):
    from ude_cli.engines import dopri5 as compiled_adaptive

    monkeypatch.setenv("UDE_NATIVE", "0")
    vm = solutions_and_gradients(model(tiny(tmp_path), tmp_path), "compiled")
    monkeypatch.setenv("UDE_NATIVE", "1")
    m = model(tiny(tmp_path), tmp_path)
    assert m._compiled.native.wait(120) is not None
    monkeypatch.setattr(compiled_adaptive, "_same_steps", lambda a, b: False)
    sol, grads = solutions_and_gradients(m, "compiled")
    assert m._compiled._adaptive._driver is None
    assert m.native_status()["native_code_note"].endswith(
        "dopri5's compiled step loop gave other numbers than the loop in Python (the compiler's settings?): not used")
    assert torch.equal(sol, vm[0]) and all(torch.equal(grads[k], vm[1][k]) for k in vm[1])


def test_functions_too_large_to_compile_quickly_stay_in_the_virtual_machine(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(native, "MAX_INSTRUCTIONS", 1000)
    build = native.prepare(functions(tmp_path))
    assert build.reason.startswith("the model's functions are too large to compile quickly (")
    assert native.NativeLibrary(build).poll() is None and not build.viable


def test_auto_counts_on_native_code_until_the_compiler_fails(tmp_path, cache, monkeypatch):
    cfg = tiny(tmp_path)
    cfg["networks"]["N"]["hidden"] = [16, 16]  # ~1,100 instructions x 24 trajectories: past the VM's limit
    monkeypatch.setenv("UDE_CC", "false")  # a compiler that fails at once: nothing left compiling
    if native.compiler() is None:
        pytest.skip("no 'false' command")
    first = model(cfg, tmp_path, n_starts=24)
    assert first.engine == "compiled"  # native code is expected
    assert first._compiled.native.wait(60) is None
    assert list(cache.glob("*.failed"))  # remembered: the next model does not count on it
    second = model(cfg, tmp_path, n_starts=24)
    assert second.engine == "torchdiffeq"
    monkeypatch.setenv("UDE_NATIVE", "0")
    assert model(cfg, tmp_path, n_starts=24).engine == "torchdiffeq"


def test_without_a_home_directory_there_is_no_cache_and_no_error(tmp_path, monkeypatch):
    for variable in ("UDE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("UDE_NATIVE", "1")

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(native.Path, "home", staticmethod(no_home))
    m = model(tiny(tmp_path), tmp_path)
    assert m.engine == "compiled"
    if native.compiler() is not None:
        assert m.native_status()["native_code_note"] == ("CasADi's virtual machine: no folder for the cache "
                                                         "(Could not determine home directory.); set UDE_CACHE_DIR")


@needs_compiler
def test_models_of_one_structure_share_one_compilation(tmp_path, cache):
    a, b = model(tiny(tmp_path), tmp_path), model(tiny(tmp_path), tmp_path, n_starts=3)
    assert a._compiled.native is b._compiled.native
    assert a._compiled.native.wait(120) is not None
    assert len(list(cache.glob("*.so"))) == 1 and not [p for p in cache.iterdir() if p.suffix != ".so"]


@needs_compiler
def test_a_library_with_other_numbers_is_refused(tmp_path, cache, monkeypatch):
    m = model(tiny(tmp_path), tmp_path)
    other = tiny(tmp_path)
    other["solver"]["rtol"] = 1e-4  # another attempt function under the same names
    n = model(other, tmp_path)
    assert m._compiled.native.wait(120) is not None and n._compiled.native.wait(120) is not None
    monkeypatch.setattr(m._compiled.native, "_functions", n._compiled.native.poll())
    m()
    assert m._compiled.native_since is None
    assert m.native_status()["native_code_note"].startswith(
        "CasADi's virtual machine: the compiled library's numbers differ from the virtual machine's")
