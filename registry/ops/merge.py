"""Merge a PEFT adapter into its base checkpoint, streaming tensor by tensor.

The output layout (file names, offsets, header) is planned from the safetensors headers before
any weight is read, so each shard's header is written first and tensors follow one at a time:
peak memory stays near the largest tensor (in float32) plus the adapter, never the whole model.
Everything is written into a temporary sibling directory and renamed into place at the end, so
a failed or interrupted merge never leaves an output that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import INDEX_SUFFIX, Checkpoint, open_checkpoint
from registry.compat import check_compatible
from registry.errors import (
    AlreadyExists,
    IncompatibleBase,
    InsufficientDisk,
    UnsupportedMethod,
    UsageError,
)
from registry.ops.deltas import check_mergeable, merged_bias, merged_weight, module_factors
from registry.peft_dir import AdapterDir, load_tensors, read_adapter_dir
from registry.safetensors_header import DTYPE_SIZES

if TYPE_CHECKING:
    import torch

    from registry.registry import BaseInfo, Registry, VersionInfo

Progress = Callable[[int, int | None], None]

MERGE_RECORD = "adapt-merge.json"
DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
# --base-quantization values: bitsandbytes 4-bit type, and whether absmax is double-quantized
BASE_QUANTIZATIONS = {"nf4": ("nf4", False), "fp4": ("fp4", False),
                      "nf4-dq": ("nf4", True), "fp4-dq": ("fp4", True)}
QUANT_BLOCKSIZE = 64  # bitsandbytes' Linear4bit default, which QLoRA training used
# Weights in other formats would be stale next to the merged safetensors.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_HEADER_ALIGN = 8


@dataclass
class MergeResult:
    """What a merge wrote."""

    out_dir: Path
    files: list[str]
    tensors: int
    merged_modules: int
    replaced_tensors: int
    total_bytes: int
    method: str
    dtype: str | None
    base_quantization: str | None
    provenance: dict[str, Any]
    seconds: float
    copied_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir)}


# -- preparing: everything decided from headers and the (small) adapter ----------------------
@dataclass
class _Prepared:
    adapter: AdapterDir
    ckpt: Checkpoint
    factors: dict[str, dict[str, torch.Tensor]]
    replacements: dict[str, torch.Tensor]  # base tensor name -> modules_to_save weight
    appended: dict[str, torch.Tensor]  # saved tensors the base lacks (e.g. a new head)
    weight_of: dict[str, str]  # "<module>.weight" -> module
    bias_of: dict[str, str]  # "<module>.bias" -> module


def _prepare(adapter_dir: Path, base_dir: Path) -> _Prepared:
    adapter = read_adapter_dir(adapter_dir)
    check_mergeable(adapter)
    ckpt = open_checkpoint(base_dir)
    check_compatible(adapter, ckpt)
    base = ckpt.tensors
    tensors = load_tensors(adapter)
    factors = module_factors(adapter, tensors)
    replacements: dict[str, torch.Tensor] = {}
    appended: dict[str, torch.Tensor] = {}
    for key, info in adapter.extra_tensors.items():
        if "trainable_tokens" in key:
            raise UnsupportedMethod(f"{adapter.method} (trainable_token_indices)", "merged",
                                    "adapt does not merge trainable token deltas yet")
        target = key.replace(".modules_to_save.", ".").replace(".base_layer.", ".")
        (replacements if target in base else appended)[target] = tensors[info.name]
    for module, parts in factors.items():
        if "lora_B.bias" in parts and f"{module}.bias" not in base:
            raise IncompatibleBase(module, None, tuple(base[f"{module}.weight"].shape),
                                   "the adapter has lora_bias but the base layer has no bias")
    return _Prepared(
        adapter, ckpt, factors, replacements, appended,
        weight_of={f"{m}.weight": m for m in factors},
        bias_of={f"{m}.bias": m for m in factors},
    )


def _base_order(ckpt: Checkpoint) -> list[tuple[Path, str]]:
    """(file, tensor name) in checkpoint order: files as indexed, tensors by offset."""
    out: list[tuple[Path, str]] = []
    for f in ckpt.files:
        infos = sorted(ckpt.headers[f].tensors.values(), key=lambda t: t.start)
        out.extend((f, t.name) for t in infos)
    return out


def _quant_roundtrip(weight: torch.Tensor, base_quantization: str) -> torch.Tensor:
    """dequant(quant(W)) with bitsandbytes' own 4-bit kernels, as a QLoRA base saw W."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        from registry.errors import MissingDependency

        raise MissingDependency("bitsandbytes", "merge into a 4-bit quantized base") from None
    import torch

    quant_type, double = BASE_QUANTIZATIONS[base_quantization]
    w = weight if weight.dtype in (torch.float16, torch.bfloat16, torch.float32) else weight.float()
    packed, state = bnbf.quantize_4bit(w.contiguous(), blocksize=QUANT_BLOCKSIZE,
                                       quant_type=quant_type, compress_statistics=double)
    return bnbf.dequantize_4bit(packed, state).float()


def _stream(
    prep: _Prepared,
    *,
    base_quantization: str | None,
    on_progress: Progress | None,
) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(name, tensor, changed) in checkpoint order; changed tensors are float32.

    One base file is open at a time and one tensor is held at a time.
    """
    from safetensors import safe_open

    order = _base_order(prep.ckpt)
    infos = prep.ckpt.tensors
    total = sum(infos[name].nbytes for _, name in order)
    done = 0
    current: Path | None = None
    handle: Any = None
    try:
        for path, name in order:
            if path != current:
                if handle is not None:
                    handle.__exit__(None, None, None)
                handle = safe_open(str(path), framework="pt").__enter__()
                current = path
            tensor = handle.get_tensor(name)
            changed = False
            if name in prep.replacements:
                tensor, changed = prep.replacements[name], True
            module = prep.weight_of.get(name)
            if module is not None:
                if base_quantization:
                    tensor = _quant_roundtrip(tensor, base_quantization)
                tensor = merged_weight(prep.adapter, module, prep.factors[module], tensor)
                changed = True
            module = prep.bias_of.get(name)
            if module is not None:
                bias = merged_bias(prep.adapter, module, prep.factors[module], tensor)
                if bias is not None:
                    tensor, changed = bias, True
            if changed:
                tensor = tensor.float()
            yield name, tensor, changed
            done += infos[name].nbytes
            if on_progress is not None:
                on_progress(done, total)
    finally:
        if handle is not None:
            handle.__exit__(None, None, None)
    for name, tensor in prep.appended.items():
        yield name, tensor.float() if tensor.is_floating_point() else tensor, True


def iter_merged_tensors(
    adapter_dir: Path,
    base_dir: Path,
    *,
    base_quantization: str | None = None,
    on_progress: Progress | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Merged tensors in checkpoint order, one at a time; floating tensors come as float32.

    Checks happen before the first tensor is yielded (UnsupportedMethod, IncompatibleBase...).
    base_quantization: "nf4" or "fp4" (optionally "-dq"): merge into dequant(quant(W)).
    on_progress: called with (base bytes read, total base bytes).
    """
    _check_quantization(base_quantization)
    prep = _prepare(Path(adapter_dir), Path(base_dir))
    return _float32(_stream(prep, base_quantization=base_quantization, on_progress=on_progress))


def _float32(
    items: Iterator[tuple[str, torch.Tensor, bool]],
) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor, _ in items:
        yield name, tensor.float() if tensor.is_floating_point() else tensor


def _check_quantization(base_quantization: str | None) -> None:
    if base_quantization is not None and base_quantization not in BASE_QUANTIZATIONS:
        raise UsageError(f"unknown base quantization {base_quantization!r}",
                         f"use one of {', '.join(BASE_QUANTIZATIONS)}")
