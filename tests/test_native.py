"""Native code for the compiled engine (ude_cli/native.py): the virtual machine's numbers bit for bit, a
switch between the two mid-fit that changes nothing, a cache that outlives the process, and the virtual
machine, with the reason recorded, whenever there is no working compiler."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ude_cli import api, native
from ude_cli.cli import app

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
    script = ("import json, sys, casadi as ca; from ude_cli.native import NativeLibrary; "
              "NativeLibrary([ca.Function.deserialize(s) for s in json.load(open(sys.argv[1]))])")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(source)], check=True, timeout=60)
    assert time.perf_counter() - started < 10  # it did not wait for the compiler
    deadline = time.time() + 120
    while not list(cache.glob("*.so")) and time.time() < deadline:
        time.sleep(0.2)
    assert len(list(cache.glob("*.so"))) == 1
    assert not [p for p in cache.iterdir() if p.suffix != ".so"]  # no temporary file left
    library = native.NativeLibrary(fns)
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
    library = native.NativeLibrary(functions(tmp_path))
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
    assert metrics["native_code"] is True and metrics["native_code_note"] == "loaded from the cache"
    before = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert before["loss"] == metrics["loss"]  # whichever ran


def test_functions_too_large_to_compile_quickly_stay_in_the_virtual_machine(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(native, "MAX_INSTRUCTIONS", 1000)
    fns = functions(tmp_path)
    library = native.NativeLibrary(fns)
    assert library.reason.startswith("the model's functions are too large to compile quickly (")
    assert library.poll() is None and not native.possible(fns)


def test_auto_compiles_larger_problems_when_native_code_is_possible(tmp_path, cache, monkeypatch):
    cfg = tiny(tmp_path)
    cfg["networks"]["N"]["hidden"] = [16, 16]  # ~1,100 instructions x 24 trajectories: past the VM's limit
    monkeypatch.setenv("UDE_CC", "false")  # a compiler that fails at once: nothing left compiling
    if native.compiler() is None:
        pytest.skip("no 'false' command")
    assert model(cfg, tmp_path, n_starts=24).engine == "compiled"
    monkeypatch.setenv("UDE_NATIVE", "0")
    assert model(cfg, tmp_path, n_starts=24).engine == "torchdiffeq"
