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
from collections.abc import Callable, Iterator
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
    InvalidModel,
    UnsupportedMethod,
    UsageError,
)
from registry.ops.deltas import check_mergeable, merged_bias, merged_weight, module_factors
from registry.peft_dir import AdapterDir, load_tensors, read_adapter_dir
from registry.safetensors_header import DTYPE_SIZES, TensorInfo

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


def _read_tensor(handle: Any, info: TensorInfo) -> torch.Tensor:
    """Read one tensor's bytes at its header offsets into a fresh tensor."""
    import torch

    dtype = _torch_dtype(info.dtype)
    buffer = torch.empty(info.nbytes, dtype=torch.uint8)
    view = memoryview(buffer.numpy())
    handle.seek(info.start)
    got = 0
    while got < info.nbytes:
        n = handle.readinto(view[got:])
        if not n:
            raise InvalidModel(handle.name, f"tensor {info.name} is truncated")
        got += n
    return buffer.view(dtype).reshape(info.shape)


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


@dataclass(frozen=True)
class _RawBytes:
    """An unchanged tensor's bytes in the base file, to copy without loading them."""

    path: Path
    start: int
    nbytes: int


def _stream(
    prep: _Prepared,
    *,
    base_quantization: str | None,
    on_progress: Progress | None,
    raw_ok: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, Any, bool]]:
    """(name, tensor, changed) in checkpoint order; changed tensors are float32.

    raw_ok: for names it accepts, an unchanged tensor comes as _RawBytes instead of a tensor.

    One base file is open at a time and one tensor is held at a time. Tensors are read with
    plain reads at the offsets of the validated safetensors header rather than through an
    mmap (as safetensors.safe_open does): mapped pages count towards the process's resident
    memory until the file is closed, which would make peak memory grow to a whole shard.
    """
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
                    handle.close()
                handle = open(path, "rb", buffering=0)
                current = path
            info = infos[name]
            untouched = (name not in prep.replacements and name not in prep.weight_of
                         and name not in prep.bias_of)
            if untouched and raw_ok is not None and raw_ok(name):
                yield name, _RawBytes(path, info.start, info.nbytes), False
                done += info.nbytes
                if on_progress is not None:
                    on_progress(done, total)
                continue
            tensor = _read_tensor(handle, info)
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
            handle.close()
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
    items: Iterator[tuple[str, Any, bool]],
) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor, _ in items:
        yield name, tensor.float() if tensor.is_floating_point() else tensor


def _check_quantization(base_quantization: str | None) -> None:
    if base_quantization is not None and base_quantization not in BASE_QUANTIZATIONS:
        raise UsageError(f"unknown base quantization {base_quantization!r}",
                         f"use one of {', '.join(BASE_QUANTIZATIONS)}")


# -- writing ---------------------------------------------------------------------------------
@dataclass
class _Planned:
    name: str
    dtype: str  # safetensors dtype written
    shape: tuple[int, ...]
    nbytes: int


@dataclass
class _Shard:
    file: str
    entries: list[_Planned]

    @property
    def data_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries)


def parse_size(text: str | int | None) -> int | None:
    """'5GB' -> 5_000_000_000 (GiB/MiB/KiB are powers of two, as transformers reads them)."""
    if text is None or isinstance(text, int):
        return text
    raw = text.strip().upper()
    units = {"GIB": 1 << 30, "MIB": 1 << 20, "KIB": 1 << 10, "TB": 10**12, "GB": 10**9,
             "MB": 10**6, "KB": 10**3, "B": 1}
    unit = next((u for u in units if raw.endswith(u)), None)
    number, factor = (raw[: -len(unit)].strip(), units[unit]) if unit else (raw, 1)
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise UsageError(f"invalid size {text!r}", "write it like 5GB, 500MB or 2GiB") from None
    if value <= 0:
        raise UsageError(f"invalid size {text!r}", "the shard size must be positive")
    return value


def _plan(prep: _Prepared, dtype: str | None, shard_size: int | None) -> list[_Shard]:
    """Decide every output file and tensor (name, dtype, shape) before reading any weight."""
    target = DTYPES[dtype] if dtype else None
    base = prep.ckpt.tensors
    rows: list[tuple[Path | None, _Planned]] = []
    for path, name in _base_order(prep.ckpt):
        info = base[name]
        out_dtype = target if target and info.dtype in FLOAT_DTYPES else info.dtype
        rows.append((path, _planned(name, out_dtype, info.shape)))
    for name, tensor in prep.appended.items():
        own = _st_dtype(tensor)
        out_dtype = target if target and own in FLOAT_DTYPES else (
            "F32" if own in FLOAT_DTYPES else own)
        rows.append((None, _planned(name, out_dtype, tuple(tensor.shape))))
    if shard_size is None:
        if prep.ckpt.index_file is None and len(prep.ckpt.files) == 1:
            return [_Shard(prep.ckpt.files[0].name, [p for _, p in rows])]
        # keep the base's sharding: same files, same assignment; new tensors join the last
        shards = {f: _Shard(f.name, []) for f in prep.ckpt.files}
        last = prep.ckpt.files[-1]
        for source, planned in rows:
            shards[source or last].entries.append(planned)
        return list(shards.values())
    groups: list[list[_Planned]] = [[]]
    size = 0
    for _, planned in rows:
        if groups[-1] and size + planned.nbytes > shard_size:
            groups.append([])
            size = 0
        groups[-1].append(planned)
        size += planned.nbytes
    if len(groups) == 1:
        return [_Shard("model.safetensors", groups[0])]
    n = len(groups)
    return [_Shard(f"model-{i:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups, 1)]


def _planned(name: str, dtype: str, shape: tuple[int, ...]) -> _Planned:
    numel = 1
    for d in shape:
        numel *= d
    return _Planned(name, dtype, tuple(shape), int(numel * DTYPE_SIZES[dtype]))


_TORCH_TO_ST = {"torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float32": "F32",
                "torch.float64": "F64", "torch.int8": "I8", "torch.uint8": "U8",
                "torch.int16": "I16", "torch.int32": "I32", "torch.int64": "I64",
                "torch.bool": "BOOL", "torch.float8_e4m3fn": "F8_E4M3",
                "torch.float8_e5m2": "F8_E5M2", "torch.uint16": "U16", "torch.uint32": "U32",
                "torch.uint64": "U64"}


def _st_dtype(tensor: torch.Tensor) -> str:
    try:
        return _TORCH_TO_ST[str(tensor.dtype)]
    except KeyError:
        raise UnsupportedMethod(str(tensor.dtype), "written", "no safetensors dtype") from None


def _torch_dtype(st_dtype: str) -> torch.dtype:
    import torch

    for name, st in _TORCH_TO_ST.items():
        if st == st_dtype:
            return getattr(torch, name.split(".", 1)[1])
    raise UnsupportedMethod(st_dtype, "written", "no torch dtype")


def _header_bytes(shard: _Shard, metadata: dict[str, str]) -> bytes:
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for e in shard.entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape),
                          "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    # pad with spaces so tensor data starts 8-byte aligned, as safetensors itself does
    blob += b" " * (-len(blob) % _HEADER_ALIGN)
    return struct.pack("<Q", len(blob)) + blob


def _tensor_bytes(tensor: torch.Tensor, planned: _Planned) -> Any:
    """The tensor cast once to its planned dtype, as a flat uint8 numpy view of its bytes."""
    import torch

    if _st_dtype(tensor) != planned.dtype:
        tensor = tensor.to(_torch_dtype(planned.dtype))
    if tuple(tensor.shape) != planned.shape:
        raise UnsupportedMethod("merge", "written",
                                f"{planned.name} came out as {list(tensor.shape)}, "
                                f"planned {list(planned.shape)}")
    data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
    if data.nbytes != planned.nbytes:
        raise UnsupportedMethod("merge", "written", f"{planned.name}: byte count mismatch")
    return data


class _BackgroundWriter:
    """Writes shard files on a thread so disk writes overlap the next tensor's math.

    At most `depth` tensors wait in the queue, which bounds the extra memory. Unchanged
    tensors are copied file to file by the kernel (copy_file_range) without entering memory.
    """

    def __init__(self, depth: int = 2) -> None:
        import queue
        import threading

        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="adapt-merge-writer",
                                        daemon=True)
        self._thread.start()

    def open(self, path: Path, header: bytes) -> None:
        self._put(("open", path))
        self._put(("bytes", header))

    def write(self, data: Any) -> None:
        self._put(("bytes", data))

    def copy(self, raw: _RawBytes) -> None:
        self._put(("copy", raw))

    def close(self) -> None:
        """Finish every queued write; re-raise the writer's error, if any."""
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _put(self, job: tuple[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put(job)

    def _run(self) -> None:
        out: Any = None
        sources: dict[Path, int] = {}
        try:
            while (job := self._jobs.get()) is not None:
                if self._error is not None:
                    continue  # keep draining so the producer never blocks on a dead writer
                try:
                    kind, payload = job
                    if kind == "open":
                        if out is not None:
                            out.close()
                        out = open(payload, "wb", buffering=0)
                    elif kind == "bytes":
                        _write_all(out, memoryview(payload).cast("B"))
                    else:
                        if payload.path not in sources:
                            sources[payload.path] = os.open(payload.path, os.O_RDONLY)
                        _copy_range(sources[payload.path], payload.start, payload.nbytes, out)
                except BaseException as error:  # handed to the producer by close()/_put()
                    self._error = error
        finally:
            if out is not None:
                out.close()
            for fd in sources.values():
                os.close(fd)


def _write_all(out: Any, view: memoryview) -> None:
    while view:
        n = out.write(view)
        view = view[n:]


def _copy_range(src_fd: int, start: int, nbytes: int, out: Any) -> None:
    """Append nbytes of src at start to out, in the kernel where it can."""
    done = 0
    dst_fd = out.fileno()
    try:
        while done < nbytes:
            n = os.copy_file_range(src_fd, dst_fd, nbytes - done, start + done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError):
        pass  # no copy_file_range here (or across these filesystems): copy through memory
    while done < nbytes:
        chunk = os.pread(src_fd, min(8 << 20, nbytes - done), start + done)
        if not chunk:
            raise InvalidModel(f"fd {src_fd}", "a base file is shorter than its header says")
        _write_all(out, memoryview(chunk))
        done += len(chunk)


def _files_to_copy(base_dir: Path) -> list[Path]:
    """Config, generation config, tokenizer and other small files; never stale weights."""
    out = []
    for p in sorted(base_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.name.endswith(_WEIGHT_SUFFIXES) or p.name.endswith(INDEX_SUFFIX.replace(
                ".safetensors", ".bin")) or p.name.endswith(INDEX_SUFFIX):
            continue
        if p.name == MERGE_RECORD:
            continue
        out.append(p)
    return out


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _check_out_dir(out_dir: Path, base_dir: Path, adapter_dir: Path, force: bool) -> None:
    resolved = out_dir.resolve()
    for other, what in ((base_dir, "the base model"), (adapter_dir, "the adapter")):
        if resolved == other.resolve():
            raise UsageError(f"--out {out_dir} is {what}'s directory",
                             "write the merged model somewhere new")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise AlreadyExists(str(out_dir), "it is a file; choose another --out")
        if any(out_dir.iterdir()) and not force:
            raise AlreadyExists(f"{out_dir} (not empty)", "pass --force to replace it")


def merge_adapter_into_base(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    dtype: str | None = None,
    shard_size: int | None = None,
    base_quantization: str | None = None,
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    on_progress: Progress | None = None,
) -> MergeResult:
    """Write base + adapter as a standalone model directory that transformers loads.

    dtype: "bf16", "fp16" or "fp32" for every floating tensor; None keeps the base's dtypes.
    shard_size: bytes per output shard; None keeps the base's sharding.
    base_quantization: "nf4"/"fp4" (+"-dq"): merge into dequant(quant(W)) for QLoRA adapters.
    force: replace a non-empty out_dir.
    provenance: facts to record (adapter_ref, adapter_digest, base_fingerprint...); the base
        fingerprint is computed when absent.
    on_progress: called with (bytes written, total bytes to write).
    """

    started = time.perf_counter()
    adapter_dir, base_dir, out_dir = Path(adapter_dir), Path(base_dir), Path(out_dir)
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    _check_quantization(base_quantization)
    _check_out_dir(out_dir, base_dir, adapter_dir, force)
    prep = _prepare(adapter_dir, base_dir)
    shards = _plan(prep, dtype, shard_size)

    from registry import __version__

    facts: dict[str, Any] = dict(provenance or {})
    if "base_fingerprint" not in facts:
        from registry.fingerprint import fingerprint_model

        facts["base_fingerprint"] = fingerprint_model(base_dir).fingerprint
    if "adapter_ref" not in facts:
        facts["adapter_path"] = str(adapter_dir.resolve())
    facts.update(method=prep.adapter.method, peft_type=prep.adapter.peft_type, dtype=dtype,
                 base_quantization=base_quantization, adapt_version=__version__)
    metadata = {"format": "pt", "adapt_merge": json.dumps(facts, sort_keys=True)}
    headers = {s.file: _header_bytes(s, metadata) for s in shards}
    copies = _files_to_copy(base_dir)
    total = sum(s.data_bytes for s in shards)
    needed = total + sum(len(h) for h in headers.values()) + sum(p.stat().st_size for p in copies)
    free = _free_bytes(out_dir.parent)
    if needed + (16 << 20) > free:  # a little slack for the index, config and filesystem
        raise InsufficientDisk(out_dir.parent, needed, free)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.adapt-partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_shards(prep, shards, headers, tmp, base_quantization, on_progress)
        if len(shards) > 1 or shards[0].file != "model.safetensors":
            # any other name is only found through an index, as transformers looks for it
            index = {"metadata": {"total_size": total},
                     "weight_map": {e.name: s.file for s in shards for e in s.entries}}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        copied = []
        for p in copies:
            shutil.copy2(p, tmp / p.name)
            copied.append(p.name)
        if dtype is not None:
            _set_config_dtype(tmp / "config.json", dtype)
        record = {**facts, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "files": [s.file for s in shards]}
        (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(
        out_dir=out_dir,
        files=[s.file for s in shards],
        tensors=sum(len(s.entries) for s in shards),
        merged_modules=len(prep.factors),
        replaced_tensors=len(prep.replacements) + len(prep.appended),
        total_bytes=total,
        method=prep.adapter.method,
        dtype=dtype,
        base_quantization=base_quantization,
        provenance=facts,
        seconds=time.perf_counter() - started,
        copied_files=copied,
    )


def _write_shards(
    prep: _Prepared,
    shards: list[_Shard],
    headers: dict[str, bytes],
    tmp: Path,
    base_quantization: str | None,
    on_progress: Progress | None,
) -> None:
    """Write every shard: header first, then tensors as the stream yields them, in order."""
    import torch

    planned = {e.name: e for s in shards for e in s.entries}
    base = prep.ckpt.tensors
    total = sum(s.data_bytes for s in shards)

    def raw_ok(name: str) -> bool:  # unchanged and not cast: the bytes can be copied as-is
        return planned[name].dtype == base[name].dtype

    stream = _stream(prep, base_quantization=base_quantization, on_progress=None,
                     raw_ok=raw_ok)
    writer = _BackgroundWriter()
    written = 0
    try:
        for shard in shards:
            writer.open(tmp / shard.file, headers[shard.file])
            for entry in shard.entries:
                name, item, _ = next(stream)
                if name != entry.name:
                    # the plan and the stream disagree only on a bug; fail loudly
                    raise RuntimeError(f"merge order: got {name}, planned {entry.name}")
                if isinstance(item, _RawBytes):
                    writer.copy(item)
                else:
                    with torch.no_grad():
                        writer.write(_tensor_bytes(item, entry))
                del item
                written += entry.nbytes
                if on_progress is not None:
                    on_progress(written, total)
    finally:
        writer.close()
        stream.close()


_CONFIG_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _set_config_dtype(config_path: Path, dtype: str) -> None:
    """Say the new dtype in config.json so `dtype="auto"` loads what was written."""
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return
    if not isinstance(config, dict):
        return
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
    for k in keys:
        config[k] = _CONFIG_DTYPES[dtype]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temp dir to out_dir; an old out_dir (--force) is removed after."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        os.replace(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.adapt-old-{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


# -- the registry side -----------------------------------------------------------------------
def record_merge(
    reg: Registry,
    version: VersionInfo,
    base_fingerprint: str,
    out_dir: Path,
    result: MergeResult,
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
    return reg.add_base(out_dir, kind="merged", source_version_id=version.id,
                        parent_fingerprint=base_fingerprint, details=details)


def merge_version(
    reg: Registry,
    ref: str,
    base_dir: Path,
    out_dir: Path,
    *,
    dtype: str | None = None,
    shard_size: int | None = None,
    base_quantization: str | None = None,
    force: bool = False,
    on_progress: Progress | None = None,
) -> tuple[MergeResult, BaseInfo]:
    """Merge a registered adapter version into `base_dir` and record the result (`adapt merge`)."""
    version = reg.resolve(ref)
    adapter_dir = reg.checkout(version)
    base_fingerprint = reg.fingerprint(base_dir).fingerprint
    provenance = {"adapter_ref": version.ref, "adapter_digest": version.digest,
                  "base_fingerprint": base_fingerprint}
    result = merge_adapter_into_base(
        adapter_dir, base_dir, out_dir, dtype=dtype, shard_size=shard_size,
        base_quantization=base_quantization, force=force, provenance=provenance,
        on_progress=on_progress,
    )
    return result, record_merge(reg, version, base_fingerprint, out_dir, result)
