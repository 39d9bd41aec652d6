"""Requantize a (merged) model with bitsandbytes, measure what the rounding cost, compensate it.

Every Linear weight that transformers would turn into a bitsandbytes layer is quantized with
bitsandbytes' own functions (`quantize_4bit`, `int8_vectorwise_quant`) and saved with the keys
bitsandbytes' `_save_to_state_dict` writes, plus `quantization_config` in config.json, so
`AutoModelForCausalLM.from_pretrained(out)` loads the result with no arguments.

The source is streamed one tensor at a time (a merged model directory, or base + adapter merged
on the fly by `iter_merged_tensors`); quantized tensors go to a per-shard data file and each
shard's header is written once the shard is full, so memory stays near the largest tensor.

For each quantized layer the error ||dequant(Q(W')) - W'|| is reported relative to ||W'|| and,
when the merge delta is known, relative to ||delta||: the share of the fine-tune the rounding
may have erased. `compensate_rank` fits a rank-R LoRA to the residual and saves it beside the
model as a PEFT adapter directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from registry.checkpoint import INDEX_SUFFIX, Checkpoint, open_checkpoint
from registry.errors import (
    AlreadyExists,
    InsufficientDisk,
    InvalidModel,
    MissingDependency,
    QuantizationUnavailable,
    UsageError,
)
from registry.safetensors_header import DTYPE_SIZES

if TYPE_CHECKING:
    import torch

    from registry.registry import BaseInfo, Registry

Progress = Callable[[int, int | None], None]

QUANT_TYPES = ("nf4", "fp4", "int8")
COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
QUANT_RECORD = "adapt-quant.json"
COMPENSATION_DIR = "compensation"
DEFAULT_SHARD_SIZE = 5 * 10**9
# Exact SVD below this size; randomized (svd_lowrank) above, where a full SVD takes minutes.
_EXACT_SVD_MAX_DIM = 1024
_HEADER_ALIGN = 8
_RECORDS = ("adapt-merge.json", QUANT_RECORD)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_ST_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
              "int8": "I8", "uint8": "U8", "int16": "I16", "int32": "I32", "int64": "I64",
              "bool": "BOOL"}


@dataclass
class LayerError:
    """The rounding error of one quantized layer (Frobenius norms, float32)."""

    module: str
    shape: tuple[int, ...]
    weight_norm: float
    error_norm: float
    rel_error: float  # error / ||W'||
    delta_norm: float | None = None
    error_vs_delta: float | None = None  # error / ||delta||; None without a known nonzero delta
    compensated_error_norm: float | None = None
    compensated_rel_error: float | None = None
    compensated_error_vs_delta: float | None = None


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


# -- options and environment ----------------------------------------------------------------
def _check_options(to: str, compute_dtype: str, blocksize: int,
                   compensate_rank: int | None) -> None:
    if to not in QUANT_TYPES:
        raise UsageError(f"unsupported --to {to!r}", f"use one of {', '.join(QUANT_TYPES)}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(f"unknown compute dtype {compute_dtype!r}",
                         f"use one of {', '.join(COMPUTE_DTYPES)}")
    if blocksize not in BLOCKSIZES:
        raise UsageError(f"unsupported blocksize {blocksize}",
                         f"use one of {', '.join(map(str, BLOCKSIZES))}")
    if compensate_rank is not None and compensate_rank < 1:
        raise UsageError(f"--compensate-rank must be at least 1, got {compensate_rank}")


def _check_bitsandbytes(to: str, blocksize: int) -> None:
    """Quantize a tiny tensor first: fail before any output exists if bitsandbytes cannot."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise MissingDependency("bitsandbytes", "requantize a model") from None
    import torch

    probe = torch.linspace(-1, 1, 2 * blocksize).reshape(2, blocksize)
    try:
        if to == "int8":
            bnbf.int8_vectorwise_quant(probe.half())
        else:
            packed, state = bnbf.quantize_4bit(probe, blocksize=blocksize, quant_type=to)
            bnbf.dequantize_4bit(packed, state)
    except Exception as error:  # bitsandbytes raises plain RuntimeErrors for missing backends
        raise QuantizationUnavailable(to, f"{type(error).__name__}: {error}") from None


def _check_source(path: Path, config: dict[str, Any]) -> None:
    existing = config.get("quantization_config")
    if existing:
        method = existing.get("quant_method", "?") if isinstance(existing, dict) else "?"
        raise InvalidModel(path, f"already quantized ({method}); requantizing would round twice",
                           "requantize the full-precision merged model instead")


def _check_out_dir(out_dir: Path, sources: Sequence[Path], force: bool) -> None:
    resolved = out_dir.resolve()
    for src in sources:
        if resolved == src.resolve():
            raise UsageError(f"--out {out_dir} is a source directory",
                             "write the quantized model somewhere new")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise AlreadyExists(str(out_dir), "it is a file; choose another --out")
        if any(out_dir.iterdir()) and not force:
            raise AlreadyExists(f"{out_dir} (not empty)", "pass --force to replace it")


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidModel(model_dir, "no config.json",
                           "requantize a transformers model directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidModel(model_dir, "config.json is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidModel(model_dir, "config.json is not a JSON object")
    return data


def quantization_config(to: str, *, double_quant: bool = False, compute_dtype: str = "bf16",
                        skip_modules: Sequence[str] = ()) -> dict[str, Any]:
    """The `quantization_config` dict for config.json, built by transformers' BitsAndBytesConfig."""
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {"llm_int8_skip_modules": list(skip_modules)}
    if to == "int8":
        kwargs["load_in_8bit"] = True
    else:
        kwargs.update(load_in_4bit=True, bnb_4bit_quant_type=to,
                      bnb_4bit_use_double_quant=double_quant,
                      bnb_4bit_compute_dtype=COMPUTE_DTYPES[compute_dtype])
    return BitsAndBytesConfig(**kwargs).to_dict()


# -- which tensors become bitsandbytes layers ------------------------------------------------
@dataclass
class _Target:
    module: str  # the module's name in the model (what PEFT and skip patterns see)
    conv1d: bool  # GPT-2 style Conv1D: the stored weight is (in, out)


def _linear_targets(model_dir: Path, config: dict[str, Any], names: Sequence[str],
                    skip_modules: Sequence[str]) -> tuple[dict[str, _Target], list[str]]:
    """Checkpoint weight name -> target, for exactly the layers transformers will convert.

    Returns the targets and the skip patterns to write into the config: the user's patterns
    plus every Linear module whose weight is not in the checkpoint (e.g. a tied lm_head).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.quantizers_utils import should_convert_module

    try:
        cfg = AutoConfig.for_model(**{k: v for k, v in config.items()
                                      if k not in ("quantization_config",)})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception as error:  # unknown model_type, or not a causal LM
        raise InvalidModel(model_dir, f"transformers cannot build this model: {error}",
                           "requantize a causal LM that transformers supports") from None
    prefix = getattr(model, "base_model_prefix", "") or ""
    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    patterns = list(skip_modules) + keep_fp32
    linears = {n: isinstance(m, Conv1D) for n, m in model.named_modules()
               if type(m) is torch.nn.Linear or isinstance(m, Conv1D)}
    present = set(names)
    targets: dict[str, _Target] = {}
    found: set[str] = set()
    for key in names:
        if not key.endswith(".weight"):
            continue
        module = key[: -len(".weight")]
        if module not in linears and prefix and f"{prefix}.{module}" in linears:
            module = f"{prefix}.{module}"
        if module not in linears:
            continue
        found.add(module)
        if should_convert_module(module, patterns):
            targets[key] = _Target(module, linears[module])
    missing = [m for m in linears if m not in found and should_convert_module(m, patterns)
               and f"{m}.weight" not in present]
    return targets, list(skip_modules) + missing


# -- bitsandbytes -----------------------------------------------------------------------------
def quantize_weight(weight: torch.Tensor, to: str, *, double_quant: bool = False,
                    blocksize: int = 64) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Quantize one Linear weight (out, in) as bitsandbytes' Linear4bit / Linear8bitLt would.

    Returns the tensors to save under "<module>." (keys as bitsandbytes' own state dict writes
    them) and the dequantized weight (float32) that the loaded layer will compute with.
    """
    import bitsandbytes.functional as bnbf
    import torch

    if to == "int8":
        # Int8Params._quantize casts to float16 before its row-wise absmax quantization
        cb, scb, _ = bnbf.int8_vectorwise_quant(weight.contiguous().half())
        dequant = bnbf.int8_vectorwise_dequant(cb, scb).float()
        tensors = {"weight": cb, "SCB": scb, "weight_format": torch.tensor(0, dtype=torch.uint8)}
        return tensors, dequant
    packed, state = bnbf.quantize_4bit(weight.contiguous(), blocksize=blocksize, quant_type=to,
                                       compress_statistics=double_quant,
                                       quant_storage=torch.uint8)
    dequant = bnbf.dequantize_4bit(packed, state).float()
    tensors = {"weight": packed}
    for key, value in state.as_dict(packed=True).items():
        tensors[f"weight.{key}"] = value
    return tensors, dequant


def _low_rank(residual: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B @ A the best rank-`rank` approximation of `residual` (out, in)."""
    import torch

    rank = min(rank, *residual.shape)
    if min(residual.shape) <= _EXACT_SVD_MAX_DIM:
        u, s, vh = torch.linalg.svd(residual, full_matrices=False)
        v = vh.mH
    else:
        # a few power iterations: quantization residuals have a flat spectrum, so the
        # randomized range finder needs them to find the top directions
        u, s, v = torch.svd_lowrank(residual, q=min(rank + 16, *residual.shape), niter=6)
    b = (u[:, :rank] * s[:rank]).contiguous()
    a = v[:, :rank].mT.contiguous()
    return b, a


# -- writing safetensors shards without holding them -----------------------------------------
class _ShardWriter:
    """Append tensors to shards of at most `shard_size` bytes; headers are written at the end.

    Tensor bytes go to a scratch file first, then header + bytes are copied into the shard, so
    memory holds one tensor at a time whatever the shard size.
    """

    def __init__(self, directory: Path, stem: str, shard_size: int,
                 metadata: dict[str, str]) -> None:
        self.directory = directory
        self.stem = stem
        self.shard_size = shard_size
        self.metadata = metadata
        self.files: list[Path] = []
        self.weight_map: dict[str, int] = {}
        self.total = 0
        self._entries: list[tuple[str, str, list[int], int]] = []
        self._size = 0
        self._scratch: BinaryIO | None = None

    def add(self, name: str, tensor: torch.Tensor) -> None:
        import torch

        dtype = _ST_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise UsageError(f"tensor {name} has dtype {tensor.dtype}, which safetensors "
                             "cannot store")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        if self._entries and self._size + data.nbytes > self.shard_size:
            self._finish_shard()
        if self._scratch is None:
            self._scratch = open(self.directory / f".{self.stem}.scratch", "wb")
        self._scratch.write(memoryview(data))
        self._entries.append((name, dtype, list(tensor.shape), data.nbytes))
        self._size += data.nbytes
        self.weight_map[name] = len(self.files)
        self.total += data.nbytes

    def _finish_shard(self) -> None:
        header: dict[str, Any] = {"__metadata__": self.metadata}
        offset = 0
        for name, dtype, shape, nbytes in self._entries:
            header[name] = {"dtype": dtype, "shape": shape,
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % _HEADER_ALIGN)  # 8-byte aligned data, as safetensors does
        scratch = self.directory / f".{self.stem}.scratch"
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        shard = self.directory / f".{self.stem}-{len(self.files)}.part"
        with open(shard, "wb") as out:
            out.write(struct.pack("<Q", len(blob)) + blob)
            if scratch.exists():
                with open(scratch, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        scratch.unlink(missing_ok=True)
        self.files.append(shard)
        self._entries, self._size = [], 0

    def close(self) -> list[str]:
        """Finish the last shard, give shards their final names (+ index); return the names."""
        if self._entries or not self.files:
            self._finish_shard()
        n = len(self.files)
        names = ([f"{self.stem}.safetensors"] if n == 1 else
                 [f"{self.stem}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        for part, name in zip(self.files, names, strict=True):
            os.replace(part, self.directory / name)
        if n > 1:
            index = {"metadata": {"total_size": self.total},
                     "weight_map": {k: names[i] for k, i in self.weight_map.items()}}
            (self.directory / f"{self.stem}{INDEX_SUFFIX}").write_text(
                json.dumps(index, indent=2))
        return names

    def abort(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None


# -- the streaming core -----------------------------------------------------------------------
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
        return self._handle.get_tensor(name).float()

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


def _torch_dtype(st_dtype: str) -> torch.dtype:
    import torch

    for name, st in _ST_DTYPES.items():
        if st == st_dtype:
            return getattr(torch, name)  # type: ignore[no-any-return]
    return torch.float32


def _estimate_bytes(ckpt: Checkpoint, targets: dict[str, _Target], to: str, blocksize: int,
                    compensate_rank: int | None) -> int:
    total = 0
    for name, info in ckpt.tensors.items():
        if name in targets:
            per = 0.5 if to != "int8" else 1.0
            total += int(info.numel * per) + info.shape[0] * 4 + info.numel // blocksize * 4 + 512
            if compensate_rank:
                total += compensate_rank * sum(info.shape) * 4
        else:
            total += int(info.numel * DTYPE_SIZES.get(info.dtype, 4))
    return total


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _files_to_copy(model_dir: Path) -> list[Path]:
    """Tokenizer, generation config and other small files; never weights or stale records."""
    out = []
    for p in sorted(model_dir.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.name == "config.json":
            continue
        if p.name.endswith(_WEIGHT_SUFFIXES) or p.name.endswith(".index.json"):
            continue
        if p.name in _RECORDS:
            continue
        out.append(p)
    return out


def _norm_ratio(num: float, den: float | None) -> float | None:
    if den is None or den <= 0.0:
        return None
    return num / den


def _overall(layers: list[LayerError]) -> dict[str, float | None]:
    """Errors over all quantized layers together: sqrt(sum err^2) / sqrt(sum ref^2)."""
    err2 = sum(x.error_norm ** 2 for x in layers)
    w2 = sum(x.weight_norm ** 2 for x in layers)
    with_delta = [x for x in layers if x.delta_norm]
    d2 = sum((x.delta_norm or 0.0) ** 2 for x in with_delta)
    derr2 = sum(x.error_norm ** 2 for x in with_delta)
    out: dict[str, float | None] = {
        "rel_error": _norm_ratio(math.sqrt(err2), math.sqrt(w2)),
        "error_vs_delta": _norm_ratio(math.sqrt(derr2), math.sqrt(d2)) if with_delta else None,
        "compensated_rel_error": None,
        "compensated_error_vs_delta": None,
        "layers_with_delta": float(len(with_delta)),
    }
    if layers and all(x.compensated_error_norm is not None for x in layers):
        c2 = sum((x.compensated_error_norm or 0.0) ** 2 for x in layers)
        out["compensated_rel_error"] = _norm_ratio(math.sqrt(c2), math.sqrt(w2))
        if with_delta:
            dc2 = sum((x.compensated_error_norm or 0.0) ** 2 for x in with_delta)
            out["compensated_error_vs_delta"] = _norm_ratio(math.sqrt(dc2), math.sqrt(d2))
    return out


def _requantize(
    *,
    ckpt: Checkpoint,
    tensors: Iterator[tuple[str, torch.Tensor]],
    config_dir: Path,
    out_dir: Path,
    sources: Sequence[Path],
    to: str,
    double_quant: bool,
    compute_dtype: str,
    blocksize: int,
    skip_modules: Sequence[str],
    compensate_rank: int | None,
    force: bool,
    delta_source: Path | None,
    provenance: dict[str, Any],
    shard_size: int,
    on_progress: Progress | None,
) -> QuantizeResult:
    import torch

    started = time.perf_counter()
    _check_options(to, compute_dtype, blocksize, compensate_rank)
    config = _read_config(config_dir)
    _check_source(config_dir, config)
    _check_out_dir(out_dir, sources, force)
    _check_bitsandbytes(to, blocksize)
    infos = ckpt.tensors
    targets, written_skips = _linear_targets(config_dir, config, list(infos), skip_modules)
    if not targets:
        raise InvalidModel(config_dir, "no Linear weights to quantize",
                           "check --skip-modules; embeddings and skipped modules stay as they are")
    needed = _estimate_bytes(ckpt, targets, to, blocksize, compensate_rank)
    free = _free_bytes(out_dir.parent)
    # each shard exists twice for a moment (scratch data + finished shard)
    if needed + min(needed, shard_size) + (16 << 20) > free:
        raise InsufficientDisk(out_dir.parent, needed, free)
    qconfig = quantization_config(to, double_quant=double_quant, compute_dtype=compute_dtype,
                                  skip_modules=written_skips)

    from registry import __version__

    facts = {**provenance, "to": to, "double_quant": double_quant, "blocksize": blocksize,
             "compute_dtype": compute_dtype, "adapt_version": __version__}
    metadata = {"format": "pt", "adapt_quant": json.dumps(facts, sort_keys=True)}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.adapt-partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    writer = _ShardWriter(tmp, "model", shard_size, metadata)
    comp_writer: _ShardWriter | None = None
    if compensate_rank:
        (tmp / COMPENSATION_DIR).mkdir()
        comp_writer = _ShardWriter(tmp / COMPENSATION_DIR, "adapter_model", 1 << 62,
                                   {"format": "pt"})
    deltas = _DeltaReader(delta_source) if delta_source is not None else None
    layers: list[LayerError] = []
    kept = 0
    total_src = sum(i.nbytes for i in infos.values())
    done = 0
    try:
        for name, tensor in tensors:
            info = infos.get(name)
            target = targets.get(name)
            if target is None:
                if info is not None and tensor.is_floating_point():
                    tensor = tensor.to(_torch_dtype(info.dtype))
                writer.add(name, tensor)
                kept += 1
            else:
                with torch.no_grad():
                    layers.append(_quantize_layer(
                        name, tensor, target, info.dtype if info else "F32", writer, comp_writer,
                        deltas, to=to, double_quant=double_quant, blocksize=blocksize,
                        rank=compensate_rank))
            del tensor
            done += info.nbytes if info is not None else 0
            if on_progress is not None:
                on_progress(done, total_src)
        files = writer.close()
        config["quantization_config"] = qconfig
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copied = []
        for p in _files_to_copy(config_dir):
            shutil.copy2(p, tmp / p.name)
            copied.append(p.name)
        overall = _overall(layers)
        if comp_writer is not None and compensate_rank:
            comp_writer.close()
            _write_compensation_config(tmp / COMPENSATION_DIR, out_dir, compensate_rank,
                                       [x.module for x in layers])
        result = QuantizeResult(
            out_dir=out_dir, to=to, double_quant=double_quant, compute_dtype=compute_dtype,
            blocksize=blocksize, skip_modules=written_skips, quantization_config=qconfig,
            files=files, total_bytes=writer.total, source_bytes=total_src, layers=layers,
            overall=overall, compensate_rank=compensate_rank,
            compensation_dir=out_dir / COMPENSATION_DIR if compensate_rank else None,
            provenance=facts, seconds=time.perf_counter() - started, kept_tensors=kept,
            copied_files=copied,
        )
        record = {**result.to_dict(),
                  "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (tmp / QUANT_RECORD).write_text(json.dumps(record, indent=2))
        _swap_into_place(tmp, out_dir)
    except BaseException:
        writer.abort()
        if comp_writer is not None:
            comp_writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if deltas is not None:
            deltas.close()
    result.seconds = time.perf_counter() - started
    return result


def _quantize_layer(
    name: str,
    tensor: torch.Tensor,
    target: _Target,
    stored_dtype: str,
    writer: _ShardWriter,
    comp_writer: _ShardWriter | None,
    deltas: _DeltaReader | None,
    *,
    to: str,
    double_quant: bool,
    blocksize: int,
    rank: int | None,
) -> LayerError:
    """Quantize one weight, write its tensors (and correction), and measure the error."""
    reference = tensor.float()
    if target.conv1d:  # bitsandbytes layers are (out, in); transformers transposes Conv1D too
        reference = reference.mT
    reference = reference.contiguous()
    # quantize what `from_pretrained` of the merged model would see: the stored dtype
    stored = reference.to(_torch_dtype(stored_dtype))
    saved, dequant = quantize_weight(stored, to, double_quant=double_quant, blocksize=blocksize)
    module_key = name[: -len("weight")]
    for key, value in saved.items():
        writer.add(module_key + key, value)
    residual = reference - dequant
    del dequant, stored
    weight_norm = float(torch_norm(reference))
    error_norm = float(torch_norm(residual))
    delta_norm: float | None = None
    if deltas is not None:
        base = deltas.get(name)
        if base is not None:
            if target.conv1d:
                base = base.mT
            delta_norm = float(torch_norm(reference - base))
            del base
    layer = LayerError(
        module=target.module, shape=tuple(reference.shape), weight_norm=weight_norm,
        error_norm=error_norm, rel_error=_norm_ratio(error_norm, weight_norm) or 0.0,
        delta_norm=delta_norm, error_vs_delta=_norm_ratio(error_norm, delta_norm),
    )
    if rank and comp_writer is not None:
        b, a = _low_rank(residual, rank)
        prefix = f"base_model.model.{target.module}"
        comp_writer.add(f"{prefix}.lora_A.weight", a)
        comp_writer.add(f"{prefix}.lora_B.weight", b)
        left = float(torch_norm(residual - b @ a))
        layer.compensated_error_norm = left
        layer.compensated_rel_error = _norm_ratio(left, weight_norm)
        layer.compensated_error_vs_delta = _norm_ratio(left, delta_norm)
    return layer


def torch_norm(tensor: torch.Tensor) -> float:
    """Frobenius norm in float64 accumulation (float32 sums drift on 4096x4096 matrices)."""
    import torch

    return float(torch.linalg.vector_norm(tensor.reshape(-1), dtype=torch.float64))


def _write_compensation_config(directory: Path, out_dir: Path, rank: int,
                               modules: list[str]) -> None:
    """adapter_config.json for the correction: plain LoRA, scale 1 (alpha = r)."""
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(modules),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        base_model_name_or_path=str(out_dir.resolve()), inference_mode=True)
    config.save_pretrained(str(directory))


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temp dir to out_dir; an old out_dir (force) is removed after."""
    if out_dir.exists() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.adapt-old-{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


# -- public entry points ----------------------------------------------------------------------
def requantize_model(
    src_dir: Path,
    out_dir: Path,
    *,
    to: str,
    double_quant: bool = False,
    compute_dtype: str = "bf16",
    blocksize: int = 64,
    skip_modules: Sequence[str] = ("lm_head",),
    compensate_rank: int | None = None,
    force: bool = False,
    delta_source: Path | None = None,
    provenance: dict[str, Any] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize every Linear weight of a model directory into a bitsandbytes checkpoint.

    to: "nf4", "fp4" or "int8". double_quant: also quantize the 4-bit absmax statistics.
    compute_dtype: "bf16", "fp16" or "fp32" for the 4-bit layers' matmuls.
    skip_modules: module name patterns (transformers' llm_int8_skip_modules) kept unquantized.
    compensate_rank: fit a rank-R LoRA to each residual, saved in out_dir/compensation.
    delta_source: the base the source was merged from: errors are then also reported
        relative to ||W' - W||.
    on_progress: called with (source bytes read, total source bytes).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    ckpt = open_checkpoint(src_dir)
    sources = [src_dir] + ([Path(delta_source)] if delta_source else [])
    facts = dict(provenance or {})
    facts.setdefault("source_path", str(src_dir.resolve()))
    return _requantize(
        ckpt=ckpt, tensors=_iter_checkpoint(ckpt), config_dir=src_dir, out_dir=out_dir,
        sources=sources, to=to, double_quant=double_quant, compute_dtype=compute_dtype,
        blocksize=blocksize, skip_modules=skip_modules, compensate_rank=compensate_rank,
        force=force, delta_source=Path(delta_source) if delta_source else None,
        provenance=facts, shard_size=shard_size, on_progress=on_progress,
    )


def requantize_merged(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    to: str,
    double_quant: bool = False,
    compute_dtype: str = "bf16",
    blocksize: int = 64,
    skip_modules: Sequence[str] = ("lm_head",),
    compensate_rank: int | None = None,
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_progress: Progress | None = None,
) -> QuantizeResult:
    """Merge an adapter into its base and quantize, in one streaming pass (no merged copy).

    Weights are cast to the base's dtype before quantizing, exactly as merging to disk and then
    loading with BitsAndBytesConfig would; errors are measured against the float32 merge and
    also reported relative to each layer's delta.
    """
    from registry.ops.merge import iter_merged_tensors

    adapter_dir, base_dir, out_dir = Path(adapter_dir), Path(base_dir), Path(out_dir)
    _check_options(to, compute_dtype, blocksize, compensate_rank)
    _check_out_dir(out_dir, [adapter_dir, base_dir], force)
    ckpt = open_checkpoint(base_dir)
    # checks of the adapter against the base happen here, before anything is written
    tensors = iter_merged_tensors(adapter_dir, base_dir)
    facts = dict(provenance or {})
    facts.setdefault("adapter_path", str(adapter_dir.resolve()))
    facts.setdefault("base_path", str(base_dir.resolve()))
    return _requantize(
        ckpt=ckpt, tensors=tensors, config_dir=base_dir, out_dir=out_dir,
        sources=[adapter_dir, base_dir], to=to, double_quant=double_quant,
        compute_dtype=compute_dtype, blocksize=blocksize, skip_modules=skip_modules,
        compensate_rank=compensate_rank, force=force, delta_source=base_dir,
        provenance=facts, shard_size=shard_size, on_progress=on_progress,
    )


# -- the registry side ------------------------------------------------------------------------
def record_quantized(
    reg: Registry,
    src_fingerprint: str | None,
    out_dir: Path,
    result: QuantizeResult,
    source_version_id: int | None,
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
        "worst_layer": _worst(result.layers),
        "compensate_rank": result.compensate_rank,
        "compensation_dir": str(result.compensation_dir) if result.compensation_dir else None,
        "provenance": result.provenance,
    }
    return reg.add_base(out_dir, kind="quantized", source_version_id=source_version_id,
                        parent_fingerprint=src_fingerprint, details=details)


def _worst(layers: list[LayerError]) -> dict[str, Any] | None:
    if not layers:
        return None
    worst = max(layers, key=lambda x: x.rel_error)
    return {"module": worst.module, "rel_error": worst.rel_error,
            "error_vs_delta": worst.error_vs_delta}


def requantize_into_registry(
    reg: Registry,
    out_dir: Path,
    *,
    src_dir: Path | None = None,
    adapter_ref: str | None = None,
    base_dir: Path | None = None,
    to: str,
    double_quant: bool = False,
    compute_dtype: str = "bf16",
    blocksize: int = 64,
    skip_modules: Sequence[str] = ("lm_head",),
    compensate_rank: int | None = None,
    force: bool = False,
    on_progress: Progress | None = None,
) -> tuple[QuantizeResult, BaseInfo]:
    """`adapt requantize`: quantize SRC, or merge ADAPTER_REF into BASE and quantize; record it."""
    options: dict[str, Any] = dict(
        to=to, double_quant=double_quant, compute_dtype=compute_dtype, blocksize=blocksize,
        skip_modules=skip_modules, compensate_rank=compensate_rank, force=force,
        on_progress=on_progress)
    if adapter_ref is not None:
        if src_dir is not None or base_dir is None:
            raise UsageError("--adapter needs --base and no SRC",
                             "adapt requantize --adapter NAME --base DIR --to nf4 --out DIR")
        _check_options(to, compute_dtype, blocksize, compensate_rank)
        version = reg.resolve(adapter_ref)
        adapter_dir = reg.checkout(version)
        base_fp = reg.fingerprint(base_dir).fingerprint
        provenance = {"adapter_ref": version.ref, "adapter_digest": version.digest,
                      "base_fingerprint": base_fp, "base_path": str(Path(base_dir).resolve())}
        result = requantize_merged(adapter_dir, base_dir, out_dir, provenance=provenance,
                                   **options)
        return result, record_quantized(reg, base_fp, out_dir, result, version.id)
    if src_dir is None:
        raise UsageError("nothing to quantize", "pass SRC, or --adapter REF --base DIR")
    if base_dir is not None:
        raise UsageError("--base goes with --adapter", "pass SRC alone, or --adapter and --base")
    _check_options(to, compute_dtype, blocksize, compensate_rank)
    src_fp = reg.fingerprint(src_dir).fingerprint
    result = requantize_model(src_dir, out_dir, provenance={"source_fingerprint": src_fp},
                              **options)
    return result, record_quantized(reg, src_fp, out_dir, result, None)
