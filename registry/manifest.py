"""The adapter manifest (`adapt.json`) and the model card pushed with each version to the Hub.

The manifest holds every field of `adapt show --json` except two that describe the registry
around a version rather than the version itself: `hub` (where it was pushed, which would make
the manifest refer to its own commit) and `children` (which grows whenever someone derives from
the version, and would make an unchanged version look changed). Pull rebuilds both locally.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry.registry import Registry

MANIFEST_VERSION = 1
MANIFEST_NAME = "adapt.json"
CARD_NAME = "README.md"

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}
_TIME = {"type": ["string", "null"], "description": "ISO 8601 time"}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://adapt.dev/schemas/adapter-manifest.schema.json",
    "title": "adapt adapter manifest (adapt.json)",
    "description": "One adapter version as pushed to the Hub: metadata, files, lineage, scores "
    "and validation summaries.",
    "type": "object",
    "required": [
        "manifest_version", "name", "version", "digest", "method", "peft_type", "files",
        "parents", "scores", "validation_runs", "tags",
    ],
    "properties": {
        "manifest_version": {"const": MANIFEST_VERSION},
        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,127}$"},
        "version": {"type": "integer", "minimum": 1},
        "ref": {"type": "string"},
        "digest": {"type": "string", "pattern": r"^sha256:[0-9a-f]{64}$"},
        "method": {"type": "string"},
        "peft_type": {"type": "string"},
        "rank": {"type": ["integer", "null"]},
        "alpha": _NULLABLE_NUM,
        "use_rslora": {"type": "boolean"},
        "rank_pattern": {"type": "object", "additionalProperties": {"type": "integer"}},
        "alpha_pattern": {"type": "object", "additionalProperties": {"type": "number"}},
        "target_modules": {"type": ["array", "string", "null"], "items": {"type": "string"}},
        "modules_to_save": {"type": "array", "items": {"type": "string"}},
        "task_type": _NULLABLE_STR,
        "base_model": _NULLABLE_STR,
        "base_fingerprint": _NULLABLE_STR,
        "params": {"type": "integer", "minimum": 0},
        "size_bytes": {"type": "integer", "minimum": 0},
        "dtype": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "files": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["path", "sha256", "size"],
                "properties": {
                    "path": {"type": "string"},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {"type": "integer", "minimum": 0},
                },
                "additionalProperties": False,
            },
        },
        "parents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ref", "role"],
                "properties": {
                    "ref": {"type": "string"},
                    "weight": _NULLABLE_NUM,
                    "role": {"type": "string"},
                    "params": {"type": ["object", "null"]},
                    "digest": {"type": ["string", "null"],
                               "description": "the parent's content digest"},
                    "remote": {"type": "string",
                               "description": "hf://ORG/NAME@vN where the parent was pushed"},
                },
            },
        },
        "scores": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["metric", "value"],
                "properties": {
                    "metric": {"type": "string"},
                    "dataset": _NULLABLE_STR,
                    "value": {"type": "number"},
                    "base_fingerprint": _NULLABLE_STR,
                    "run_id": {"type": ["integer", "null"],
                               "description": "id of the validation run in this manifest"},
                    "higher_is_better": {"type": ["boolean", "null"]},
                    "quantization": _NULLABLE_STR,
                    "created_at": _TIME,
                },
            },
        },
        "validation_runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "status"],
                "properties": {
                    "id": {"type": "integer"},
                    "status": {"type": "string"},
                    "device": {"type": "string"},
                    "base_fingerprint": _NULLABLE_STR,
                    "started_at": _TIME,
                    "finished_at": _TIME,
                    "figures": {"type": ["object", "null"]},
                    "gates": {"type": ["array", "null"]},
                },
            },
        },
        "recipe": {"type": ["object", "null"]},
        "source": _NULLABLE_STR,
        "note": _NULLABLE_STR,
        "created_at": _TIME,
    },
}

# show() fields that are local to one registry and never go into the manifest
LOCAL_FIELDS = ("hub", "children")


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite hands back naive UTC
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    return value


def parse_time(value: str | None) -> datetime | None:
    """Inverse of the manifest's time format (ISO 8601, UTC)."""
    return datetime.fromisoformat(value) if value else None


MANIFEST_MAX_BYTES = 16 * 1024 * 1024
MANIFEST_MAX_DEPTH = 32  # figures and recipe params nest; 32 is far above what adapt writes
_INT64 = 2**63 - 1
# fields the schema types as integers, which a database column stores as a 64-bit integer
_INT_FIELDS = ("version", "rank", "params", "size_bytes")


def parse_manifest(data: bytes | str) -> dict[str, Any]:
    """A manifest from the Hub, parsed with bounds and checked beyond its schema.

    Raises ValueError (one short line) for a manifest that is too large or deep, has a
    non-finite or out-of-range number, a float where an integer belongs (`1e30` passes JSON
    Schema's "integer"), or a time that is not ISO 8601.
    """
    from registry.errors import UsageError
    from registry.safeparse import cap, load_json
    from registry.schemas import validate

    manifest = load_json(data, max_bytes=MANIFEST_MAX_BYTES, max_depth=MANIFEST_MAX_DEPTH)
    try:
        validate(manifest, "adapter-manifest")
    except UsageError as error:
        raise ValueError(cap(str(error))) from None
    for where, value in _integer_fields(manifest):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or abs(value) > _INT64
        ):
            raise ValueError(f"{where} = {cap(repr(value), 40)} is not a 64-bit integer")
    for where, value in _time_fields(manifest):
        if value is None:
            continue
        try:
            parse_time(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} = {cap(repr(value), 60)} is not an ISO 8601 time") \
                from None
    return manifest


def _integer_fields(m: dict[str, Any]) -> list[tuple[str, Any]]:
    out = [(k, m.get(k)) for k in _INT_FIELDS]
    out += [(f"rank_pattern/{k}", v) for k, v in (m.get("rank_pattern") or {}).items()]
    out += [(f"files/{i}/size", f.get("size")) for i, f in enumerate(m["files"])]
    out += [(f"scores/{i}/run_id", s.get("run_id")) for i, s in enumerate(m["scores"])]
    out += [(f"validation_runs/{i}/id", r.get("id"))
            for i, r in enumerate(m["validation_runs"])]
    return out


def _time_fields(m: dict[str, Any]) -> list[tuple[str, Any]]:
    out = [("created_at", m.get("created_at"))]
    out += [(f"scores/{i}/created_at", s.get("created_at")) for i, s in enumerate(m["scores"])]
    for i, r in enumerate(m["validation_runs"]):
        out += [(f"validation_runs/{i}/{k}", r.get(k)) for k in ("started_at", "finished_at")]
    return out


def build_manifest(reg: Registry, ref: str, *, publish_tags: bool = False) -> dict[str, Any]:
    """The `adapt.json` object for one version (valid against MANIFEST_SCHEMA).

    Tags are local unless `publish_tags` (`adapt push --tags`).
    """
    shown = reg.show(ref)
    manifest: dict[str, Any] = {"manifest_version": MANIFEST_VERSION}
    for key, value in shown.items():
        if key in LOCAL_FIELDS:
            continue
        manifest[key] = _iso(value)
    # never publish a local path: the base by its Hub id, a source from disk by its name
    manifest["base_model"] = base_hub_id(reg, shown.get("base_fingerprint"),
                                         shown.get("base_model"))
    manifest["source"] = public_source(shown.get("source"))
    manifest["scores"] = [{k: _iso(v) for k, v in s.items()} for s in shown["scores"]]
    if not publish_tags:
        manifest["tags"] = []
    # a parent's state (local/deleted/remote) is this registry's view, not the version's; a
    # parent that was pushed is named by its Hub tag, so a pull elsewhere can resolve it
    manifest["parents"] = [
        {**{k: v for k, v in p.items() if k != "state"}, **_remote_of(reg, p)}
        for p in shown["parents"]
    ]
    rows = reg.run_details([r["id"] for r in shown["validation_runs"]])
    manifest["validation_runs"] = [
        {
            **{k: _iso(v) for k, v in run.items()},
            "figures": rows[run["id"]]["figures"],
            "gates": rows[run["id"]]["gates"],
        }
        for run in shown["validation_runs"]
    ]
    return manifest


def _remote_of(reg: Registry, parent: dict[str, Any]) -> dict[str, str]:
    """{"remote": "hf://ORG/NAME@vN"} for a local parent that was pushed, else {}."""
    if parent.get("state") != "local":
        return {"remote": parent["ref"]} if str(parent["ref"]).startswith("hf://") else {}
    pushed = [h for h in reg.show(parent["ref"])["hub"] if h["direction"] == "push" and h["tag"]]
    return {"remote": f"hf://{pushed[-1]['repo']}@{pushed[-1]['tag']}"} if pushed else {}


def render_manifest(manifest: dict[str, Any]) -> bytes:
    """Canonical bytes, so the same version always gives the same file (and no new commit)."""
    return (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


# ORG/NAME only: a bare name is more likely a local directory than a Hub model
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def card_scores(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Scores for the card's model-index: quality figures only (no timings or memory), recorded
    by hand or by the latest passing validation run; a failed run's figures never show."""
    from registry.scoring import is_quality_metric

    passing = [r["id"] for r in manifest.get("validation_runs", []) if r["status"] == "passed"]
    latest_pass = max(passing) if passing else None
    return [
        s for s in manifest.get("scores", [])
        if is_quality_metric(str(s["metric"]))
        and (s.get("run_id") is None or s.get("run_id") == latest_pass)
    ]


def is_hub_id(value: object) -> bool:
    """Whether `value` reads as a Hub model id (ORG/NAME) rather than a local directory."""
    from pathlib import Path

    return (isinstance(value, str) and _REPO_ID.match(value) is not None
            and not Path(value).expanduser().exists())


def base_hub_id(reg: Registry, base_fingerprint: str | None,
                adapter_base: str | None = None) -> str | None:
    """The Hub id of a version's base: the registered base's `details["hub_id"]`, else its
    config.json `_name_or_path` when that is an ORG/NAME id, else the adapter's own
    `base_model_name_or_path` when that is one. None when only a local path is known."""
    from pathlib import Path

    base = reg.find_base(base_fingerprint) if base_fingerprint else None
    if base is not None:
        hub_id = (base.details or {}).get("hub_id")
        if is_hub_id(hub_id):
            return str(hub_id)
        config = Path(base.path) / "config.json" if base.path else None
        if config is not None and config.is_file():
            try:
                named = json.loads(config.read_text()).get("_name_or_path")
            except (OSError, ValueError, AttributeError):
                named = None
            if is_hub_id(named):
                return str(named)
    return adapter_base if is_hub_id(adapter_base) else None


def public_source(source: str | None) -> str | None:
    """A version's source as it may be published: URLs and refs as they are, a local path as
    its last component only (the directory's name tells where it came from, the path leaks)."""
    if not source or "://" in source:
        return source
    if source.startswith(("/", "~", ".", "\\")) or re.match(r"^[A-Za-z]:[\\/]", source):
        return re.split(r"[\\/]", source.rstrip("/\\"))[-1] or None
    return source


def build_model_card(manifest: dict[str, Any], repo_id: str, *,
                     license: str | None = None) -> str:
    """README.md with YAML front matter (base_model, library_name, tags, model-index)."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import EvalResult

    base = manifest.get("base_model")
    # The Hub checks base_model against its own model ids: a local path would be rejected.
    hub_base = base if isinstance(base, str) and _REPO_ID.match(base) else None
    method = str(manifest["method"]).lower()
    tags = ["peft", "adapt", method]
    if hub_base:
        tags.append(f"base_model:adapter:{hub_base}")
    task = str(manifest.get("task_type") or "CAUSAL_LM")
    task_type = "text-generation" if task == "CAUSAL_LM" else task.lower().replace("_", "-")
    results = [
        EvalResult(
            task_type=task_type,
            dataset_type=str(s.get("dataset") or "custom"),
            dataset_name=str(s.get("dataset") or "custom"),
            metric_type=str(s["metric"]),
            metric_value=s["value"],
        )
        for s in card_scores(manifest)
    ]
    data = ModelCardData(
        license=license,
        base_model=hub_base,
        base_model_relation="adapter" if hub_base else None,
        library_name="peft",
        tags=tags,
        model_name=repo_id.split("/")[-1] if results else None,
        eval_results=results or None,
        pipeline_tag=task_type if task == "CAUSAL_LM" else None,
    )
    rows = [
        ("adapter", f"{manifest['name']}@{manifest['version']}"),
        ("method", manifest["method"]),
        ("rank", manifest.get("rank")),
        ("alpha", manifest.get("alpha")),
        ("rsLoRA", manifest.get("use_rslora")),
        ("target modules", manifest.get("target_modules")),
        ("base model", base),
        ("base fingerprint", manifest.get("base_fingerprint")),
        ("parameters", manifest.get("params")),
        ("dtype", manifest.get("dtype")),
        ("digest", manifest["digest"]),
        ("parents", ", ".join(p["ref"] for p in manifest.get("parents", [])) or None),
    ]
    table = "\n".join(
        f"| {k} | {_cell(v)} |" for k, v in rows if v not in (None, "", [])
    )
    scores = "\n".join(
        f"| {s['metric']} | {s.get('dataset') or '-'} | {s['value']:.6g} |"
        for s in manifest.get("scores", [])
    )
    load_base = base or "BASE_MODEL"
    body = f"""
# {manifest['name']} (v{manifest['version']})

A {manifest['method']} adapter published with `adapt push`. `adapt.json` in this repo holds the
full metadata: files with sha256, lineage, scores and validation summaries.

| field | value |
|---|---|
{table}
"""
    if scores:
        body += f"""
## Scores

| metric | dataset | value |
|---|---|---|
{scores}
"""
    body += f"""
## Load it with PEFT

```python
from transformers import AutoModelForCausalLM
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("{load_base}")
model = PeftModel.from_pretrained(base, "{repo_id}", revision="v{manifest['version']}")
```

Or register it in adapt: `adapt pull {repo_id}@v{manifest['version']}`.
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|")
