"""The one safetensors shard writer: headers, tensor bytes on a background thread, the index.

Two ways to feed it, for the two kinds of output:

- planned (merge): every file and tensor (name, dtype, shape) is known from the source headers
  before any weight is read, so each shard's header is written first and tensor bytes follow;
  unchanged tensors are copied file to file by the kernel without entering memory.
- appended (requantize): sizes are known only once a tensor is made (bitsandbytes' quant-state
  tensors), so each shard's bytes go to a scratch file and the header is written when the shard
  is full, then the scratch bytes are copied in behind it.

Either way memory holds at most a couple of tensors, and the disk writes overlap the caller's
math on the next tensor.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import INDEX_SUFFIX
from registry.errors import InvalidModel, UnsupportedMethod, UsageError
from registry.io.dtypes import st_dtype, torch_dtype
from registry.safetensors_header import DTYPE_SIZES

if TYPE_CHECKING:
    import torch

HEADER_ALIGN = 8  # tensor data starts 8-byte aligned, as safetensors itself writes it


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a shard's header describes it."""

    name: str
    dtype: str  # safetensors dtype
    shape: tuple[int, ...]
    nbytes: int

    @classmethod
    def of(cls, name: str, dtype: str, shape: Sequence[int]) -> TensorEntry:
        numel = 1
        for d in shape:
            numel *= d
        return cls(name, dtype, tuple(shape), int(numel * DTYPE_SIZES[dtype]))


@dataclass
class ShardPlan:
    """One output file and the tensors it holds, in order."""

    file: str
    entries: list[TensorEntry] = field(default_factory=list)

    @property
    def data_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries)


@dataclass(frozen=True)
class RawBytes:
    """A tensor's bytes in an existing file, copied without loading them."""

    path: Path
    start: int
    nbytes: int


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
    except (ValueError, OverflowError):
        raise UsageError(f"invalid size {text!r}", "write it like 5GB, 500MB or 2GiB") from None
    if value <= 0:
        raise UsageError(f"invalid size {text!r}", "the shard size must be positive")
    return value


def shard_names(stem: str, n: int) -> list[str]:
    """transformers' names: `model.safetensors`, or `model-00001-of-00003.safetensors`..."""
    if n == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def split_by_size(entries: Sequence[TensorEntry], shard_size: int,
                  stem: str = "model") -> list[ShardPlan]:
    """Consecutive entries grouped into shards of at most shard_size bytes (one tensor at least)."""
    groups: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if groups[-1] and size + entry.nbytes > shard_size:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.nbytes
    names = shard_names(stem, len(groups))
    return [ShardPlan(name, group) for name, group in zip(names, groups, strict=True)]


def header_bytes(entries: Sequence[TensorEntry], metadata: dict[str, str]) -> bytes:
    """A shard's length prefix and JSON header, padded so tensor data starts aligned."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape),
                          "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % HEADER_ALIGN)
    return struct.pack("<Q", len(blob)) + blob


def tensor_bytes(tensor: torch.Tensor, entry: TensorEntry) -> Any:
    """The tensor cast once to the entry's dtype, as a flat uint8 numpy view of its bytes."""
    import torch

    if st_dtype(tensor) != entry.dtype:
        tensor = tensor.to(torch_dtype(entry.dtype))
    if tuple(tensor.shape) != entry.shape:
        raise UnsupportedMethod("tensor", "written", f"{entry.name} came out as "
                                f"{list(tensor.shape)}, planned {list(entry.shape)}")
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    if data.nbytes != entry.nbytes:
        raise UnsupportedMethod("tensor", "written", f"{entry.name}: byte count mismatch")
    return data


class ShardWriter:
    """Write tensors, in order, into safetensors shards in `directory`, plus the index.

    plan: the files and tensors to write (planned mode); tensors are cast to the planned dtype.
    Without a plan, tensors are kept in their own dtype and grouped into shards of at most
    shard_size bytes named after stem (appended mode).
    An index (`<stem>.safetensors.index.json`) is written when there is more than one file or
    the one file has another name, since transformers only finds other names through it.
    """

    def __init__(
        self,
        directory: Path,
        metadata: dict[str, str],
        *,
        plan: Sequence[ShardPlan] | None = None,
        shard_size: int | None = None,
        stem: str = "model",
        depth: int = 2,
    ) -> None:
        if plan is None and shard_size is None:
            raise ValueError("ShardWriter needs a plan or a shard size")
        self.directory = Path(directory)
        self.metadata = metadata
        self.stem = stem
        self.total = 0
        self._plan = list(plan) if plan is not None else None
        self._shard_size = shard_size or 0
        self._next = (0, 0)  # planned mode: (shard, entry) to write next
        self._shards: list[ShardPlan] = []  # appended mode: finished shards (as .part files)
        self._current: list[TensorEntry] = []
        self._current_bytes = 0
        self._closed = False
        self._thread = _WriterThread(depth)

    # -- feeding ---------------------------------------------------------------------------
    def add(self, name: str, item: torch.Tensor | RawBytes) -> TensorEntry:
        """Queue one tensor (or, in planned mode, raw bytes of an unchanged one) for writing."""
        if self._plan is not None:
            return self._add_planned(name, item)
        if isinstance(item, RawBytes):
            raise TypeError("raw bytes need a planned layout")
        entry = TensorEntry.of(name, st_dtype(item), tuple(item.shape))
        if self._current and self._current_bytes + entry.nbytes > self._shard_size:
            self._finish_appended_shard()
        if not self._current:
            self._thread.put(("open", self._scratch()))
        self._thread.put(("bytes", tensor_bytes(item, entry)))
        self._current.append(entry)
        self._current_bytes += entry.nbytes
        self.total += entry.nbytes
        return entry

    def _add_planned(self, name: str, item: torch.Tensor | RawBytes) -> TensorEntry:
        assert self._plan is not None
        shard_i, entry_i = self._skip_finished_shards()
        if shard_i >= len(self._plan):
            raise RuntimeError(f"shard writer: {name} is beyond the planned layout")
        entry = self._plan[shard_i].entries[entry_i]
        if entry.name != name:
            # the plan and the caller's order disagree only on a bug; fail loudly
            raise RuntimeError(f"shard writer: got {name}, planned {entry.name}")
        if entry_i == 0:
            self._start_planned(shard_i)
        if isinstance(item, RawBytes):
            if item.nbytes != entry.nbytes:
                raise RuntimeError(f"shard writer: {name} has {item.nbytes} bytes, "
                                   f"planned {entry.nbytes}")
            self._thread.put(("copy", item))
        else:
            self._thread.put(("bytes", tensor_bytes(item, entry)))
        self.total += entry.nbytes
        self._next = (shard_i, entry_i + 1)
        return entry

    def _skip_finished_shards(self) -> tuple[int, int]:
        """Move past shards with nothing left to write; an empty one gets its header here."""
        assert self._plan is not None
        shard_i, entry_i = self._next
        while shard_i < len(self._plan) and entry_i >= len(self._plan[shard_i].entries):
            if entry_i == 0:
                self._start_planned(shard_i)
            shard_i, entry_i = shard_i + 1, 0
        self._next = (shard_i, entry_i)
        return self._next

    def _start_planned(self, shard_i: int) -> None:
        assert self._plan is not None
        shard = self._plan[shard_i]
        self._thread.put(("open", self.directory / shard.file))
        self._thread.put(("bytes", header_bytes(shard.entries, self.metadata)))

    def _scratch(self) -> Path:
        return self.directory / f".{self.stem}-{len(self._shards)}.scratch"

    def _finish_appended_shard(self) -> None:
        scratch = self._scratch()
        part = self.directory / f".{self.stem}-{len(self._shards)}.part"
        self._thread.put(("open", part))
        self._thread.put(("bytes", header_bytes(self._current, self.metadata)))
        if self._current:
            self._thread.put(("copy", RawBytes(scratch, 0, self._current_bytes)))
            self._thread.put(("drop", scratch))
        self._shards.append(ShardPlan(part.name, self._current))
        self._current, self._current_bytes = [], 0

    # -- finishing ---------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Finish every write, name the files, write the index; return the file names."""
        if self._closed:
            raise RuntimeError("shard writer already closed")
        if self._plan is not None:
            shard_i, _ = self._skip_finished_shards()
            if shard_i < len(self._plan):
                raise RuntimeError(f"shard writer: {self._plan[shard_i].file} is incomplete")
        elif self._current or not self._shards:
            self._finish_appended_shard()
        self._closed = True
        self._thread.finish()
        if self._plan is not None:
            names = [s.file for s in self._plan]
            weight_map = {e.name: s.file for s in self._plan for e in s.entries}
        else:
            names = shard_names(self.stem, len(self._shards))
            weight_map = {}
            for shard, name in zip(self._shards, names, strict=True):
                os.replace(self.directory / shard.file, self.directory / name)
                weight_map.update(dict.fromkeys((e.name for e in shard.entries), name))
        if len(names) > 1 or names[0] != f"{self.stem}.safetensors":
            index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            (self.directory / f"{self.stem}{INDEX_SUFFIX}").write_text(
                json.dumps(index, indent=2))
        return names

    def abort(self) -> None:
        """Stop writing; files already begun stay for the caller to remove with its temp dir."""
        if not self._closed:
            self._closed = True
            self._thread.finish(raise_error=False)


class _WriterThread:
    """Runs file writes on a thread; at most `depth` jobs wait, which bounds the extra memory."""

    def __init__(self, depth: int) -> None:
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="adapt-shard-writer",
                                        daemon=True)
        self._thread.start()

    def put(self, job: tuple[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put(job)

    def finish(self, raise_error: bool = True) -> None:
        """Wait for every queued job; re-raise the thread's error, if any."""
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error

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
                    elif kind == "copy":
                        if payload.path not in sources:
                            sources[payload.path] = os.open(payload.path, os.O_RDONLY)
                        _copy_range(sources[payload.path], payload.start, payload.nbytes, out)
                    elif kind == "drop":  # a scratch file, fully copied
                        fd = sources.pop(payload, None)
                        if fd is not None:
                            os.close(fd)
                        Path(payload).unlink(missing_ok=True)
                except BaseException as error:  # handed to the producer by put()/finish()
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
            raise InvalidModel(f"fd {src_fd}", "a source file is shorter than its header says")
        _write_all(out, memoryview(chunk))
        done += len(chunk)
