"""Read and check a safetensors header without loading any tensor (and without torch)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from registry.safeparse import ParseLimitError, cap, load_json
from registry.terminal import has_control, printable

# bytes per element of each safetensors dtype
DTYPE_SIZES: dict[str, float] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}
MAX_HEADER = 100 * 1024 * 1024
MAX_HEADER_DEPTH = 8  # {name: {"shape": [...]}} and {"__metadata__": {...}} nest 3 deep
MAX_DIMS = 16


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    file_size: int


class HeaderError(ValueError):
    """The file is not a well-formed safetensors file."""


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate the header: offsets in bounds, contiguous, sizes match dtype x shape."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise HeaderError("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > file_size:
            raise HeaderError(
                f"header length {n} runs past the end of the file ({file_size} bytes)"
            )
        blob = f.read(n)
    try:
        header = load_json(blob, max_bytes=MAX_HEADER, max_depth=MAX_HEADER_DEPTH)
    except ParseLimitError as error:
        raise HeaderError(f"header is not usable: {error}") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str) for v in metadata.values()
    ):
        raise HeaderError("__metadata__ is not an object of strings")
    data_start = 8 + n
    data_len = file_size - data_start
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if has_control(name):  # module names reach terminals, tables and the TUI
            raise HeaderError(f"tensor name {printable(cap(name, 120))!r} holds control "
                              "characters")
        entry = _entry(info)
        if entry is None:
            raise HeaderError(f"tensor {cap(name, 120)}: malformed header entry (dtype must be a "
                              "string, shape a list of integers, data_offsets two integers)")
        dtype, shape, (begin, end) = entry
        if dtype not in DTYPE_SIZES:
            raise HeaderError(f"tensor {cap(name, 120)}: unknown dtype {cap(dtype, 20)}")
        if begin < 0 or end < begin or end > data_len:
            raise HeaderError(
                f"tensor {cap(name, 120)}: data offsets [{begin}, {end}) lie outside the "
                f"{data_len} data bytes (truncated or lying header)"
            )
        numel = 1
        for d in shape:
            if d < 0:
                raise HeaderError(f"tensor {cap(name, 120)}: negative dimension")
            numel *= d
        bits = numel * int(DTYPE_SIZES[dtype] * 8)  # integers: a huge shape cannot overflow
        expected = bits / 8 if bits < 2**64 else float("inf")
        if (end - begin) * 8 != bits:
            raise HeaderError(
                f"tensor {cap(name, 120)}: {end - begin} bytes for {dtype}{list(shape)}, "
                f"expected {expected:g}"
            )
        start, stop = data_start + begin, data_start + end
        tensors[name] = TensorInfo(name, dtype, shape, start, stop)
        spans.append((begin, end, name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            raise HeaderError(
                f"tensor {cap(name, 120)}: data offsets overlap or leave a hole at byte {cursor}"
            )
        cursor = end
    if cursor != data_len:
        raise HeaderError(f"data section is {data_len} bytes but tensors cover {cursor}")
    return SafetensorsHeader(path, tensors, dict(metadata), data_start, file_size)


def _entry(info: object) -> tuple[str, tuple[int, ...], tuple[int, int]] | None:
    """(dtype, shape, offsets) if `info` has exactly the types safetensors writes, else None."""
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")

    def is_int(x: object) -> bool:  # JSON booleans are Python ints; floats are not offsets
        return isinstance(x, int) and not isinstance(x, bool)

    if not isinstance(dtype, str) or not isinstance(shape, list) or len(shape) > MAX_DIMS:
        return None
    if not isinstance(offsets, list) or len(offsets) != 2:
        return None
    if not all(is_int(d) for d in shape) or not all(is_int(x) for x in offsets):
        return None
    return dtype, tuple(shape), (offsets[0], offsets[1])
