"""Requantize a (merged) model with bitsandbytes, measure what the rounding cost, compensate it.

Every Linear weight that transformers would turn into a bitsandbytes layer is quantized with
bitsandbytes' own functions (`quantize_4bit`, `int8_vectorwise_quant`) and saved with the keys
bitsandbytes' `_save_to_state_dict` writes, plus `quantization_config` in config.json, so
`AutoModelForCausalLM.from_pretrained(out)` loads the result with no arguments.

The source is streamed one tensor at a time (a merged model directory, or base + adapter merged
on the fly by `iter_merged_tensors`) into the shared shard writer, so memory stays near the
largest tensor. Per-layer work and the error budget live in registry.ops.quantize_layers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import Checkpoint, open_checkpoint
from registry.errors import InvalidModel
from registry.io.dtypes import torch_dtype
from registry.io.outdir import (
    check_free_space,
    check_output_dir,
    copy_files,
    sidecar_files,
    staged_output,
)
from registry.io.shards import ShardWriter
from registry.ops.merge_stream import Progress
from registry.ops.options import QuantizeOptions
from registry.ops.quantize_layers import (
    LayerError,
    check_bitsandbytes,
    estimate_bytes,
    linear_targets,
    overall_error,
    quantization_config,
    quantize_layer,
    quantize_weight,
    read_model_config,
    write_compensation_config,
)

if TYPE_CHECKING:
    import torch

__all__ = ["COMPENSATION_DIR", "QUANT_RECORD", "LayerError", "QuantizeOptions",
           "QuantizeResult", "quantization_config", "quantize_weight", "requantize_merged",
           "requantize_model"]

QUANT_RECORD = "adapt-quant.json"
COMPENSATION_DIR = "compensation"


@dataclass
class QuantizeResult:
    """What a requantization wrote, and what the rounding cost per layer and overall."""

    out_dir: Path
    to: str
    double_quant: bool
    compute_dtype: str
    blocksize: int
    skip_modules: list[str]
    quantization_config: dict[str, Any]
    files: list[str]
    total_bytes: int
    source_bytes: int
    layers: list[LayerError]
    overall: dict[str, float | None]
    compensate_rank: int | None
    compensation_dir: Path | None
    provenance: dict[str, Any]
    seconds: float
    kept_tensors: int = 0
    copied_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["compensation_dir"] = str(self.compensation_dir) if self.compensation_dir else None
        return data


# -- public entry points ----------------------------------------------------------------------
def requantize_model(
    src_dir: Path,
    out_dir: Path,
    options: QuantizeOptions,
    *,
    delta_source: Path | None = None,
    provenance: dict[str, Any] | None = None,
    protected: Sequence[tuple[Path, str]] = (),
    on_progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize every Linear weight of a model directory into a bitsandbytes checkpoint.

    delta_source: the base the source was merged from: errors are then also reported
        relative to ||W' - W||.
    protected: (directory, what it is) that out_dir must not overlap besides the sources.
    on_progress: called with (source bytes read, total source bytes).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    ckpt = open_checkpoint(src_dir)
    sources = [(src_dir, "the source model's directory")]
    if delta_source is not None:
        delta_source = Path(delta_source)
        sources.append((delta_source, "the base model's directory"))
    facts = dict(provenance or {})
    facts.setdefault("source_path", str(src_dir.resolve()))
    return _requantize(ckpt, _iter_checkpoint(ckpt), src_dir, out_dir, options,
                       sources=sources, protected=protected, delta_source=delta_source,
                       provenance=facts, on_progress=on_progress)


def requantize_merged(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    options: QuantizeOptions,
    *,
    provenance: dict[str, Any] | None = None,
    protected: Sequence[tuple[Path, str]] = (),
    on_progress: Progress | None = None,
) -> QuantizeResult:
    """Merge an adapter into its base and quantize, in one streaming pass (no merged copy).

    Weights are cast to the base's dtype before quantizing, exactly as merging to disk and then
    loading with BitsAndBytesConfig would; errors are measured against the float32 merge and
    also reported relative to each layer's delta.
    """
    from registry.ops.merge_stream import iter_merged_tensors

    adapter_dir, base_dir, out_dir = Path(adapter_dir), Path(base_dir), Path(out_dir)
    sources = [(adapter_dir, "the adapter's directory"), (base_dir, "the base model's directory")]
    check_output_dir(out_dir, sources=sources, protected=protected, force=options.force,
                     hint="write the quantized model somewhere new")
    ckpt = open_checkpoint(base_dir)
    # checks of the adapter against the base happen here, before anything is written
    tensors = iter_merged_tensors(adapter_dir, base_dir)
    facts = dict(provenance or {})
    facts.setdefault("adapter_path", str(adapter_dir.resolve()))
    facts.setdefault("base_path", str(base_dir.resolve()))
    return _requantize(ckpt, tensors, base_dir, out_dir, options, sources=sources,
                       protected=protected, delta_source=base_dir, provenance=facts,
                       on_progress=on_progress)


# -- the streaming core -----------------------------------------------------------------------
def _requantize(
    ckpt: Checkpoint,
    tensors: Iterator[tuple[str, torch.Tensor]],
    config_dir: Path,
    out_dir: Path,
    options: QuantizeOptions,
    *,
    sources: Sequence[tuple[Path, str]],
    protected: Sequence[tuple[Path, str]],
    delta_source: Path | None,
    provenance: dict[str, Any],
    on_progress: Progress | None,
) -> QuantizeResult:
    import torch

    started = time.perf_counter()
    config = read_model_config(config_dir)
    _check_not_quantized(config_dir, config)
    check_output_dir(out_dir, sources=sources, protected=protected, force=options.force,
                     hint="write the quantized model somewhere new")
    check_bitsandbytes(options.to, options.blocksize)
    infos = ckpt.tensors
    targets, written_skips = linear_targets(config_dir, config, list(infos),
                                            options.skip_modules)
    if not targets:
        raise InvalidModel(config_dir, "no Linear weights to quantize",
                           "check --skip-modules; embeddings and skipped modules stay as they are")
    needed = estimate_bytes(ckpt, targets, options)
    # each shard exists twice for a moment (scratch data + finished shard)
    check_free_space(out_dir, needed, transient=min(needed, options.shard_size))
    qconfig = quantization_config(options.to, double_quant=options.double_quant,
                                  compute_dtype=options.compute_dtype, skip_modules=written_skips)

    from registry import __version__

    facts = {**provenance, "to": options.to, "double_quant": options.double_quant,
             "blocksize": options.blocksize, "compute_dtype": options.compute_dtype,
             "adapt_version": __version__}
    metadata = {"format": "pt", "adapt_quant": json.dumps(facts, sort_keys=True)}
    rank = options.compensate_rank
    layers: list[LayerError] = []
    kept = 0
    total_src = sum(i.nbytes for i in infos.values())
    with staged_output(out_dir) as tmp:
        writer = ShardWriter(tmp, metadata, shard_size=options.shard_size, stem="model")
        comp_writer: ShardWriter | None = None
        if rank:
            (tmp / COMPENSATION_DIR).mkdir()
            comp_writer = ShardWriter(tmp / COMPENSATION_DIR, {"format": "pt"},
                                      shard_size=1 << 62, stem="adapter_model")
        deltas = _DeltaReader(delta_source) if delta_source is not None else None
        done = 0
        try:
            for name, tensor in tensors:
                info = infos.get(name)
                target = targets.get(name)
                if target is None:
                    if info is not None and tensor.is_floating_point():
                        tensor = tensor.to(torch_dtype(info.dtype))
                    writer.add(name, tensor)
                    kept += 1
                else:
                    base = deltas.get(name) if deltas is not None else None
                    with torch.no_grad():
                        layers.append(quantize_layer(
                            name, tensor, target, info.dtype if info else "F32", writer,
                            comp_writer, base, options))
                    del base
                del tensor
                done += info.nbytes if info is not None else 0
                if on_progress is not None:
                    on_progress(done, total_src)
            files = writer.close()
            if comp_writer is not None:
                comp_writer.close()
        except BaseException:
            writer.abort()
            if comp_writer is not None:
                comp_writer.abort()
            raise
        finally:
            if deltas is not None:
                deltas.close()
        config["quantization_config"] = qconfig
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copied = copy_files(sidecar_files(config_dir, skip={"config.json"}), tmp)
        if rank:
            write_compensation_config(tmp / COMPENSATION_DIR, out_dir, rank,
                                      [x.module for x in layers])
        result = QuantizeResult(
            out_dir=out_dir, to=options.to, double_quant=options.double_quant,
            compute_dtype=options.compute_dtype, blocksize=options.blocksize,
            skip_modules=written_skips, quantization_config=qconfig, files=files,
            total_bytes=writer.total, source_bytes=total_src, layers=layers,
            overall=overall_error(layers), compensate_rank=rank,
            compensation_dir=out_dir / COMPENSATION_DIR if rank else None,
            provenance=facts, seconds=time.perf_counter() - started, kept_tensors=kept,
            copied_files=copied,
        )
        record = {**result.to_dict(),
                  "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (tmp / QUANT_RECORD).write_text(json.dumps(record, indent=2))
    result.seconds = time.perf_counter() - started
    return result


def _check_not_quantized(path: Path, config: dict[str, Any]) -> None:
    existing = config.get("quantization_config")
    if existing:
        method = existing.get("quant_method", "?") if isinstance(existing, dict) else "?"
        raise InvalidModel(path, f"already quantized ({method}); requantizing would round twice",
                           "requantize the full-precision merged model instead")


class _DeltaReader:
    """Base tensors by name, one safetensors file open at a time, for delta = W' - W."""

    def __init__(self, base_dir: Path) -> None:
        self.ckpt = open_checkpoint(base_dir)
        self.file_of = self.ckpt.file_of()
        self._path: Path | None = None
        self._handle: Any = None

    def get(self, name: str) -> torch.Tensor | None:
        from safetensors import safe_open

        path = self.file_of.get(name)
        if path is None:
            return None
        if path != self._path:
            self.close()
            self._handle = safe_open(str(path), framework="pt").__enter__()
            self._path = path
        tensor: torch.Tensor = self._handle.get_tensor(name).float()
        return tensor

    def close(self) -> None:
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
            self._handle, self._path = None, None


def _iter_checkpoint(ckpt: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for f in ckpt.files:
        infos = sorted(ckpt.headers[f].tensors.values(), key=lambda t: t.start)
        with safe_open(str(f), framework="pt") as handle:
            for info in infos:
                yield info.name, handle.get_tensor(info.name)
