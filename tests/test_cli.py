"""The command line as a user meets it: exit codes, exact error lines, no tracebacks, the run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ude_cli.cli import app, exits

runner = CliRunner()

DECAY = """
name: decay
data: {file: d.csv, time: t, columns: {y: conc}, units: {t: h, conc: mg/L}}
model:
  states: [y]
  equations: {y: "-k*y"}
  parameters: {k: {init: 0.3, positive: true}}
training:
  stages: [{optimizer: lbfgs, iterations: 20}]
"""


@pytest.fixture
def decay(write):
    t = np.linspace(0, 5, 11)
    write("d.csv", "t,conc\n" + "".join(f"{a},{2 * np.exp(-0.7 * a):.8f}\n" for a in t))
    return write("decay.yaml", DECAY)


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output + result.stderr
    return result


COMMANDS = ["fit", "check", "compare", "models", "discover", "predict", "report", "import", "evaluate", "export"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage: ude " + command in result.output
    assert len(result.output.splitlines()) > 5
    # values named as a user writes them: no typer type names, braces or ranges in the metavars
    for typer_words in ("list[", "range>", "<str>", "<Path>", "{"):
        assert typer_words not in result.output, typer_words


def test_the_command_list_shows_whole_descriptions():
    result = invoke("--help")
    listed = result.output.split("Commands:")[1].splitlines()[1:]
    assert [line.split()[0] for line in listed if line.strip()] == COMMANDS
    assert not any(line.endswith("...") for line in listed)


def test_root_help_documents_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "3 bad config or data" in " ".join(result.output.split())


def test_fit_writes_the_whole_run_directory(decay, tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", decay, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    expected = {"params.csv", "params.json", "predictions.csv", "trajectory.csv", "metrics.json", "loss.csv",
                "run.json", "model.pt", "inputs/config.yaml", "inputs/d.csv"}
    expected |= {f"figures/{f}.{e}" for f in ("fit", "residuals", "loss") for e in ("png", "pdf")}
    assert expected <= names
    assert not any(n.startswith(".") or "/." in n for n in names)  # no temporary files left
    params = json.loads((out / "params.json").read_text())
    assert params[0]["name"] == "k" and params[0]["value"] == pytest.approx(0.7, rel=1e-4)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and len(run["data_files"][0]["sha256"]) == 64
    assert run["versions"]["torch"] and run["seed"] == 0
    assert "k" in result.output and "run directory:" in result.output


def test_existing_run_directory_is_not_touched_without_overwrite(decay, tmp_path):
    out = tmp_path / "run"
    assert invoke("fit", decay, "--out", out, "--quiet").exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = invoke("fit", decay, "--out", out)
    assert result.exit_code == exits.OUTPUT
    assert result.stderr.strip() == f"error: {out}: run directory already exists; pass --overwrite to replace it, " \
                                    f"or --out to choose another"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert invoke("fit", decay, "--out", out, "--overwrite", "--quiet").exit_code == 0


def test_quiet_prints_nothing(decay, tmp_path):
    result = invoke("fit", decay, "--out", tmp_path / "q", "--quiet")
    assert result.exit_code == 0 and result.output == "" and result.stderr == ""


def test_bad_config_exit_code_and_exact_lines(write):
    path = write("bad.yaml", """
        data: {file: d.csv, columns: {y: conc}}
        model: {states: [y], equations: {y: "__import__('os').system('x')"}}
        solver: {rtol: 0}
        """)
    result = invoke("check", path)
    assert result.exit_code == exits.BAD_INPUT
    assert result.stderr.splitlines() == [  # every problem in one pass: the schema's, the equation's, the data's
        f"error: {path}: solver.rtol: must be > 0, got 0",
        f"error: {path}: model.equations.y: names starting with '_' are not allowed: '__import__' in "
        f"\"__import__('os').system('x')\"",
        f"error: {path}: data.file: data file '{path.parent / 'd.csv'}' not found"]
    result = invoke("fit", path, "--out", path.parent / "never")
    assert result.exit_code == exits.BAD_INPUT
    assert not (path.parent / "never").exists()


def test_equation_errors_reach_the_user_as_one_line(write):
    write("d.csv", "t,conc\n0,1\n1,0.5\n")
    path = write("bad.yaml", """
        data: {file: d.csv, columns: {y: conc}}
        model: {states: [y], equations: {y: "__import__('os').system('x')"}}
        """)
    result = invoke("check", path)
    assert result.exit_code == exits.BAD_INPUT
    assert result.stderr.splitlines() == [
        f"error: {path}: model.equations.y: names starting with '_' are not allowed: '__import__' in "
        "\"__import__('os').system('x')\""]


def test_missing_config_file():
    result = invoke("check", "nowhere.yaml")
    assert result.exit_code == exits.BAD_INPUT
    assert result.stderr == "error: nowhere.yaml: config file not found\n"


def test_check_goes_through_every_config(decay, write):
    """A bad config does not hide the verdict on the ones after it; the exit code is the first failure's."""
    bad = write("bad.yaml", "data: {file: d.csv, columns: {y: conc}}\nmodel: {states: [y], equations: {y: '-k*'}}\n")
    result = invoke("check", "nowhere.yaml", bad, decay)
    assert result.exit_code == exits.BAD_INPUT
    lines = result.stderr.splitlines()
    assert lines[0] == "error: nowhere.yaml: config file not found"
    assert lines[1].startswith(f"error: {bad}: model.equations.y: ")
    assert f"{decay}: ok (" in result.output


def test_check_prints_the_resolved_config(decay):
    result = invoke("check", decay, "--print")
    assert result.exit_code == 0
    assert "ok (1 state, 1 parameter, 0 networks; 1 experiment, 11 training time points)" in result.output
    assert "method: auto" in result.output and "max_steps: 2000" in result.output


def test_models_lists_equations_and_suggests_names():
    result = invoke("models", "sir")
    assert result.exit_code == 0
    assert "dS/dt = -beta*S*I/N" in result.output and "Kermack" in result.output
    result = invoke("models", "sri")
    assert result.exit_code == exits.BAD_INPUT
    assert "unknown built-in model 'sri' (did you mean 'sir'?)" in result.stderr


def test_usage_error_exit_code():
    assert invoke("fit").exit_code == exits.USAGE
    assert invoke("fit", "--no-such-option", "x.yaml").exit_code == exits.USAGE


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_folder_that_is_not_a_run_gets_one_answer_with_or_without_overwrite(decay, tmp_path, flags):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = invoke("fit", decay, "--out", out, "--quiet", *flags)
    assert result.exit_code == exits.OUTPUT
    assert result.stderr == (f"error: {out}: exists and is not a run directory (no run.json); ude replaces only run "
                             f"directories; choose another --out, or move the folder away\n")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_an_unreachable_scheduler_is_a_usage_error_with_its_own_line(decay, tmp_path, monkeypatch):
    from ude_cli.batch import distributed

    monkeypatch.setattr(distributed, "CONNECT_SECONDS", 1)
    result = invoke("fit", decay, "--out", tmp_path / "r", "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == exits.USAGE
    assert result.stderr == ("error: --scheduler: cannot connect to the Dask scheduler tcp://127.0.0.1:1 (no answer "
                             "within 1 s); check the address and that the scheduler runs (dask scheduler), or use "
                             "--jobs N for a local cluster\n")
    assert not (tmp_path / "r").exists()


def test_check_and_compare_json_are_one_document_on_stdout(decay, write, tmp_path):
    bad = write("bad.yaml", "data: {file: d.csv, columns: {y: conc}}\nmodel: {states: [y], equations: {y: '-k*y'}}\n")
    result = invoke("check", decay, bad, "--json")
    assert result.exit_code == exits.BAD_INPUT
    doc = json.loads(result.stdout)
    ok, failed = doc["configs"]
    assert doc["status"] == "failed" and ok["status"] == "ok" and failed["status"] == "failed"
    assert (ok["states"], ok["parameters"], ok["experiments"], ok["training_time_points"]) == (["y"], ["k"], 1, 11)
    assert failed["error"]["kind"] == "bad_input"
    assert result.stderr.splitlines() == [f"error: {line}" for line in failed["error"]["lines"]]
    out = tmp_path / "run"
    assert invoke("fit", decay, "--out", out, "--quiet").exit_code == 0
    result = invoke("compare", out, out, "--json")
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["within_tolerance"] == doc["quantities"] == len(doc["rows"]) > 0
    result = invoke("compare", out, tmp_path / "nothere", "--json")
    assert result.exit_code == exits.BAD_INPUT and json.loads(result.stdout)["error"]["kind"] == "bad_input"


def test_library_warnings_reach_the_user_as_one_line_of_ours_once(capsys):
    import warnings

    from ude_cli.cli import common

    saved = warnings.showwarning
    try:
        with warnings.catch_warnings():  # restores the filters (and showwarning) on leaving
            warnings.simplefilter("always")
            common._one_line_warnings()
            import numpy as np

            for _ in range(3):
                np.exp(np.array([1000.0]))
            warnings.warn("x is deprecated", DeprecationWarning, stacklevel=1)
            warnings.warn("the solver did not converge", UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = saved
    assert capsys.readouterr().err.splitlines() == [
        "warning: a computation overflowed (a value beyond 1e308 became infinite) (in test_cli: overflow "
        "encountered in exp); the results may hold inf or NaN where it happened",
        "warning: the solver did not converge",
    ]


def test_run_json_records_parameters_as_resolved(decay, tmp_path):
    out = tmp_path / "run"
    assert invoke("fit", decay, "--out", out, "--quiet", "--no-plots").exit_code == 0
    params = json.loads((out / "run.json").read_text())["config"]["model"]["parameters"]
    assert params == {"k": {"init": 0.3, "fixed": False, "bounds": None, "positive": True, "unit": None,
                            "per_experiment": False}}


def test_two_configs_of_one_batch_writing_one_run_directory(decay, write, tmp_path, monkeypatch):
    twin = write("twin.yaml", DECAY)  # the same name: runs/decay
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", decay, twin, "--quiet", "--no-plots")
    assert result.exit_code == exits.OUTPUT
    assert result.stderr == (f"error: {twin}: would write the same run directory as {decay} (runs/decay); give one "
                             f"of them another 'name' in its config\n")
    assert (tmp_path / "runs" / "decay" / "run.json").is_file()  # the first was fitted


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("std::bad_alloc"), RuntimeError("boom")])
def test_running_out_of_memory_is_one_line_not_a_bug_report(monkeypatch, capsys, error):
    """An allocation failure (a 500-species model on torchdiffeq: Chen_MSB2009) says so in one line; any other
    exception is still reported as a bug."""
    import typer

    from ude_cli.cli.common import run_app

    broken = typer.Typer()

    @broken.command()
    def go() -> None:
        raise error

    monkeypatch.setattr("sys.argv", ["ude"])
    with pytest.raises(SystemExit) as ended:
        run_app(broken)
    assert ended.value.code == exits.INTERNAL
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert ("out of memory" in err) == (not isinstance(error, RuntimeError) or "bad_alloc" in str(error))
    assert ("this is a bug in ude" in err) == (str(error) == "boom")
