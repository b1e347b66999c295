"""Fits that fail, fail well: exit code 4, one line naming the stage and iteration and what to try,
no traceback, nothing written; a stiff model with an explicit solver stops at solver.max_steps
instead of hanging; a time limit bounds a run. And ``ude check`` stays fast.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ude_cli.cli import app, exits

runner = CliRunner()

#: "error: stage 1 (adam), iteration 3: <what>, ...; try <what to try>"
FIT_FAILED = re.compile(r"^error: \S+: (stage \d+ \((adam|lbfgs)[^)]*\), iteration \d+|the initial guess): .+; try .+$")

DECAY = """\
data: {{file: d.csv, columns: {{y: conc}}}}
model:
  states: [y]
  equations: {{y: "{equation}"}}
  parameters: {{k: {{init: {init}, positive: true}}}}
solver: {solver}
training:
  warm_start: none
  stages: [{{optimizer: adam, lr: {lr}, iterations: {iterations}}}]
{training}output: {{plots: false}}
"""


def decay(directory: Path, *, equation="-k*y", init=0.3, lr=0.05, iterations=5, training="",
          solver="{method: rk4, step: 0.1}") -> Path:
    t = np.linspace(0, 2, 6)
    (directory / "d.csv").write_text("t,conc\n" + "".join(f"{a:g},{2 * np.exp(-0.7 * a):.6f}\n" for a in t))
    path = directory / "config.yaml"
    path.write_text(DECAY.format(equation=equation, init=init, lr=lr, iterations=iterations, training=training,
                                 solver=solver))
    return path


def fit(config: Path, *args: str):
    out = config.parent / "run"
    t0 = time.perf_counter()
    result = runner.invoke(app, ["fit", str(config), "--out", str(out), "--quiet", *args])
    result.seconds = time.perf_counter() - t0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output + result.stderr
    return result, out


def test_a_model_that_blows_up_fails_with_stage_iteration_and_advice(tmp_path):
    """dy/dt = k*y**2 from y(0) = 2 with k = 5 blows up at t = 0.1, inside the data's window: the
    initial guess itself fails, so there is nothing to roll back to and the fit stops at once."""
    config = decay(tmp_path, equation="k*y**2", init=5)
    result, out = fit(config)
    assert result.exit_code == exits.FIT_FAILED
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and FIT_FAILED.match(lines[0]), lines
    assert lines[0].startswith(f"error: {config}: the initial guess: state 'y' runs away: it reaches 1.31e+178 by "
                               f"t = 0.3, against 2 in the data, and the loss is not finite")
    assert not out.exists()
    # ude check says the same before any fitting, from the initial guess
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == exits.FIT_FAILED
    assert result.stderr == (f"error: {config}: simulating the initial guess: state 'y' runs away: it reaches "
                             f"1.31e+178 by t = 0.3, against 2 in the data; check the initial parameter values and "
                             f"initial states\n")


def test_non_finite_states_name_the_equation_and_the_time(tmp_path):
    """rk4 (step 0.1) on dy/dt = -5 sqrt(y), y(0) = 2: y = (sqrt(2) - 2.5 t)**2 reaches 0 at t = 0.566, and the
    step from t = 0.5 evaluates sqrt of a negative y: the states turn NaN with no solver failure to say when."""
    config = decay(tmp_path, equation="-5*sqrt(y) + 0*k")
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == exits.FIT_FAILED
    found = re.fullmatch(rf"error: {re.escape(str(config))}: simulating the initial guess: dy/dt is not finite at "
                         r"t = (\S+) \(where y = (\S+)\): a log or sqrt of a negative value, or a division by zero; "
                         r"check the initial parameter values and initial states\n", result.stderr)
    assert found and 0.5 <= float(found[1]) <= 0.566 and float(found[2]) < 0, result.stderr


def test_a_learning_rate_that_diverges_fails_after_roll_backs(tmp_path):
    """Adam with lr 1e6 on log(k): every step overflows k, even after three 10x smaller retries."""
    config = decay(tmp_path, lr=1e6, iterations=20)
    result, out = fit(config)
    assert result.exit_code == exits.FIT_FAILED
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and FIT_FAILED.match(lines[0]), lines
    assert "roll-backs" in lines[0] and "smaller learning rate" in lines[0]
    assert not out.exists()


def test_failed_fit_leaves_an_existing_run_untouched(tmp_path):
    good = decay(tmp_path, iterations=2)
    result, out = fit(good)
    assert result.exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace('"-k*y"', '"k*y**2"').replace("init: 0.3", "init: 5"))
    result = runner.invoke(app, ["fit", str(bad), "--out", str(out), "--overwrite", "--quiet"])
    assert result.exit_code == exits.FIT_FAILED
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


ROBERTSON = """\
description: Robertson's stiff chemical kinetics (Robertson 1966; Hairer & Wanner, Solving ODEs II)
data: {file: robertson.csv, columns: {y1: y1, y2: y2, y3: y3}}
model:
  states: [y1, y2, y3]
  equations:
    y1: -k1*y1 + k3*y2*y3
    y2: k1*y1 - k3*y2*y3 - k2*y2**2
    y3: k2*y2**2
  parameters:
    k1: {init: 0.04, fixed: true}
    k2: {init: 3.0e+7, fixed: true}
    k3: {init: 1.0e+4, positive: true}
solver: {method: dopri5, max_steps: 50}
training:
  warm_start: none
  stages: [{optimizer: adam, iterations: 5}]
output: {plots: false}
"""
#: Radau, rtol 1e-10: the reference solution at a few times.
ROBERTSON_CSV = """\
t,y1,y2,y3
0,1,0,0
0.4,0.98517211,3.3863954e-05,0.014794022
4,0.90551868,2.2404757e-05,0.094458917
40,0.71582707,9.1855348e-06,0.28416375
400,0.45051867,3.2229014e-06,0.54947811
"""
#: the time and the state where dopri5 gave up (the compiled engine's loop: the same steps every run)
MAX_STEPS_MESSAGE = ("the solver needed more than solver.max_steps = 50 steps, at t = 0.0437107, where y1 = 0.9983, "
                     "y2 = 3.59e-05, y3 = 0.001698: the equations are stiff or the solution grows very fast")


def test_a_stiff_model_with_an_explicit_solver_stops_at_max_steps(tmp_path):
    (tmp_path / "robertson.csv").write_text(ROBERTSON_CSV)
    config = tmp_path / "robertson.yaml"
    config.write_text(ROBERTSON)
    t0 = time.perf_counter()
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == exits.FIT_FAILED
    assert result.stderr == (f"error: {config}: simulating the initial guess: {MAX_STEPS_MESSAGE}; try "
                             "solver.method: bdf (or auto) for stiff equations; otherwise raising solver.max_steps, "
                             "loosening rtol/atol, or bounding the parameters\n")
    result, out = fit(config)
    assert result.exit_code == exits.FIT_FAILED
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and FIT_FAILED.match(lines[0]) and MAX_STEPS_MESSAGE in lines[0], lines
    assert time.perf_counter() - t0 < 60, "a stiff model must fail at max_steps, not hang"
    assert not out.exists()
    for method in ("bdf", "auto"):  # what the message advises
        config.write_text(ROBERTSON.replace("method: dopri5, max_steps: 50", f"method: {method}"))
        result = runner.invoke(app, ["check", str(config)])
        assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("how", ["--time-limit", "training.max_seconds"])
def test_a_time_limit_bounds_the_run(tmp_path, how):
    if how == "--time-limit":
        config, args = decay(tmp_path, iterations=1_000_000), ["--time-limit", "1.5"]
    else:
        config, args = decay(tmp_path, iterations=1_000_000, training="  max_seconds: 1.5\n"), []
    result, out = fit(config, *args)
    assert result.exit_code == 0, result.stderr
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stop_reason"] == "time limit of 1.5 s"
    assert 1.5 <= metrics["wall_seconds"] < 5 and 0 < metrics["iterations"] < 1_000_000
    assert result.seconds < 30
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_check_is_fast(tmp_path):
    """``ude check`` on the bundled samples, once imports are done, takes well under a second."""
    repo = Path(__file__).resolve().parent.parent
    configs = [repo / "configs" / "lotka_volterra.yaml", repo / "configs" / "theophylline_pk.yaml"]
    runner.invoke(app, ["check", "--quiet", str(configs[0])])  # imports
    times = []
    for config in configs:
        t0 = time.perf_counter()
        result = runner.invoke(app, ["check", "--quiet", str(config)])
        times.append(time.perf_counter() - t0)
        assert result.exit_code == 0, result.stderr
    print("ude check after imports (s):", [f"{t:.3f}" for t in times])
    assert max(times) < 2.0  # about 0.1 s on an idle machine; generous for loaded CI runners
