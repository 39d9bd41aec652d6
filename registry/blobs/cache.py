"""A size-limited local cache of a remote store's blobs under ADAPT_HOME (`adapt cache`)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_CACHE_MAX_BYTES = 20 * 1024**3


@dataclass(frozen=True)
class CacheEntry:
    sha256: str
    size: int
    last_used: float  # the file's mtime: set when fetched and each time it is read

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class BlobCache:
    """Blobs fetched from a remote store, kept as `root/ab/cdef...`; least recently used go
    first when the total passes `max_bytes`. Entries are verified when they are fetched."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def get(self, sha256: str, size: int | None = None) -> Path | None:
        """The cached file if present (and of `size`), marked as used now; else None."""
        p = self.path(sha256)
        try:
            st = p.stat()
        except OSError:
            return None
        if size is not None and st.st_size != size:
            self.evict(sha256)
            return None
        try:
            os.utime(p)  # the least recently used go first; atime is often not kept
        except OSError:
            pass  # a read-only cache still reads
        return p

    def new_temp(self) -> Path:
        """A fresh temp file name in the cache directory (created by the caller)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".tmp-{os.getpid()}-{time.monotonic_ns()}"

    def admit(self, tmp: Path, sha256: str) -> Path:
        """Move a verified temp file into the cache, then prune to the limit (keeping it)."""
        dest = self.path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)  # a cache entry is not a working copy
        os.replace(tmp, dest)
        if self.total_bytes() > self.max_bytes:
            self.prune(keep={sha256})
        return dest

    def evict(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def entries(self) -> list[CacheEntry]:
        """Every cached blob, least recently used first."""
        out: list[CacheEntry] = []
        if not self.root.is_dir():
            return out
        for sub in self.root.iterdir():
            if not (sub.is_dir() and len(sub.name) == 2):
                continue
            for f in sub.iterdir():
                if f.name.startswith(".tmp-"):
                    continue
                try:
                    st = f.stat()
                except OSError:
                    continue
                out.append(CacheEntry(sub.name + f.name, st.st_size, st.st_mtime))
        out.sort(key=lambda e: (e.last_used, e.sha256))
        return out

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def prune(self, max_bytes: int | None = None, keep: set[str] | frozenset[str] = frozenset(),
              dry_run: bool = False) -> PruneReport:
        """Remove least recently used blobs until the cache holds at most `max_bytes`
        (default: the configured limit; 0 empties it). Blobs in `keep` stay."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        entries = self.entries()
        total = sum(e.size for e in entries)
        report = PruneReport()
        for entry in entries:
            if total <= limit:
                break
            if entry.sha256 in keep:
                continue
            if not dry_run:
                self.evict(entry.sha256)
            report.removed.append(entry.sha256)
            report.freed_bytes += entry.size
            total -= entry.size
        report.kept_bytes = total
        return report

    def temp_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(self.root.glob(".tmp-*"))
