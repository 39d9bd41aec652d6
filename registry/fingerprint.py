"""Base-model fingerprints: exact, layout-independent, and fast.

Each tensor's digest covers its name, dtype, shape and raw bytes; the model fingerprint combines
the per-tensor digests in name order. Resharding or reordering a checkpoint leaves it unchanged;
changing any weight changes it. Large tensors are hashed as 64 MiB chunks (a tree hash) so all
cores work even on one big embedding; hashlib releases the GIL, so threads suffice.

A structure signature hashes only (name, dtype, shape), to tell "same weights" from "same
architecture". Results are cached by each file's (path, size, mtime, inode).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from registry.checkpoint import Checkpoint, open_checkpoint
from registry.errors import InvalidModel
from registry.hashing import canonical_json

ALGORITHM = "fp1"
CHUNK_BYTES = 64 << 20
READ_BYTES = 8 << 20


@dataclass(frozen=True)
class ModelFingerprint:
    fingerprint: str  # "fp1:<hex>"
    structure: str  # "st1:<hex>"
    params: int
    num_tensors: int
    total_bytes: int
    dtype: str
    architecture: str | None
    path: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def structure_signature(ckpt: Checkpoint) -> str:
    rows = sorted((n, t.dtype, list(t.shape)) for n, t in ckpt.tensors.items())
    return "st1:" + hashlib.sha256(canonical_json(rows)).hexdigest()


def fingerprint_model(
    path: str | Path, *, cache_dir: Path | None = None, workers: int | None = None
) -> ModelFingerprint:
    """Fingerprint a safetensors checkpoint (a directory, sharded or not, or one file).

    cache_dir: where to keep the (path, size, mtime, inode) cache; None disables it.
    """
    ckpt = open_checkpoint(path)
    key, stats = _cache_key(ckpt)
    cache_file = cache_dir / "fingerprints.json" if cache_dir else None
    if cache_file is not None:
        hit = _read_cache(cache_file).get(key)
        if hit and hit.get("stats") == stats:
            return ModelFingerprint(**hit["result"])
    result = _compute(ckpt, workers or os.cpu_count() or 1)
    if cache_file is not None:
        _write_cache(cache_file, key, {"stats": stats, "result": result.to_dict()})
    return result


def _compute(ckpt: Checkpoint, workers: int) -> ModelFingerprint:
    tensors = ckpt.tensors
    file_of = ckpt.file_of()
    # (tensor name, chunk index, file, start, end)
    jobs: list[tuple[str, int, Path, int, int]] = []
    for name, info in tensors.items():
        n_chunks = max(1, -(-info.nbytes // CHUNK_BYTES))
        for i in range(n_chunks):
            start = info.start + i * CHUNK_BYTES
            jobs.append((name, i, file_of[name], start, min(info.end, start + CHUNK_BYTES)))
    # os.pread into a fresh buffer, not mmap: mapped pages count toward the process's RSS, so
    # hashing a 10 GB checkpoint through mmap looked like a 10 GB process. pread and sha256 both
    # release the GIL, so threads still hash in parallel.
    fds = {f: os.open(f, os.O_RDONLY) for f in ckpt.files}
    try:

        def hash_chunk(job: tuple[str, int, Path, int, int]) -> bytes:
            _, _, f, start, end = job
            h = hashlib.sha256()
            pos = start
            while pos < end:
                data = os.pread(fds[f], min(READ_BYTES, end - pos), pos)
                if not data:
                    raise InvalidModel(f, "file ended before its tensors did")
                h.update(data)
                pos += len(data)
            return h.digest()

        # largest chunks first keeps both cores busy to the end
        order = sorted(range(len(jobs)), key=lambda j: jobs[j][3] - jobs[j][4])
        digests: list[bytes] = [b""] * len(jobs)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for j, d in zip(order, pool.map(hash_chunk, (jobs[j] for j in order)), strict=True):
                digests[j] = d
    finally:
        for fd in fds.values():
            os.close(fd)
    chunks: dict[str, list[bytes]] = {}
    for (name, _, _, _, _), d in zip(jobs, digests, strict=True):
        chunks.setdefault(name, []).append(d)
    top = hashlib.sha256()
    params = 0
    dtypes: set[str] = set()
    for name in sorted(tensors):
        info = tensors[name]
        meta = canonical_json({"name": name, "dtype": info.dtype, "shape": list(info.shape)})
        tensor_digest = hashlib.sha256(meta + b"\0" + b"".join(chunks[name])).hexdigest()
        top.update(f"{name}\0{tensor_digest}\n".encode())
        params += info.numel
        dtypes.add(info.dtype)
    return ModelFingerprint(
        fingerprint=f"{ALGORITHM}:{top.hexdigest()}",
        structure=structure_signature(ckpt),
        params=params,
        num_tensors=len(tensors),
        total_bytes=ckpt.total_bytes,
        dtype="+".join(sorted(dtypes)),
        architecture=ckpt.architecture,
        path=str(ckpt.path.resolve()),
    )


def _cache_key(ckpt: Checkpoint) -> tuple[str, list[list[object]]]:
    stats: list[list[object]] = []
    for f in ckpt.files:
        st = f.stat()
        stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino])
    return str(ckpt.path.resolve()), stats


def _read_cache(cache_file: Path) -> dict[str, dict]:
    try:
        from registry.safeparse import load_json

        data = load_json(cache_file.read_bytes(), max_bytes=256 * 1024 * 1024)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # a broken cache only costs a re-hash
        return {}


def _write_cache(cache_file: Path, key: str, value: dict) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(cache_file)
        data[key] = value
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a cache that cannot be written only costs time
