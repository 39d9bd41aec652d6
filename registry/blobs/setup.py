"""Team setup: `adapt init` (write the config file, check both backends) and
`adapt blobs migrate` (copy a store's blobs into another, verified and resumable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from registry.blobs.base import BlobStore, check_blob_url, open_blob_store
from registry.config import (
    CONFIG_NAME,
    load_settings,
    read_config,
    redact_url,
    write_config,
)


@dataclass(frozen=True)
class InitResult:
    config: str
    database: str  # password redacted (init refuses one anyway)
    blob_store: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def init_team(home: Path | None, *, db_url: str | None, blob_url: str | None,
              check: bool = True) -> InitResult:
    """Write ADAPT_HOME/config.toml; with `check`, open the database (creating its schema) and
    the bucket (creating it if missing) first, and keep the old file if either fails."""
    from registry.registry import Registry

    settings = load_settings(home)
    if blob_url is not None:
        check_blob_url(blob_url)
    path = settings.home / CONFIG_NAME
    old = path.read_text(encoding="utf-8") if path.is_file() else None
    write_config(settings.home, db_url=db_url, blob_url=blob_url)
    try:
        new = load_settings(home)
        if check:
            store = open_blob_store(new)
            ensure = getattr(store, "ensure_bucket", None)
            if ensure is not None:
                ensure()
            with Registry(home=new.home, db_url=new.db_url):
                pass
    except BaseException:
        if old is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(old, encoding="utf-8")
        raise
    return InitResult(str(path), redact_url(new.db_url),
                      new.blob_url or str(new.blob_dir))


@dataclass
class MigrateReport:
    source: str
    target: str
    copied: int = 0
    skipped: int = 0  # already in the target (a resumed migration)
    bytes_copied: int = 0
    missing_rows: list[str] = field(default_factory=list)  # files whose blob is not there
    switched: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def copy_blobs(source: BlobStore, target: BlobStore, report: MigrateReport,
               on_blob: Callable[[str, int], None] | None = None) -> None:
    """Copy every blob of `source` that `target` lacks; each is hashed on the way (its bytes
    must hash to its name) and checked by the target on arrival. Safe to run again."""
    for sha in list(source):
        if target.has(sha):
            report.skipped += 1
            continue
        _, size = target.put_file(source.path(sha), expected_sha256=sha)
        report.copied += 1
        report.bytes_copied += size
        if on_blob is not None:
            on_blob(sha, size)


def migrate_blobs(to: str, home: Path | None = None, *, switch: bool = True,
                  on_blob: Callable[[str, int], None] | None = None) -> MigrateReport:
    """Copy the registry's blobs to the store `to` names, check that every file row has its
    blob there, then (with `switch`) make `to` the registry's blob store in the config file."""
    from registry.registry import Registry

    check_blob_url(to)
    settings = load_settings(home)
    source = open_blob_store(settings)
    target_settings = replace(settings, blob_url=to)
    target = open_blob_store(target_settings)
    ensure = getattr(target, "ensure_bucket", None)
    if ensure is not None:
        ensure()
    report = MigrateReport(source.describe(), target.describe())
    copy_blobs(source, target, report, on_blob)
    with Registry(home=settings.home, db_url=settings.db_url) as reg:
        for info in reg.list_versions(all_versions=True):
            for f in reg.resolve(str(info["ref"])).files:
                if not target.has(f.sha256):
                    report.missing_rows.append(f"{info['ref']}/{f.path}")
    if switch and not report.missing_rows:
        keep_db = read_config(settings.home).get("db_url")
        write_config(settings.home, db_url=str(keep_db) if keep_db else None, blob_url=to)
        report.switched = True
    return report
