"""Serving-target checks: a server's adapter rules, kept as data, applied to one adapter.

Each target and version has a table in `registry/data/targets/<target>-<version>.json` (schema:
`schemas/target-rules.schema.json`). A rule names a check below, its parameters, the verdict when
the check is violated (`fail` or `warn`), the fix, and the source that states the rule. Tables can
be updated without code changes; new kinds of check need a function in `CHECKS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import NotFound, UsageError
from registry.peft_dir import KNOWN_PEFT_TYPES, AdapterDir

TARGETS = ("vllm", "lorax", "tgi", "llama.cpp", "ollama", "peft")
STATUSES = ("pass", "warn", "fail")
TABLES_DIR = Path(__file__).resolve().parent / "data" / "targets"

RULES_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://adapt.dev/schemas/target-rules.schema.json",
    "title": "adapt serving-target rules table",
    "type": "object",
    "required": ["target", "version", "rules"],
    "additionalProperties": False,
    "properties": {
        "target": {"enum": list(TARGETS)},
        "version": {"type": "string", "description": "server version the table describes"},
        "default": {"type": "boolean", "description": "the table used when no version is given"},
        "notes": {"type": "string"},
        "rules": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "check", "severity", "message", "fix", "source"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z0-9_.-]+$"},
                    "check": {"type": "string"},
                    "params": {"type": "object"},
                    "severity": {"enum": ["fail", "warn"]},
                    "message": {"type": "string", "description": "what is wrong when violated"},
                    "fix": {"type": "string"},
                    "source": {"type": "string", "minLength": 8},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class TargetRule:
    id: str
    check: str
    severity: str
    message: str
    fix: str
    source: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetTable:
    target: str
    version: str
    rules: tuple[TargetRule, ...]
    default: bool = False
    notes: str | None = None


@dataclass(frozen=True)
class AdapterFacts:
    """What the rules look at: the adapter and, when given, its base model."""

    adapter: AdapterDir
    base_config: Mapping[str, Any] | None = None
    base_tensors: Mapping[str, tuple[int, ...]] | None = None  # base tensor name -> shape
    base_fingerprint: str | None = None  # of the base given to the check
    registered_base_fingerprint: str | None = None  # the one the version was added with


@dataclass(frozen=True)
class RuleResult:
    rule: str
    status: str  # pass | warn | fail
    detail: str
    fix: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TargetReport:
    """The verdict of one target's rules on one adapter version."""

    ref: str
    target: str
    target_version: str
    base: str | None
    results: tuple[RuleResult, ...]

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def warned(self) -> list[RuleResult]:
        return [r for r in self.results if r.status == "warn"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "target": self.target,
            "target_version": self.target_version,
            "base": self.base,
            "ok": self.ok,
            "results": [r.to_dict() for r in self.results],
        }


# -- tables -----------------------------------------------------------------------------------
def list_tables() -> list[TargetTable]:
    """Every rules table shipped in registry/data/targets."""
    out = []
    for entry in sorted(TABLES_DIR.glob("*.json")):
        out.append(parse_table(json.loads(entry.read_text(encoding="utf-8")), entry.name))
    return out


def parse_table(data: Mapping[str, Any], origin: str = "<table>") -> TargetTable:
    """Validate a table against RULES_SCHEMA and its checks against CHECKS."""
    import jsonschema

    try:
        jsonschema.validate(data, RULES_SCHEMA)
    except jsonschema.ValidationError as error:
        raise UsageError(f"rules table {origin} is invalid: {error.message}") from None
    rules = []
    for raw in data["rules"]:
        if raw["check"] not in CHECKS:
            raise UsageError(f"rules table {origin}: rule {raw['id']} names unknown check "
                             f"{raw['check']!r}", f"known checks: {', '.join(sorted(CHECKS))}")
        rules.append(TargetRule(
            id=raw["id"], check=raw["check"], severity=raw["severity"], message=raw["message"],
            fix=raw["fix"], source=raw["source"], params=dict(raw.get("params") or {}),
        ))
    return TargetTable(data["target"], data["version"], tuple(rules),
                       bool(data.get("default", False)), data.get("notes"))


def load_table(target: str, version: str | None = None) -> TargetTable:
    """The table for `target` at `version` (or the one marked default)."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}", f"use one of {', '.join(TARGETS)}")
    tables = [t for t in list_tables() if t.target == target]
    if version is not None:
        for t in tables:
            if t.version == version:
                return t
        known = ", ".join(t.version for t in tables) or "none"
        raise NotFound(f"{target} rules version", version, f"known versions: {known}")
    defaults = [t for t in tables if t.default] or tables
    if not defaults:
        raise NotFound("rules table for target", target)
    return defaults[-1]


def apply_rules(table: TargetTable, facts: AdapterFacts) -> tuple[RuleResult, ...]:
    """Each rule of `table` applied to `facts`, in table order."""
    out = []
    for rule in table.rules:
        violation = CHECKS[rule.check](facts, rule.params)
        if violation is None:
            out.append(RuleResult(rule.id, "pass", "ok", None, rule.source))
        elif isinstance(violation, Unchecked):
            out.append(RuleResult(rule.id, "warn", f"not checked: {violation.why}",
                                  violation.fix, rule.source))
        else:
            status = violation.severity or rule.severity
            detail = f"{rule.message}: {violation.detail}" if violation.detail else rule.message
            out.append(RuleResult(rule.id, status, detail, violation.fix or rule.fix,
                                  rule.source))
    return tuple(out)


# -- checks -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    detail: str = ""
    severity: str | None = None  # overrides the rule's severity (e.g. a rank that needs a flag)
    fix: str | None = None


@dataclass(frozen=True)
class Unchecked:
    """The rule needs facts that were not given (usually the base model)."""

    why: str
    fix: str | None = None


Outcome = Violation | Unchecked | None
CheckFn = Callable[[AdapterFacts, Mapping[str, Any]], Outcome]
CHECKS: dict[str, CheckFn] = {}


def check(name: str) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        CHECKS[name] = fn
        return fn

    return register


EMBEDDING_LEAVES = ("embed_tokens", "lm_head", "wte", "embed_out", "word_embeddings")
_NEED_BASE = Unchecked("needs the base model", "pass --base NAME")


def _leaf(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _model_type(facts: AdapterFacts) -> str | None:
    if facts.base_config is None:
        return None
    mt = facts.base_config.get("model_type")
    return str(mt) if mt else None


@check("method_in")
def _method_in(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    method = facts.adapter.method
    allowed = [str(m).upper() for m in params.get("allowed", [])]
    return None if method in allowed else Violation(f"method is {method}")


@check("peft_type_known")
def _peft_type_known(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    t = facts.adapter.peft_type
    return None if t in KNOWN_PEFT_TYPES else Violation(f"peft_type {t!r}")


@check("no_dora")
def _no_dora(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    return Violation("use_dora is true") if facts.adapter.method == "DORA" else None


@check("no_modules_to_save")
def _no_modules_to_save(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    saved = list(facts.adapter.modules_to_save) or sorted(facts.adapter.extra_tensors)
    return Violation(", ".join(saved[:4])) if saved else None


@check("no_embedding_lora")
def _no_embedding_lora(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    hits = [m for m, mod in facts.adapter.modules.items()
            if _leaf(m) in EMBEDDING_LEAVES or "lora_embedding_A" in mod.parts]
    return Violation(", ".join(hits[:3])) if hits else None


@check("no_lora_bias")
def _no_lora_bias(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    bias = str(facts.adapter.config.get("bias", "none"))
    lora_bias = any(p.endswith(".bias") for mod in facts.adapter.modules.values()
                    for p in mod.parts)
    if bias != "none" or lora_bias:
        return Violation(f"bias={bias!r}" + (", lora_B has a bias" if lora_bias else ""))
    return None


@check("rank_limit")
def _rank_limit(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    """params: allowed_max_ranks (the server's accepted --max-lora-rank values, or absent for
    any), default_max_rank (the server's default), flag (the option that raises it)."""
    a = facts.adapter
    ranks = [a.rank or 0, *a.rank_pattern.values()]
    ranks += [int((m.shape("lora_A") or (0,))[0]) for m in a.modules.values()
              if "lora_A" in m.parts]
    r = max(ranks)
    allowed = sorted(int(x) for x in params.get("allowed_max_ranks") or [])
    default = int(params.get("default_max_rank", 0)) or None
    flag = str(params.get("flag", "--max-lora-rank"))
    if allowed and r > allowed[-1]:
        return Violation(f"rank {r} is above the largest {flag} ({allowed[-1]})")
    if allowed and r not in allowed:
        need = next(x for x in allowed if x >= r)
        return Violation(
            f"rank {r} is not one of {allowed}; it is padded to {flag} {need}",
            severity="warn", fix=f"serve with {flag} {need}, or re-rank to {need} "
            "with `adapt compose --method svd`",
        )
    if default is not None and r > default:
        need = next((x for x in allowed if x >= r), r)
        return Violation(f"rank {r} is above the default {flag} {default}", severity="warn",
                         fix=f"serve with {flag} {need}")
    return None


@check("target_modules_known")
def _target_modules_known(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    """params: modules {model_type: [leaf names]}; model types not listed are unchecked."""
    table = params.get("modules") or {}
    mt = _model_type(facts)
    if mt is None:
        return _NEED_BASE
    if mt not in table:
        return Unchecked(f"no module list for model type {mt!r} in this table",
                         "check the server's supported-models page")
    known = set(table[mt])
    unknown = sorted({_leaf(m) for m in facts.adapter.modules} - known)
    return Violation(f"{', '.join(unknown)} (known for {mt}: {', '.join(sorted(known))})") \
        if unknown else None


@check("prefix_matches_base")
def _prefix_matches_base(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    if facts.base_tensors is None:
        return _NEED_BASE
    missing = [m for m in facts.adapter.modules if f"{m}.weight" not in facts.base_tensors]
    if not missing:
        return None
    example = missing[0]
    leaf_path = ".".join(example.split(".")[-4:])
    near = sorted(t for t in facts.base_tensors if t.endswith(f"{leaf_path}.weight"))
    hint = f"; the base has {near[0][: -len('.weight')]}" if near else ""
    return Violation(f"{len(missing)} module(s) such as {example} are not in the base{hint}")


@check("shapes_match_base")
def _shapes_match_base(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    if facts.base_tensors is None:
        return _NEED_BASE
    for name, mod in facts.adapter.modules.items():
        base_shape = facts.base_tensors.get(f"{name}.weight")
        a, b = mod.shape("lora_A"), mod.shape("lora_B")
        if base_shape is None or a is None or b is None or len(a) != 2 or len(b) != 2:
            continue  # missing modules are the prefix rule's; non-LoRA factors not compared
        # Conv1D layers (fan_in_fan_out) store the weight as in x out
        expected = (a[1], b[0]) if facts.adapter.fan_in_fan_out else (b[0], a[1])
        if tuple(base_shape[:2]) != expected:
            return Violation(f"{name} makes a {expected[0]}x{expected[1]} delta but the base "
                             f"weight is {'x'.join(map(str, base_shape))}")
    return None


@check("same_base_as_registered")
def _same_base_as_registered(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    if facts.registered_base_fingerprint is None:
        return Unchecked("the version was added without --base", "re-add it with --base")
    if facts.base_fingerprint is None:
        return _NEED_BASE
    if facts.base_fingerprint != facts.registered_base_fingerprint:
        return Violation(f"checked against {facts.base_fingerprint[:19]}, registered on "
                         f"{facts.registered_base_fingerprint[:19]}")
    return None


@check("scaling_supported")
def _scaling_supported(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    """params: rslora / alpha_pattern / rank_pattern: true when the server honours it."""
    a = facts.adapter
    used = []
    if a.use_rslora and not params.get("rslora", False):
        used.append("use_rslora")
    if a.alpha_pattern and not params.get("alpha_pattern", False):
        used.append("alpha_pattern")
    if a.rank_pattern and not params.get("rank_pattern", False):
        used.append("rank_pattern")
    if not used:
        return None
    # A wrong scale is only a fail when it differs from what the server computes.
    r_global = a.rank or 8
    alpha_global = a.alpha if a.alpha is not None else float(r_global)

    def server_scale(module: str) -> float:
        r_mod, alpha_mod = a.rank_alpha(module)
        r = r_mod if params.get("rank_pattern", False) else r_global
        alpha = alpha_mod if params.get("alpha_pattern", False) else alpha_global
        rs = a.use_rslora and params.get("rslora", False)
        return alpha / math.sqrt(r) if rs else alpha / r

    differs = [m for m in a.modules
               if not math.isclose(a.lora_scale(m), server_scale(m), rel_tol=1e-6)]
    if differs:
        return Violation(f"{', '.join(used)}: {len(differs)} module(s) such as {differs[0]} "
                         "would be scaled differently from PEFT")
    return Violation(", ".join(used) + " (same scale as PEFT here)", severity="warn")


@check("dtype_in")
def _dtype_in(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    allowed = {str(d).upper() for d in params.get("allowed", [])}
    dtypes = {t.dtype.upper() for t in facts.adapter.header.tensors.values()}
    bad = sorted(dtypes - allowed)
    return Violation(", ".join(bad)) if bad else None


@check("gguf_exportable")
def _gguf_exportable(facts: AdapterFacts, params: Mapping[str, Any]) -> Outcome:
    from registry.errors import UnsupportedMethod
    from registry.ops.gguf_export import gguf_blockers, plan_gguf_export

    reasons = gguf_blockers(facts.adapter)
    if reasons:
        return Violation(reasons[0])
    if facts.base_config is None:
        return _NEED_BASE
    try:  # the exporter's own plan: architecture mapped, every module has a GGUF tensor
        plan_gguf_export(facts.adapter, facts.base_config)
    except UnsupportedMethod as error:
        return Violation(error.reason)
    return None
