"""`adapt merge`: merge a registered adapter version into a base and record the output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from registry.flows import protected_dirs, resolve_base_dir
from registry.io.outdir import check_output_dir
from registry.ops.merge import MergeResult, merge_adapter_into_base
from registry.ops.merge_stream import Progress
from registry.ops.options import MergeOptions
from registry.refs import check_name

if TYPE_CHECKING:
    from registry.registry import BaseInfo, Registry, VersionInfo

HINT = "write the merged model somewhere new"


def merge_version(
    reg: Registry,
    ref: str | VersionInfo,
    base: str | Path,
    out_dir: Path,
    options: MergeOptions | None = None,
    *,
    name: str | None = None,
    on_progress: Progress | None = None,
) -> tuple[MergeResult, BaseInfo]:
    """Merge a registered adapter version into `base` (a directory or a registered base name)
    and record the output as a merged model, named `name` when given."""
    if name is not None:
        check_name(name, "base name")
    opts = options or MergeOptions()
    version = reg.resolve(ref)
    base_dir = resolve_base_dir(reg, base)
    protected = protected_dirs(reg)
    # refuse a bad --out before the checkout and the (slow) base fingerprint; the op checks
    # again with the adapter's directory
    check_output_dir(Path(out_dir), sources=[(base_dir, "the base model's directory")],
                     protected=protected, force=opts.force, hint=HINT)
    adapter_dir = reg.checkout(version)
    base_fingerprint = reg.fingerprint(base_dir).fingerprint
    provenance = {"adapter_ref": version.ref, "adapter_digest": version.digest,
                  "base_fingerprint": base_fingerprint}
    result = merge_adapter_into_base(
        adapter_dir, base_dir, Path(out_dir), opts, provenance=provenance,
        protected=protected, on_progress=on_progress,
    )
    return result, record_merge(reg, version, base_fingerprint, result, name=name)


def record_merge(
    reg: Registry,
    version: VersionInfo,
    base_fingerprint: str,
    result: MergeResult,
    *,
    name: str | None = None,
) -> BaseInfo:
    """Record the merged output as a model of kind "merged", linked to its adapter and base."""
    details = {
        "adapter": version.ref,
        "adapter_digest": version.digest,
        "method": result.method,
        "dtype": result.dtype,
        "base_quantization": result.base_quantization,
        "files": result.files,
        "provenance": result.provenance,
    }
    return reg.add_base(result.out_dir, name=name, kind="merged", source_version_id=version.id,
                        parent_fingerprint=base_fingerprint, details=details)
