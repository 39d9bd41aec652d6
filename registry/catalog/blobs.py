"""Blob rows against the blob store: garbage collection and consistency checks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from registry.catalog.sql import in_clause
from registry.records import FsckReport, GcReport

if TYPE_CHECKING:
    from registry.catalog import Catalog
    from registry.store import BlobStore


def gc(cat: Catalog, store: BlobStore, *, dry_run: bool, temp_grace_seconds: float) -> GcReport:
    """Remove blobs no version references, and temp files left by interrupted writes."""
    report = GcReport()
    # the transaction holds the write lock (BEGIN IMMEDIATE on SQLite, an advisory lock on
    # PostgreSQL), so no add commits rows for a blob while we delete it
    with cat.tx(write=True) as tx:
        referenced = {r[0] for r in tx.all("SELECT DISTINCT sha256 FROM version_file")}
        for sha in list(store):
            if sha in referenced:
                continue
            report.removed_blobs.append(sha)
            report.removed_bytes += store.path(sha).stat().st_size
            if not dry_run:
                store.remove(sha)
        if not dry_run:
            for i in range(0, len(report.removed_blobs), 500):
                chunk, params = in_clause("s", report.removed_blobs[i:i + 500])
                tx.run(f"DELETE FROM blob WHERE sha256 IN {chunk}", **params)
            tx.run("DELETE FROM blob WHERE sha256 NOT IN (SELECT sha256 FROM version_file)")
        # a temp file may belong to a write in progress: only old ones are abandoned
        cutoff = datetime.now() - timedelta(seconds=temp_grace_seconds)
        for tmp in store.temp_files():
            if datetime.fromtimestamp(tmp.stat().st_mtime) <= cutoff:
                report.removed_temp_files += 1
                if not dry_run:
                    tmp.unlink(missing_ok=True)
    return report


def fsck(cat: Catalog, store: BlobStore, *, verify_hashes: bool) -> FsckReport:
    """Every file row has its blob; every blob hashes to its name; orphans listed apart."""
    report = FsckReport()
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
