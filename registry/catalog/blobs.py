"""Blob rows against the blob store: garbage collection and consistency checks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from registry.catalog.sql import in_clause
from registry.records import FsckReport, GcReport
from registry.store import Leftover, find_leftovers, remove_leftover

if TYPE_CHECKING:
    from registry.blobs import BlobStore
    from registry.catalog import Catalog


def gc(cat: Catalog, store: BlobStore, *, dry_run: bool, temp_grace_seconds: float,
       temp_only: bool = False, home: Path | None = None) -> GcReport:
    """Remove blobs no version references, and temp files left by interrupted writes.

    temp_only: remove only leftovers (temp blobs, partial checkouts under `home`, and adapt's
    temp dirs in the system temp dir), not orphan blobs.
    """
    report = GcReport()
    if not temp_only:
        _remove_orphans(cat, store, report, dry_run=dry_run)
    # a leftover may belong to a write in progress: only ones idle past the grace period go
    cutoff = time.time() - temp_grace_seconds
    for leftover in _leftovers(store, home, system_temp=temp_only):
        if leftover.newest <= cutoff:
            report.removed_temp_files += 1
            report.removed_temp_bytes += leftover.size
            if not dry_run:
                remove_leftover(leftover)
    return report


def _leftovers(store: BlobStore, home: Path | None, *, system_temp: bool) -> list[Leftover]:
    if home is not None:
        return find_leftovers(home, system_temp=system_temp)
    out = []
    for tmp in store.temp_files():
        st = tmp.stat()
        out.append(Leftover(tmp, "temp blob", st.st_size, st.st_mtime))
    return out


def _remove_orphans(cat: Catalog, store: BlobStore, report: GcReport, *, dry_run: bool) -> None:
    # the transaction holds the write lock (BEGIN IMMEDIATE on SQLite, an advisory lock on
    # PostgreSQL), so no add commits rows for a blob while we delete it
    with cat.tx(write=True) as tx:
        referenced = {r[0] for r in tx.all("SELECT DISTINCT sha256 FROM version_file")}
        for sha in list(store):
            if sha in referenced:
                continue
            report.removed_blobs.append(sha)
            report.removed_bytes += store.size(sha)
            if not dry_run:
                store.remove(sha)
        if not dry_run:
            for i in range(0, len(report.removed_blobs), 500):
                chunk, params = in_clause("s", report.removed_blobs[i:i + 500])
                tx.run(f"DELETE FROM blob WHERE sha256 IN {chunk}", **params)
            tx.run("DELETE FROM blob WHERE sha256 NOT IN (SELECT sha256 FROM version_file)")


def fsck(cat: Catalog, store: BlobStore, *, verify_hashes: bool,
         home: Path | None = None) -> FsckReport:
    """Every file row has its blob; every blob hashes to its name; orphans listed apart, and
    leftovers of interrupted writes (temp blobs, partial directories) with their sizes."""
    report = FsckReport()
    report.leftovers = [lo.to_dict() for lo in _leftovers(store, home, system_temp=True)]
    with cat.tx() as tx:
        rows = tx.all("SELECT f.sha256, f.path, a.name, v.version FROM version_file f "
                      "JOIN adapter_version v ON v.id = f.version_id "
                      "JOIN adapter a ON a.id = v.adapter_id")
        known = {r[0] for r in tx.all("SELECT sha256 FROM blob")}
    referenced: set[str] = set()
    for sha, path, name, version in rows:
        report.checked_rows += 1
        referenced.add(sha)
        if not store.has(sha):
            report.problems.append(f"{name}@{version}/{path}: blob {sha[:16]} is missing")
        elif sha not in known:
            report.problems.append(f"{name}@{version}/{path}: blob {sha[:16]} has no row")
    for sha in store:
        report.checked_blobs += 1
        if verify_hashes:
            actual = store.verify(sha)
            if actual is not None:
                report.problems.append(
                    f"blob {sha[:16]} hashes to {actual[:16]}: its bytes changed")
        if sha not in referenced:
            report.orphan_blobs.append(sha)
    return report
