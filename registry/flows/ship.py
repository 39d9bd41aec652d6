"""Shipping a version where users serve it: GGUF / Ollama exports and serving-target checks.

The export is not recorded in the catalog yet (there is no table for exports); its provenance
(ref, digest, base fingerprint, adapt version) travels in the GGUF metadata as `adapt.*` keys.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import AlreadyExists, UsageError
from registry.flows import resolve_base_dir
from registry.ops.gguf_export import (
    GGUFExportOptions,
    export_lora_gguf,
    read_base_config,
    write_ollama_modelfile,
)
from registry.peft_dir import read_adapter_dir
from registry.targets import AdapterFacts, TargetReport, apply_rules, load_table

if TYPE_CHECKING:
    from registry.registry import Registry, VersionInfo

EXPORT_FORMATS = ("peft", "gguf", "ollama")
OLLAMA_ADAPTER_FILE = "adapter.gguf"


@dataclass(frozen=True)
class ShipExport:
    """What an export wrote. `path` is the file (gguf) or directory (peft, ollama)."""

    ref: str
    digest: str
    format: str
    path: Path
    gguf_file: Path | None = None
    modelfile: Path | None = None
    base: str | None = None
    base_fingerprint: str | None = None
    architecture: str | None = None
    alpha: float | None = None
    scale_folded: bool = False
    tensors: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("path", "gguf_file", "modelfile"):
            d[key] = None if d[key] is None else str(d[key])
        return d


def _base_for(reg: Registry, version: VersionInfo, base: str | Path | None) -> Path | None:
    """The base directory: the one given, else the registered base the version was added with."""
    if base is not None:
        return resolve_base_dir(reg, base)
    if version.base_fingerprint:
        found = reg.find_base(version.base_fingerprint)
        if found is not None and found.path and Path(found.path).exists():
            return Path(found.path)
    return None


def export_gguf(
    reg: Registry,
    ref: str | VersionInfo,
    out: str | Path,
    *,
    base: str | Path | None = None,
    outtype: str = "f32",
) -> ShipExport:
    """Write the version as a llama.cpp LoRA GGUF file at `out`, with its provenance."""
    from registry import __version__

    version = reg.resolve(ref)
    base_dir = _base_for(reg, version, base)
    if base_dir is None:
        raise UsageError(f"{version.ref} has no registered base with a local directory",
                         "pass --base NAME or --base PATH (its config.json is enough)")
    fingerprint = _fingerprint(reg, base_dir) or version.base_fingerprint
    provenance = {"ref": version.ref, "digest": version.digest,
                  "base_fingerprint": fingerprint or "unknown", "adapt_version": __version__}
    options = GGUFExportOptions(outtype=outtype, name=version.name, provenance=provenance)
    result = export_lora_gguf(reg.checkout(version), base_dir, Path(out), options)
    return ShipExport(
        ref=version.ref, digest=version.digest, format="gguf", path=result.path,
        gguf_file=result.path, base=str(base_dir), base_fingerprint=fingerprint,
        architecture=result.plan.architecture, alpha=result.plan.alpha,
        scale_folded=result.plan.scale_folded, tensors=2 * len(result.plan.tensors),
        bytes=result.bytes,
    )


def export_ollama(
    reg: Registry,
    ref: str | VersionInfo,
    out_dir: str | Path,
    *,
    base: str | Path | None = None,
    from_model: str | None = None,
    outtype: str = "f32",
) -> ShipExport:
    """A directory Ollama imports with `ollama create NAME -f Modelfile`: the GGUF adapter and a
    Modelfile whose FROM is `from_model` (an Ollama model name) or else the base's directory."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise AlreadyExists(str(out_dir), "choose an empty or new directory")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        shipped = export_gguf(reg, ref, out_dir / OLLAMA_ADAPTER_FILE, base=base, outtype=outtype)
        assert shipped.base is not None
        source = from_model or str(Path(shipped.base).resolve())
        modelfile = write_ollama_modelfile(out_dir, source, OLLAMA_ADAPTER_FILE)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return replace(shipped, format="ollama", path=out_dir, modelfile=modelfile)


def export_version(
    reg: Registry,
    ref: str | VersionInfo,
    out: str | Path,
    *,
    format: str = "peft",
    base: str | Path | None = None,
) -> ShipExport:
    """`adapt export`: one entry for every format."""
    if format not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {format!r}",
                         f"use one of {', '.join(EXPORT_FORMATS)}")
    if format == "gguf":
        return export_gguf(reg, ref, out, base=base)
    if format == "ollama":
        return export_ollama(reg, ref, out, base=base)
    version = reg.resolve(ref)
    path = reg.export(version, out)
    return ShipExport(ref=version.ref, digest=version.digest, format="peft", path=path,
                      bytes=version.size_bytes)


def check_target(
    reg: Registry,
    ref: str | VersionInfo,
    target: str,
    *,
    base: str | Path | None = None,
    target_version: str | None = None,
) -> TargetReport:
    """Apply a serving target's rules table to the version (and its base, when known)."""
    table = load_table(target, target_version)
    version = reg.resolve(ref)
    base_dir = _base_for(reg, version, base)
    adapter = read_adapter_dir(reg.checkout(version))
    base_config = read_base_config(base_dir) if base_dir is not None else None
    base_tensors = _tensor_names(base_dir) if base_dir is not None else None
    # Hashing a large base costs a read of it (cached after): only when there is one to match.
    fingerprint = (_fingerprint(reg, base_dir)
                   if base_dir is not None and version.base_fingerprint else None)
    facts = AdapterFacts(adapter, base_config, base_tensors, fingerprint,
                         version.base_fingerprint)
    return TargetReport(version.ref, table.target, table.version,
                        str(base_dir) if base_dir is not None else None,
                        apply_rules(table, facts))


def _tensor_names(base_dir: Path) -> dict[str, tuple[int, ...]] | None:
    """Base tensor name -> shape, from the safetensors headers (no weights read)."""
    if not any(base_dir.glob("*.safetensors")):
        return None
    from registry.checkpoint import open_checkpoint

    return {name: tuple(t.shape) for name, t in open_checkpoint(base_dir).tensors.items()}


def _fingerprint(reg: Registry, base_dir: Path) -> str | None:
    if not any(base_dir.glob("*.safetensors")):
        return None
    return reg.fingerprint(base_dir).fingerprint
