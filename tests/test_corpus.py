"""A corpus of bad configs and bad CSVs, kept as files: each gives its exact lines and exit code.

Every directory under ``tests/corpus/`` is one case: ``config.yaml`` (absent when the case is a
missing config), its data files, and ``expected.txt``::

    # what the case shows
    exit: 3
    commands: check fit             (optional; default: both)
    pad: config.yaml 1000001        (optional; the test grows the file to this many bytes)
    stderr:
    error: config.yaml: solver.method: must be one of ...

Each case runs as a user meets it, from its own directory: ``ude check config.yaml`` and
``ude fit config.yaml --out RUN --overwrite`` where RUN is an existing complete run. Both must print
exactly the expected lines with the expected exit code, no traceback, write nothing beside the
case's files, and leave RUN byte for byte as it was: a bad config or bad data is found before
anything is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ude_cli.cli import app

CORPUS = Path(__file__).parent / "corpus"
runner = CliRunner()


@dataclass
class Case:
    name: str
    exit: int
    commands: tuple[str, ...]
    stderr: list[str]
    pad: tuple[str, int] | None


def read_case(directory: Path) -> Case:
    exit_code, commands, pad, stderr = None, ("check", "fit"), None, None
    for line in (directory / "expected.txt").read_text(encoding="utf-8").splitlines():
        if stderr is not None:
            stderr.append(line)
        elif line.startswith("#") or not line.strip():
            continue
        elif line.startswith("exit:"):
            exit_code = int(line.split(":", 1)[1])
        elif line.startswith("commands:"):
            commands = tuple(line.split(":", 1)[1].split())
        elif line.startswith("pad:"):
            name, size = line.split(":", 1)[1].split()
            pad = (name, int(size))
        elif line.strip() == "stderr:":
            stderr = []
        else:
            raise ValueError(f"{directory.name}/expected.txt: cannot read {line!r}")
    assert exit_code is not None and stderr, f"{directory.name}/expected.txt needs 'exit:' and 'stderr:'"
    return Case(directory.name, exit_code, commands, stderr, pad)


CASES = sorted(p for p in CORPUS.iterdir() if (p / "expected.txt").is_file())


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    """A complete run directory of a tiny fit, made once for the module."""
    root = tmp_path_factory.mktemp("complete")
    t = np.linspace(0, 2, 6)
    (root / "d.csv").write_text("t,conc\n" + "".join(f"{a:g},{2 * np.exp(-0.7 * a):.6f}\n" for a in t))
    (root / "config.yaml").write_text(
        "data: {file: d.csv, columns: {y: conc}}\n"
        "model: {states: [y], equations: {y: '-k*y'}, parameters: {k: {init: 0.3, positive: true}}}\n"
        "solver: {method: rk4, step: 0.1}\n"
        "training: {warm_start: none, stages: [{optimizer: adam, lr: 0.05, iterations: 3}]}\n"
        "output: {plots: false}\n")
    result = runner.invoke(app, ["fit", str(root / "config.yaml"), "--out", str(root / "run"), "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    return root / "run"


def test_the_corpus_is_large_and_covers_both_kinds_of_file():
    assert len(CASES) >= 30
    codes = {read_case(c).exit for c in CASES}
    assert codes == {3, 4}


@pytest.mark.parametrize("directory", CASES, ids=[c.name for c in CASES])
def test_corpus_case(directory, tmp_path, monkeypatch, complete_run):
    case = read_case(directory)
    work = tmp_path / "case"
    shutil.copytree(directory, work)
    (work / "expected.txt").unlink()
    if case.pad is not None:
        name, size = case.pad
        path = work / name
        text = path.read_bytes()
        path.write_bytes(text + b"#" * (size - len(text) - 1) + b"\n")
    existing = tmp_path / "existing_run"
    shutil.copytree(complete_run, existing)
    before_run, before_case = snapshot(existing), snapshot(work)
    monkeypatch.chdir(work)

    for command in case.commands:
        if command == "check":
            args = ["check", "config.yaml"]
        else:
            args = ["fit", "config.yaml", "--out", str(existing), "--overwrite", "--quiet"]
        result = runner.invoke(app, args)
        output = result.output + result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in output
        assert result.stderr.splitlines() == case.stderr, f"ude {command}"
        assert result.exit_code == case.exit, f"ude {command}: {output}"
        assert snapshot(existing) == before_run, f"ude {command} changed the existing run"
        assert snapshot(work) == before_case, f"ude {command} wrote beside the config"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "existing_run"], "leftovers"
