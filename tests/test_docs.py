"""Documentation that must not drift from the code."""

from __future__ import annotations

from ude_cli.schema_doc import render

from .conftest import REPO


def test_config_reference_is_current():
    assert (REPO / "docs/config.md").read_text() == render(), "regenerate: python -m ude_cli.schema_doc > docs/config.md"


def test_every_schema_field_is_described():
    from ude_cli.schema_doc import SECTIONS

    missing = [f"{title}.{name}" for title, model in SECTIONS for name, field in model.model_fields.items()
               if not field.description]
    assert missing == []


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (REPO / "README.md").read_text().splitlines()[:8] if line.startswith("python3 -m venv")]
    assert len(lines) == 2
    assert lines[0].endswith("ude fit configs/lotka_volterra.yaml --overwrite")
    assert lines[1].endswith("python -m pytest")
    assert lines[1] in (REPO / ".ci/run").read_text()
