"""The merged model as a stream of tensors: base + adapter, one base tensor at a time.

Everything is decided from the safetensors headers and the (small) adapter before the first
weight is read; then base tensors are read one at a time and the ones the adapter touches are
merged in float32. `merge` writes this stream to disk; `requantize` quantizes it on the fly.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import Checkpoint, open_checkpoint
from registry.compat import check_compatible
from registry.errors import IncompatibleBase, InvalidModel, MissingDependency, UnsupportedMethod
from registry.io.dtypes import torch_dtype
from registry.io.shards import RawBytes
from registry.ops.deltas import check_mergeable, merged_bias, merged_weight, module_factors
from registry.ops.merge_targets import plan_targets
from registry.ops.options import BASE_QUANTIZATIONS, check_base_quantization
from registry.peft_dir import AdapterDir, load_tensors, read_adapter_dir
from registry.safetensors_header import TensorInfo

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int | None], None]

QUANT_BLOCKSIZE = 64  # bitsandbytes' Linear4bit default, which QLoRA training used


@dataclass
class PreparedMerge:
    """What a merge needs, decided from headers and the adapter before any weight is read."""

    adapter: AdapterDir
    ckpt: Checkpoint
    factors: dict[str, dict[str, torch.Tensor]]
    replacements: dict[str, torch.Tensor]  # base tensor name -> modules_to_save weight
    appended: dict[str, torch.Tensor]  # saved tensors the base lacks (e.g. a new head)
    weight_of: dict[str, str]  # "<module>.weight" -> module
    bias_of: dict[str, str]  # "<module>.bias" -> module
    config_updates: dict[str, Any] = field(default_factory=dict)  # for config.json

    def touches(self, name: str) -> bool:
        """Whether the merge changes this base tensor."""
        return name in self.replacements or name in self.weight_of or name in self.bias_of


def prepare_merge(adapter_dir: Path, base_dir: Path) -> PreparedMerge:
    """Read and check the adapter against the base (UnsupportedMethod, IncompatibleBase...)."""
    adapter = read_adapter_dir(adapter_dir)
    check_mergeable(adapter)
    ckpt = open_checkpoint(base_dir)
    check_compatible(adapter, ckpt)
    base = ckpt.tensors
    tensors = load_tensors(adapter)
    factors = module_factors(adapter, tensors)
    for key in adapter.extra_tensors:
        if "trainable_tokens" in key:
            raise UnsupportedMethod(f"{adapter.method} (trainable_token_indices)", "merged",
                                    "adapt does not merge trainable token deltas yet")
    # adapter module names -> checkpoint names (prefixes, renames, ties, new heads)
    targets = plan_targets(adapter, ckpt, factors, tensors)
    for name, module in targets.weight_of.items():
        if "lora_B.bias" in factors[module] and module not in targets.bias_of.values():
            raise IncompatibleBase(module, None, tuple(base[name].shape),
                                   "the adapter has lora_bias but the base layer has no bias")
    return PreparedMerge(
        adapter, ckpt, factors, targets.replacements, targets.appended,
        weight_of=targets.weight_of,
        bias_of=targets.bias_of,
        config_updates=targets.config_updates,
    )


def base_order(ckpt: Checkpoint) -> list[tuple[Path, str]]:
    """(file, tensor name) in checkpoint order: files as indexed, tensors by offset."""
    out: list[tuple[Path, str]] = []
    for f in ckpt.files:
        infos = sorted(ckpt.headers[f].tensors.values(), key=lambda t: t.start)
        out.extend((f, t.name) for t in infos)
    return out


def read_tensor(handle: Any, info: TensorInfo) -> torch.Tensor:
    """Read one tensor's bytes at its header offsets into a fresh tensor."""
    import torch

    dtype = torch_dtype(info.dtype)
    buffer = torch.empty(info.nbytes, dtype=torch.uint8)
    view = memoryview(buffer.numpy())  # type: ignore[arg-type]  # ndarray is a buffer
    handle.seek(info.start)
    got = 0
    while got < info.nbytes:
        n = handle.readinto(view[got:])
        if not n:
            raise InvalidModel(handle.name, f"tensor {info.name} is truncated")
        got += n
    return buffer.view(dtype).reshape(info.shape)


def quant_roundtrip(weight: torch.Tensor, base_quantization: str) -> torch.Tensor:
    """dequant(quant(W)) with bitsandbytes' own 4-bit kernels, as a QLoRA base saw W."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise MissingDependency("bitsandbytes", "merge into a 4-bit quantized base") from None
    import torch

    quant_type, double = BASE_QUANTIZATIONS[base_quantization]
    w = weight if weight.dtype in (torch.float16, torch.bfloat16, torch.float32) else weight.float()
    packed, state = bnbf.quantize_4bit(w.contiguous(), blocksize=QUANT_BLOCKSIZE,
                                       quant_type=quant_type, compress_statistics=double)
    result: torch.Tensor = bnbf.dequantize_4bit(packed, state).float()
    return result


def stream_merged(
    prep: PreparedMerge,
    *,
    base_quantization: str | None,
    on_progress: Progress | None,
    raw_ok: Callable[[str], bool] | None = None,
) -> Generator[tuple[str, Any, bool], None, None]:
    """(name, tensor, changed) in checkpoint order; changed tensors are float32.

    raw_ok: for names it accepts, an unchanged tensor comes as RawBytes instead of a tensor.

    One base file is open at a time and one tensor is held at a time. Tensors are read with
    plain reads at the offsets of the validated safetensors header rather than through an
    mmap (as safetensors.safe_open does): mapped pages count towards the process's resident
    memory until the file is closed, which would make peak memory grow to a whole shard.
    """
    order = base_order(prep.ckpt)
    infos = prep.ckpt.tensors
    total = sum(infos[name].nbytes for _, name in order)
    done = 0
    current: Path | None = None
    handle: Any = None
    try:
        for path, name in order:
            if path != current:
                if handle is not None:
                    handle.close()
                handle = open(path, "rb", buffering=0)
                current = path
            info = infos[name]
            if not prep.touches(name) and raw_ok is not None and raw_ok(name):
                yield name, RawBytes(path, info.start, info.nbytes), False
            else:
                tensor, changed = _merged(prep, name, read_tensor(handle, info),
                                          base_quantization)
                yield name, tensor, changed
            done += info.nbytes
            if on_progress is not None:
                on_progress(done, total)
    finally:
        if handle is not None:
            handle.close()
    for name, tensor in prep.appended.items():
        yield name, tensor.float() if tensor.is_floating_point() else tensor, True


def _merged(prep: PreparedMerge, name: str, tensor: torch.Tensor,
            base_quantization: str | None) -> tuple[torch.Tensor, bool]:
    """One base tensor after the merge, and whether the merge changed it."""
    changed = False
    if name in prep.replacements:
        tensor, changed = prep.replacements[name], True
    module = prep.weight_of.get(name)
    if module is not None:
        if base_quantization:
            tensor = quant_roundtrip(tensor, base_quantization)
        tensor = merged_weight(prep.adapter, module, prep.factors[module], tensor)
        changed = True
    module = prep.bias_of.get(name)
    if module is not None:
        bias = merged_bias(prep.adapter, module, prep.factors[module], tensor)
        if bias is not None:
            tensor, changed = bias, True
    return (tensor.float() if changed else tensor), changed


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
    check_base_quantization(base_quantization)
    prep = prepare_merge(Path(adapter_dir), Path(base_dir))
    if prep.config_updates:
        # tensors alone would load as another model (embeddings tied again, another head size)
        raise UnsupportedMethod(
            prep.adapter.method, "merged on the fly",
            f"the merged model also changes config.json ({', '.join(sorted(prep.config_updates))}"
            "); run `adapt merge` and use its output",
        )
    return _float32(stream_merged(prep, base_quantization=base_quantization,
                                  on_progress=on_progress))


def _float32(items: Iterator[tuple[str, Any, bool]]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor, _ in items:
        yield name, tensor.float() if tensor.is_floating_point() else tensor
