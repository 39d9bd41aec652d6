"""Content-addressed blob store: `blobs/ab/cdef...` named by the sha256 of their bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.errors import IntegrityError
from registry.hashing import CHUNK


class BlobStore:
    """The local backend of `registry.blobs.BlobStore`: a directory under ADAPT_HOME."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def describe(self) -> str:
        return str(self.root)

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def put_file(self, src: str | Path, expected_sha256: str | None = None) -> tuple[str, int]:
        """Copy `src` into the store atomically (temp file, fsync, rename); return (sha256, size).

        The hash is computed from the bytes as they are copied, so what is stored is exactly
        what was hashed even if `src` changes meanwhile.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise IntegrityError(str(src), expected_sha256, digest)
            dest = self.path(digest)
            if dest.exists():
                os.unlink(tmp)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
                _fsync_dir(dest.parent)
            return digest, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def copy_out(self, sha256: str, dest: str | Path, verify: bool = True) -> None:
        """Write the blob to `dest` (atomically), checking its hash on the way."""
        src = self.path(sha256)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                if verify:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                else:
                    shutil.copyfileobj(f, out, CHUNK)
            if verify and h.hexdigest() != sha256:
                raise IntegrityError(f"blob {sha256[:12]}", sha256, h.hexdigest())
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def verify(self, sha256: str) -> str | None:
        """The actual sha256 of the stored blob if it differs from its name, else None."""
        h = hashlib.sha256()
        with open(self.path(sha256), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        actual = h.hexdigest()
        return None if actual == sha256 else actual

    def __iter__(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if not f.name.startswith(".tmp-"):
                        yield sub.name + f.name

    def temp_files(self) -> list[Path]:
        """Leftover temp files from interrupted writes."""
        if not self.root.is_dir():
            return []
        return sorted(self.root.glob(".tmp-*"))

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# the prefixes of adapt's own temporary directories in the system temp dir (tempfile's default)
SYSTEM_TEMP_PREFIXES = ("adapt-add-", "adapt-pull-", "adapt-push-", "adapt-compose-",
                        "adapt-extract-", "adapt-convert-")
_MAX_WALK = 100_000  # entries counted per leftover; a size is a report, not an audit


@dataclass(frozen=True)
class Leftover:
    """A temp file or partial directory an interrupted write left behind."""

    path: Path
    kind: str  # "temp blob", "partial checkout", "temp file", "temp dir"
    size: int  # bytes, summed over a directory's files
    newest: float  # newest mtime inside it (a write in progress keeps this fresh)

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "kind": self.kind, "size": self.size,
                "age_seconds": max(0, int(time.time() - self.newest))}


def find_leftovers(home: Path, *, system_temp: bool = True) -> list[Leftover]:
    """Temp blobs, partial checkouts and adapt's temp dirs left by crashes (kill -9, ENOSPC).

    Looks under ADAPT_HOME (`blobs/.tmp-*`, `cache/.tmp-*`, `cache/checkouts/.tmp-*`) and,
    with `system_temp`, at this user's `adapt-*-` directories in the system temp dir.
    """
    found: list[Leftover] = []
    places = [(home / "blobs", "temp blob"), (home / "cache", "temp file"),
              (home / "cache" / "checkouts", "partial checkout")]
    for folder, kind in places:
        if folder.is_dir():
            for entry in sorted(folder.glob(".tmp-*")):
                found.append(_leftover(entry, kind))
    if system_temp:
        tmp = Path(tempfile.gettempdir())
        uid = os.getuid() if hasattr(os, "getuid") else None
        try:
            entries = sorted(tmp.iterdir())
        except OSError:
            entries = []
        for entry in entries:
            if not entry.name.startswith(SYSTEM_TEMP_PREFIXES):
                continue
            try:
                st = entry.lstat()
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and (uid is None or st.st_uid == uid):
                found.append(_leftover(entry, "temp dir"))
    return found


def _leftover(path: Path, kind: str) -> Leftover:
    """Size and newest mtime of a file, or of a directory's tree (links never followed)."""
    size, newest, seen = 0, 0.0, 0
    stack = [path]
    while stack and seen < _MAX_WALK:
        p = stack.pop()
        seen += 1
        try:
            st = p.lstat()
        except OSError:
            continue
        newest = max(newest, st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            try:
                stack.extend(p.iterdir())
            except OSError:
                continue
        elif stat.S_ISREG(st.st_mode):
            size += st.st_size
    return Leftover(path, kind, size, newest)


def remove_leftover(leftover: Leftover) -> None:
    """Delete a leftover file or directory (a vanished one is fine: its owner finished)."""
    path = leftover.path
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
