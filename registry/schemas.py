"""JSON Schemas for what crosses a boundary. The code holds them; `schemas/` is generated.

Regenerate the files with `python -m registry.schemas --write`; a test fails when they drift.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

# schema file stem -> "module:ATTRIBUTE" holding the schema dict
SCHEMA_SOURCES: dict[str, str] = {
    "adapter-manifest": "registry.manifest:MANIFEST_SCHEMA",
    "compose-recipe": "registry.ops.compose:RECIPE_SCHEMA",
    "validation-spec": "registry.validation:SPEC_SCHEMA",
    "validation-report": "registry.validation:REPORT_SCHEMA",
    "target-rules": "registry.targets:RULES_SCHEMA",
}
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def load_schema(stem: str) -> dict[str, Any]:
    module_name, _, attr = SCHEMA_SOURCES[stem].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def available() -> dict[str, dict[str, Any]]:
    """The schemas whose defining module exists."""
    out = {}
    for stem in SCHEMA_SOURCES:
        try:
            out[stem] = load_schema(stem)
        except (ImportError, AttributeError):
            continue
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def validate(instance: Any, stem: str) -> None:
    """Raise registry.errors.UsageError naming the first violation."""
    import jsonschema

    from registry.errors import UsageError
    from registry.safeparse import cap

    try:
        jsonschema.validate(instance, load_schema(stem))
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        # capped: the message quotes the offending instance, which may be huge
        raise UsageError(f"invalid {stem}: at {cap(where, 80)}: {cap(error.message)}") from None


def main(argv: list[str]) -> int:
    write = "--write" in argv
    drift = []
    for stem, schema in available().items():
        path = SCHEMA_DIR / f"{stem}.schema.json"
        text = render(schema)
        if write:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            drift.append(path.name)
    if drift:
        print("out of date: " + ", ".join(drift) + " (run python -m registry.schemas --write)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
