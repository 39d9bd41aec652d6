"""`adapt requantize`: quantize a model (or a registered adapter merged into a base) and record
the output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import UsageError
from registry.flows import protected_dirs, resolve_base_dir
from registry.io.outdir import check_output_dir
from registry.ops.merge_stream import Progress
from registry.ops.options import QuantizeOptions
from registry.ops.quantize import QuantizeResult, requantize_merged, requantize_model
from registry.ops.quantize_layers import worst_layer
from registry.refs import check_name

if TYPE_CHECKING:
    from registry.registry import BaseInfo, Registry

HINT = "write the quantized model somewhere new"


def requantize(
    reg: Registry,
    out_dir: Path,
    options: QuantizeOptions,
    *,
    src: str | Path | None = None,
    adapter: str | None = None,
    base: str | Path | None = None,
    name: str | None = None,
    on_progress: Progress | None = None,
) -> tuple[QuantizeResult, BaseInfo]:
    """Quantize `src`, or merge `adapter` (a reference) into `base` and quantize in one pass;
    record the output as a quantized model, named `name` when given."""
    if name is not None:
        check_name(name, "base name")
    out_dir = Path(out_dir)
    protected = protected_dirs(reg)
    if adapter is not None:
        if src is not None or base is None:
            raise UsageError("--adapter needs --base and no SRC",
                             "adapt requantize --adapter NAME --base DIR --to nf4 --out DIR")
        version = reg.resolve(adapter)
        base_dir = resolve_base_dir(reg, base)
        # refuse a bad --out before the checkout and the (slow) fingerprint; the op checks
        # again with every source
        check_output_dir(out_dir, sources=[(base_dir, "the base model's directory")],
                         protected=protected, force=options.force, hint=HINT)
        adapter_dir = reg.checkout(version)
        base_fp = reg.fingerprint(base_dir).fingerprint
        provenance = {"adapter_ref": version.ref, "adapter_digest": version.digest,
                      "base_fingerprint": base_fp, "base_path": str(base_dir.resolve())}
        result = requantize_merged(adapter_dir, base_dir, out_dir, options,
                                   provenance=provenance, protected=protected,
                                   on_progress=on_progress)
        return result, record_quantized(reg, base_fp, result, version.id, name=name)
    if src is None:
        raise UsageError("nothing to quantize", "pass SRC, or --adapter REF --base DIR")
    if base is not None:
        raise UsageError("--base goes with --adapter", "pass SRC alone, or --adapter and --base")
    src_dir = resolve_base_dir(reg, src)  # a directory, or a registered (merged) model's name
    check_output_dir(out_dir, sources=[(src_dir, "the source model's directory")],
                     protected=protected, force=options.force, hint=HINT)
    src_fp = reg.fingerprint(src_dir).fingerprint
    result = requantize_model(src_dir, out_dir, options, provenance={"source_fingerprint": src_fp},
                              protected=protected, on_progress=on_progress)
    return result, record_quantized(reg, src_fp, result, None, name=name)


def record_quantized(
    reg: Registry,
    src_fingerprint: str | None,
    result: QuantizeResult,
    source_version_id: int | None,
    *,
    name: str | None = None,
) -> BaseInfo:
    """Record the output as a model of kind "quantized", linked to its source (and adapter)."""
    details = {
        "quantization_config": result.quantization_config,
        "to": result.to,
        "double_quant": result.double_quant,
        "blocksize": result.blocksize,
        "compute_dtype": result.compute_dtype,
        "skip_modules": result.skip_modules,
        "overall": result.overall,
        "layers": len(result.layers),
        "worst_layer": worst_layer(result.layers),
        "compensate_rank": result.compensate_rank,
        "compensation_dir": str(result.compensation_dir) if result.compensation_dir else None,
        "provenance": result.provenance,
    }
    return reg.add_base(result.out_dir, name=name, kind="quantized",
                        source_version_id=source_version_id,
                        parent_fingerprint=src_fingerprint, details=details)
