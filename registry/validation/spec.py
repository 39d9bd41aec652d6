"""The validation spec (YAML a user writes) and the report (JSON a run writes): their schemas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import NotFound, UsageError
from registry.validation.figures import CHECKS, FIGURES

REPORT_FORMAT = "adapt.validation-report/1"

_PATH = {"type": "string", "minLength": 1}
_NUMBER_OR_NULL = {"type": ["number", "null"]}

SPEC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://adapt.dev/schemas/validation-spec.schema.json",
    "title": "adapt validation spec",
    "description": "Options and gates for `adapt validate --spec FILE` (YAML or JSON). Relative "
                   "paths are resolved against the spec file's directory. Command-line options "
                   "override the spec; --gate adds to its gates.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "gates": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["expr"],
                        "properties": {
                            "expr": {"type": "string", "minLength": 1},
                            "name": {"type": "string"},
                        },
                    },
                ]
            },
        },
        "data": _PATH,
        "merged": _PATH,
        "quantized": _PATH,
        "device": {"enum": ["auto", "cuda", "cpu"]},
        "dtype": {"enum": ["float32", "bfloat16", "float16", "fp32", "bf16", "fp16"]},
        "max_samples": {"type": "integer", "minimum": 1},
        "max_length": {"type": "integer", "minimum": 2},
        "outlier_factor": {"type": "number", "exclusiveMinimum": 1},
        "performance": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "batch": {"type": "integer", "minimum": 1},
                "length": {"type": "integer", "minimum": 1},
                "repeats": {"type": "integer", "minimum": 1},
            },
        },
    },
}

_CHECK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "status", "summary", "details", "seconds"],
    "properties": {
        "name": {"enum": list(CHECKS)},
        "status": {"enum": ["passed", "warn", "failed", "error", "skipped"]},
        "summary": {"type": "string"},
        "details": {"type": "object"},
        "seconds": {"type": "number", "minimum": 0},
    },
}
_GATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr", "status", "values"],
    "properties": {
        "expr": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "status": {"enum": ["passed", "failed", "error"]},
        "values": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
        "message": {"type": ["string", "null"]},
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://adapt.dev/schemas/validation-report.schema.json",
    "title": "adapt validation report",
    "description": "What `adapt validate --json` prints and what a ValidationRun stores.",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "run_id", "ref", "digest", "status", "device", "base", "data",
                 "checks", "figures", "gates", "started_at", "finished_at", "seconds",
                 "adapt_version"],
    "properties": {
        "format": {"const": REPORT_FORMAT},
        "run_id": {"type": ["integer", "null"]},
        "ref": {"type": "string"},
        "digest": {"type": "string"},
        "status": {"enum": ["passed", "failed", "error"]},
        "error": {"type": ["string", "null"]},
        "device": {
            "type": "object",
            "required": ["type", "name", "dtype"],
            "properties": {
                "type": {"enum": ["cpu", "cuda"]},
                "name": {"type": "string"},
                "dtype": {"type": "string"},
            },
        },
        "base": {
            "type": "object",
            "required": ["path", "fingerprint", "structure", "recorded_fingerprint"],
            "properties": {
                "path": {"type": "string"},
                "fingerprint": {"type": ["string", "null"]},
                "structure": {"type": ["string", "null"]},
                "recorded_fingerprint": {"type": ["string", "null"]},
            },
        },
        "merged": {"type": ["string", "null"]},
        "quantized": {"type": ["string", "null"]},
        "data": {
            "type": "object",
            "required": ["source", "samples", "tokenizer"],
            "properties": {
                "source": {"type": "string"},
                "samples": {"type": "integer", "minimum": 0},
                "tokenizer": {"type": "string"},
                "max_length": {"type": "integer"},
            },
        },
        "checks": {"type": "array", "items": _CHECK},
        "figures": {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: _NUMBER_OR_NULL for name in FIGURES},
        },
        "gates": {"type": "array", "items": _GATE},
        "started_at": {"type": "string"},
        "finished_at": {"type": "string"},
        "seconds": {"type": "number", "minimum": 0},
        "adapt_version": {"type": "string"},
    },
}


@dataclass(frozen=True)
class GateSpec:
    expr: str
    name: str | None = None


@dataclass(frozen=True)
class PerfSettings:
    """The fixed forward pass that performance is measured on."""

    batch: int = 4
    length: int = 128
    repeats: int = 3


@dataclass
class ValidationSpec:
    """A spec file's content, with relative paths resolved."""

    gates: list[GateSpec] = field(default_factory=list)
    data: Path | None = None
    merged: Path | None = None
    quantized: Path | None = None
    device: str | None = None
    dtype: str | None = None
    max_samples: int | None = None
    max_length: int | None = None
    outlier_factor: float | None = None
    performance: PerfSettings | None = None


def load_spec(spec: str | Path | Mapping[str, Any]) -> ValidationSpec:
    """Read a YAML/JSON spec file (or take a dict), check it against SPEC_SCHEMA, resolve paths."""
    from registry.safeparse import ParseLimitError, load_yaml, read_limited
    from registry.schemas import validate

    if isinstance(spec, Mapping):
        raw: Any = dict(spec)
        root = Path.cwd()
    else:
        path = Path(spec)
        if not path.is_file():
            raise NotFound("spec file", str(path))
        try:  # bounded: no aliases, no deep nesting, no NaN/Inf, at most 1 MB
            raw = load_yaml(read_limited(path, 1024 * 1024))
        except ParseLimitError as error:
            raise UsageError(f"spec {path} is not usable: {error}") from None
        except OSError as error:
            raise UsageError(f"cannot read spec {path}: {error.strerror or error}") from None
        root = path.resolve().parent
    if raw is None:
        raw = {}
    validate(raw, "validation-spec")

    def resolve(key: str) -> Path | None:
        value = raw.get(key)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else root / p

    gates = [GateSpec(g) if isinstance(g, str) else GateSpec(g["expr"], g.get("name"))
             for g in raw.get("gates", [])]
    perf = raw.get("performance")
    return ValidationSpec(
        gates=gates,
        data=resolve("data"),
        merged=resolve("merged"),
        quantized=resolve("quantized"),
        device=raw.get("device"),
        dtype=raw.get("dtype"),
        max_samples=raw.get("max_samples"),
        max_length=raw.get("max_length"),
        outlier_factor=raw.get("outlier_factor"),
        performance=PerfSettings(**perf) if perf is not None else None,
    )
