"""The one atomic output directory: checked, budgeted, staged beside the target, swapped in.

Every op that writes a model directory (merge, requantize; export and extraction later) goes
through here, so that:

- an output that is, contains or lies inside a source (base, adapter), the registry (ADAPT_HOME)
  or its blob store is refused whatever `--force` says: `--force` replaces an output, it never
  deletes what the op reads or the registry;
- a non-empty output is refused without `force`;
- the disk budget is checked before anything is written;
- everything is written into a temporary sibling and renamed into place at the end, so a failed
  or interrupted write never leaves an output that looks complete, and a failed `--force`
  keeps the previous output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from registry.errors import AlreadyExists, InsufficientDisk, UnsafeOutputDir

# Weights in any format: stale next to a newly written checkpoint, so never copied beside it.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
# What adapt writes beside its outputs; a copy would describe the wrong directory.
RECORD_FILES = frozenset({"adapt-merge.json", "adapt-quant.json"})
DISK_SLACK = 16 << 20  # the index, config and filesystem overhead
PARTIAL_MARK = ".adapt-partial-"
OLD_MARK = ".adapt-old-"


def check_output_dir(
    out_dir: Path,
    *,
    sources: Sequence[tuple[Path, str]],
    protected: Sequence[tuple[Path, str]] = (),
    force: bool,
    hint: str,
) -> None:
    """Refuse an output that overlaps what the op reads or adapt owns, or that is in use.

    sources / protected: (directory, what it is, e.g. "the base model's directory").
    hint: what to do instead, e.g. "write the merged model somewhere new".
    """
    out = Path(out_dir).resolve()
    # the registry first: a source may live inside it (the checkout cache), and "the registry"
    # is the more useful thing to name
    for path, what in (*protected, *sources):
        other = Path(path).resolve()
        if out == other:
            relation = "is"
        elif other.is_relative_to(out):
            relation = "contains"
        elif out.is_relative_to(other):
            relation = "is inside"
        else:
            continue
        raise UnsafeOutputDir(out_dir, relation, what, hint)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise AlreadyExists(str(out_dir), "it is a file; choose another --out")
        if any(out_dir.iterdir()) and not force:
            raise AlreadyExists(f"{out_dir} (not empty)", "pass --force to replace it")


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_free_space(out_dir: Path, needed: int, *, transient: int = 0) -> None:
    """InsufficientDisk unless out_dir's filesystem holds `needed` bytes (+ `transient` ones
    that exist only while writing, e.g. a shard's scratch copy)."""
    free = free_bytes(out_dir.parent)
    if needed + transient + DISK_SLACK > free:
        raise InsufficientDisk(out_dir.parent, needed, free)


def sidecar_files(model_dir: Path, *, skip: Collection[str] = ()) -> list[Path]:
    """Config, generation config, tokenizer and other small files of a model directory.

    Never weights, weight indexes, adapt's own records or hidden files; `skip`: more names
    the caller writes itself (e.g. config.json).
    """
    out = []
    for p in sorted(Path(model_dir).iterdir()):
        name = p.name
        if not p.is_file() or name.startswith(".") or name in skip or name in RECORD_FILES:
            continue
        if name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json"):
            continue
        out.append(p)
    return out


def copy_files(files: Sequence[Path], dest: Path) -> list[str]:
    """Copy files (with their times) into dest; return their names."""
    for p in files:
        shutil.copy2(p, dest / p.name)
    return [p.name for p in files]


@contextmanager
def staged_output(out_dir: Path) -> Iterator[Path]:
    """A fresh temp dir beside out_dir to write into; swapped into place when the block ends.

    On any error (or interrupt) the temp dir is removed and an existing out_dir is untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished tmp to out_dir; an old out_dir (force) is removed after, or put back
    if the rename fails."""
    if out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not os.path.lexists(out_dir):
        os.replace(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}{OLD_MARK}{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
