"""`adapt extract` and `adapt convert`: resolve inputs, run the op, register the LoRA it wrote.

Lineage: an extracted version records the base it was added against (base_fingerprint) and, in
its recipe, the tuned checkpoint's fingerprint and path with the per-module figures; the tuned
checkpoint is also recorded as a model of kind "tuned" whose parent is the base. A converted
version has its source version as a parent (role "convert-source") with the conversion error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import NotFound, UsageError
from registry.flows import resolve_base_dir
from registry.ops.convert import ConvertOptions, convert_to_lora
from registry.ops.extract import ExtractOptions, extract_lora
from registry.peft_dir import read_adapter_dir

if TYPE_CHECKING:
    from registry.records import VersionInfo
    from registry.registry import AddResult, Registry

Progress = Callable[[int, int | None], None]


def extract_version(
    reg: Registry,
    base: str | Path,
    tuned: str | Path,
    options: ExtractOptions,
    *,
    name: str | None = None,
    note: str | None = None,
    on_progress: Progress | None = None,
) -> AddResult:
    """Extract a LoRA from the fine-tune `tuned` of `base` and register it with its figures."""
    from registry import __version__
    from registry.refs import check_name

    if name is not None:
        check_name(name)
    base_dir = resolve_base_dir(reg, base)
    tuned_dir = Path(tuned)
    if not tuned_dir.exists():
        raise NotFound("model directory", str(tuned), "pass the fine-tuned model's directory")
    if tuned_dir.resolve() == base_dir.resolve():
        raise UsageError("--tuned is the base model itself", "pass the fine-tuned model")
    base_info = reg.add_base(base_dir)
    tuned_fp = reg.fingerprint(tuned_dir).fingerprint
    if tuned_fp == base_info.fingerprint:
        raise UsageError("the tuned model has exactly the base model's weights",
                         "there is nothing to extract")
    with tempfile.TemporaryDirectory(prefix="adapt-extract-") as tmp:
        out = Path(tmp) / (name or f"{tuned_dir.resolve().name}-lora")
        result = extract_lora(base_dir, tuned_dir, out, options,
                              base_model_name=base_info.name or _name_or_path(base_dir),
                              on_progress=on_progress)
        recipe = {
            "method": "extract",
            "base_fingerprint": base_info.fingerprint,
            "tuned_fingerprint": tuned_fp,
            "tuned_path": str(tuned_dir.resolve()),
            **result.summary(),
            "seconds": round(result.seconds, 3),
            "adapt_version": __version__,
        }
        added = reg.add(out, name=name, base=base_dir, note=note, recipe=recipe,
                        source=f"extract:{tuned_dir.resolve()}")
    reg.add_base(tuned_dir, kind="tuned", parent_fingerprint=base_info.fingerprint,
                 details={"extracted_as": added.version.ref})
    return added


def convert_version(
    reg: Registry,
    ref: str,
    options: ConvertOptions,
    *,
    name: str | None = None,
    on_progress: Progress | None = None,
) -> AddResult:
    """Convert a registered version to a LoRA and register it with the source as its parent."""
    from registry import __version__
    from registry.records import ParentLink
    from registry.refs import check_name

    if name is not None:
        check_name(name)
    info = reg.resolve(ref)
    adapter = read_adapter_dir(reg.checkout(info))
    with tempfile.TemporaryDirectory(prefix="adapt-convert-") as tmp:
        out = Path(tmp) / (name or f"{info.name}-lora")
        result = convert_to_lora(adapter, out, options, base_shapes=_base_shapes(reg, info),
                                 on_progress=on_progress)
        recipe = {
            "method": "convert",
            "to": "lora",
            "source": {"ref": info.ref, "digest": info.digest, "method": info.method},
            **result.summary(),
            "seconds": round(result.seconds, 3),
            "adapt_version": __version__,
        }
        parent = ParentLink(info.ref, None, role="convert-source",
                            params={"digest": info.digest, "exact": result.exact,
                                    "max_rel_error": result.max_rel_error})
        return reg.add(out, name=name, parents=[parent], recipe=recipe,
                       base_fingerprint=info.base_fingerprint,
                       source=f"convert:{info.ref}")


def _base_shapes(reg: Registry, info: VersionInfo) -> dict[str, tuple[int, ...]] | None:
    """Weight shapes by module of the base the version was registered against, if still on
    disk (VeRA and FourierFT deltas take their shape from it)."""
    from registry.checkpoint import open_checkpoint

    found = reg.find_base(info.base_fingerprint) if info.base_fingerprint else None
    if found is None or not found.path or not Path(found.path).exists():
        return None
    tensors = open_checkpoint(found.path).tensors
    return {n.removesuffix(".weight"): tuple(t.shape) for n, t in tensors.items()
            if n.endswith(".weight")}


def _name_or_path(model_dir: Path) -> str:
    """The model id its config.json was saved from, else the directory."""
    from registry.safeparse import load_json

    try:
        data = load_json((model_dir / "config.json").read_bytes())
        value = data.get("_name_or_path") if isinstance(data, dict) else None
    except (OSError, ValueError):
        value = None
    return value if isinstance(value, str) and value else str(model_dir.resolve())
