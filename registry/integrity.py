"""Checks on bytes before they are trusted: finite tensors in an adapter, intact checkouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import NonFiniteTensor
from registry.records import FileInfo

if TYPE_CHECKING:
    from registry.peft_dir import AdapterDir


def check_finite_fast(adapter: AdapterDir) -> None:
    """Refuse NaN/Inf in floating tensors, reading raw bytes with numpy (no torch import)."""
    import numpy as np

    views = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    with open(adapter.weights_path, "rb") as f:
        for name, t in adapter.header.tensors.items():
            if t.dtype not in views and t.dtype != "BF16":
                continue
            f.seek(t.start)
            raw = f.read(t.nbytes)
            if t.dtype == "BF16":
                # bfloat16 is the top half of a float32
                arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(views[t.dtype]).newbyteorder("<"))
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise NonFiniteTensor(adapter.path, name, bad)


def checkout_problems(folder: Path, files: Sequence[FileInfo]) -> list[str]:
    """What differs between a checkout folder and the files it should hold (size, sha256)."""
    import hashlib

    problems = []
    for f in files:
        path = folder / f.path
        if not path.is_file() or path.is_symlink():
            problems.append(f"{f.path} is missing")
            continue
        if path.stat().st_size != f.size:
            problems.append(f"{f.path} has {path.stat().st_size} bytes, not {f.size}")
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != f.sha256:
            problems.append(f"{f.path} was changed")
    return problems
