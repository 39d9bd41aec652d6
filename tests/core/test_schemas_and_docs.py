"""Code and its published artefacts must not drift: schemas, README commands, CI."""

from __future__ import annotations

import re
from pathlib import Path

from registry import schemas

ROOT = Path(__file__).resolve().parents[2]


def test_every_schema_is_defined_in_code_and_schemas_dir_matches() -> None:
    found = schemas.available()
    assert set(found) == set(schemas.SCHEMA_SOURCES), "a schema's defining module is missing"
    for stem, schema in found.items():
        path = ROOT / "schemas" / f"{stem}.schema.json"
        assert path.is_file(), f"{path.name} missing: run python -m registry.schemas --write"
        assert path.read_text() == schemas.render(schema), (
            f"{path.name} is out of date: run python -m registry.schemas --write")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_two_commands_and_ci_runs_the_second() -> None:
    first, second = _readme_commands()
    assert "adapt demo" in first and "\n" not in first
    assert "pytest" in second and "\n" not in second
    assert second in (ROOT / ".ci" / "run").read_text(), ".ci/run must call the README's tests"


def test_exit_codes_are_documented_in_the_readme() -> None:
    from registry.cli.exit_codes import ExitCode

    text = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"\|\s*{int(code)}\s*\|\s*`?{code.name}`?", text), code.name
