"""The Registry facade: what the CLI, the TUI and library users call.

Adapter bytes live in the content-addressed blob store; metadata in the database. `add` writes
blobs first and rows last, in one transaction, so a crash at any point leaves at worst an
unreferenced blob (which `gc` removes), never a row without its blob.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlmodel import Session, col

from registry import __version__
from registry.checkpoint import open_checkpoint
from registry.compat import check_compatible
from registry.config import Settings, load_settings
from registry.catalog import Catalog
from registry.db.models import (
    Adapter,
    AdapterVersion,
    Blob,
    EvalScore,
    HubLink,
    Lineage,
    Tag,
    ValidationRun,
    VersionFile,
    utcnow,
)
from registry.db.models import BaseModel as BaseRow
from registry.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidAdapter,
    NonFiniteTensor,
    NotFound,
    UsageError,
)
from registry.fingerprint import ModelFingerprint, fingerprint_model
from registry.hashing import digest_json
from registry.peft_dir import (
    CONFIG_NAME,
    PICKLE_NAME,
    WEIGHTS_NAME,
    AdapterDir,
    convert_pickle,
    read_adapter_dir,
)
from registry.refs import Ref, check_name
from registry.store import BlobStore

# Files that make up a version. README/model cards are presentation, not content: a version's
# identity is its config and weights, so a Hub round trip keeps the same digest.
VERSION_FILES = (CONFIG_NAME, WEIGHTS_NAME)


@dataclass(frozen=True)
class FileInfo:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class VersionInfo:
    """A detached snapshot of one adapter version."""

    id: int
    adapter_id: int
    name: str
    version: int
    digest: str
    method: str
    peft_type: str
    rank: int | None
    alpha: float | None
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    target_modules: Any
    modules_to_save: list[str]
    task_type: str | None
    base_model: str | None
    base_fingerprint: str | None
    params: int
    size_bytes: int
    dtype: str
    source: str | None
    recipe: dict[str, Any] | None
    config: dict[str, Any]
    note: str | None
    created_at: datetime
    files: tuple[FileInfo, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ref": self.ref}


@dataclass(frozen=True)
class ParentLink:
    """A parent of a new version: a reference, and how it contributed."""

    ref: str
    weight: float | None = None
    role: str = "parent"
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class AddResult:
    version: VersionInfo
    created: bool


@dataclass(frozen=True)
class BaseInfo:
    id: int
    fingerprint: str
    structure: str
    name: str | None
    path: str | None
    architecture: str | None
    params: int
    dtype: str | None
    kind: str
    source_version_id: int | None
    parent_fingerprint: str | None
    details: dict[str, Any] | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport:
    removed_blobs: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    removed_temp_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FsckReport:
    checked_blobs: int = 0
    checked_rows: int = 0
    problems: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class Registry:
    """One registry: a database (SQLite by default) and a blob store under ADAPT_HOME."""

    def __init__(self, home: str | Path | None = None, db_url: str | None = None) -> None:
        self.settings: Settings = load_settings(home, db_url)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.settings.db_url)
        self.engine = self.catalog.engine
        self.store = BlobStore(self.settings.blob_dir)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        # Transitional: being replaced by registry.catalog functions (reads use catalog.read()).
        with self.catalog.write() as session:
            yield session

    # -- resolving ---------------------------------------------------------------------------
    def resolve(self, ref: str | Ref | VersionInfo) -> VersionInfo:
        """The version a reference names (NotFound if none)."""
        if isinstance(ref, VersionInfo):
            return ref
        with self.session() as s:
            row, name = self._resolve_row(s, ref)
            return self._info(s, row, name)

    def _resolve_row(self, s: Session, ref: str | Ref) -> tuple[AdapterVersion, str]:
        parsed = ref if isinstance(ref, Ref) else Ref.parse(ref)
        if parsed.digest is not None:
            rows = s.execute(
                select(AdapterVersion, Adapter.name)
                .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                .where(AdapterVersion.manifest_digest.like(f"sha256:{parsed.digest}%"))
                .order_by(Adapter.name, AdapterVersion.version)
            ).all()
            if not rows:
                raise NotFound("version", str(parsed), "see `adapt list`")
            if len({r[0].manifest_digest for r in rows}) > 1:
                raise UsageError(f"digest prefix {parsed} is ambiguous: use more hex digits")
            return rows[0][0], rows[0][1]
        adapter = s.execute(select(Adapter).where(Adapter.name == parsed.name)).scalar_one_or_none()
        if adapter is None:
            raise NotFound("adapter", str(parsed.name), "see `adapt list`")
        q = select(AdapterVersion).where(AdapterVersion.adapter_id == adapter.id)
        if parsed.version is not None:
            row = s.execute(q.where(AdapterVersion.version == parsed.version)).scalar_one_or_none()
            if row is None:
                raise NotFound("version", str(parsed), f"see `adapt show {parsed.name}`")
        elif parsed.tag is not None:
            tag = s.execute(
                select(Tag).where(Tag.adapter_id == adapter.id, Tag.name == parsed.tag)
            ).scalar_one_or_none()
            if tag is None:
                raise NotFound("tag", str(parsed), f"see `adapt show {parsed.name}`")
            row = s.get(AdapterVersion, tag.version_id)
            assert row is not None
        else:
            row = s.execute(q.order_by(AdapterVersion.version.desc()).limit(1)).scalar_one_or_none()
            if row is None:
                raise NotFound("version", str(parsed))
        return row, adapter.name

    def _info(self, s: Session, row: AdapterVersion, name: str) -> VersionInfo:
        files = s.execute(
            select(VersionFile).where(VersionFile.version_id == row.id).order_by(VersionFile.path)
        ).scalars()
        assert row.id is not None
        return VersionInfo(
            id=row.id,
            adapter_id=row.adapter_id,
            name=name,
            version=row.version,
            digest=row.manifest_digest,
            method=row.method,
            peft_type=row.peft_type,
            rank=row.rank,
            alpha=row.alpha,
            use_rslora=row.use_rslora,
            rank_pattern=dict(row.rank_pattern or {}),
            alpha_pattern=dict(row.alpha_pattern or {}),
            target_modules=row.target_modules,
            modules_to_save=list(row.modules_to_save or []),
            task_type=row.task_type,
            base_model=row.base_model,
            base_fingerprint=row.base_fingerprint,
            params=row.params,
            size_bytes=row.size_bytes,
            dtype=row.dtype,
            source=row.source,
            recipe=row.recipe,
            config=dict(row.config or {}),
            note=row.note,
            created_at=row.created_at,
            files=tuple(FileInfo(f.path, f.sha256, f.size) for f in files),
        )

    # -- adding ------------------------------------------------------------------------------
    def add(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        base: str | Path | None = None,
        tags: Sequence[str] = (),
        note: str | None = None,
        allow_nonfinite: bool = False,
        convert_pickle: bool = False,
        source: str | None = None,
        parents: Sequence[ParentLink] = (),
        recipe: dict[str, Any] | None = None,
        base_fingerprint: str | None = None,
    ) -> AddResult:
        """Register the PEFT adapter directory at `path` as a new version.

        base: a base model directory (or a registered base's name): fingerprint it and check that
            every adapted module exists in it with matching shapes.
        Identical content under the same name returns the existing version (created=False).
        """
        path = Path(path)
        for t in tags:
            check_name(t, "tag")
        with tempfile.TemporaryDirectory(prefix="adapt-add-") as tmp:
            adapter = self._read_for_add(path, Path(tmp), convert_pickle)
            if not allow_nonfinite:
                check_finite_fast(adapter)
            name = check_name(name) if name else derive_name(path)
            if base is not None:
                base_dir = self._base_dir(base)
                check_compatible(adapter, open_checkpoint(base_dir))
                base_fingerprint = self.add_base(base_dir).fingerprint
            _crash_point("before_blobs")
            files = [self._put(adapter.path / f) for f in VERSION_FILES]
            _crash_point("after_blobs")
            digest = digest_json([asdict(f) for f in files])
            source = source or str(path.resolve())
            for attempt in range(3):
                try:
                    return self._insert_version(
                        adapter, name, files, digest, tags, note, source, parents, recipe,
                        base_fingerprint,
                    )
                except DBIntegrityError:
                    # a concurrent writer created the same adapter or version number (only
                    # possible on servers without whole-database write locks): try again
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _read_for_add(self, path: Path, tmp: Path, convert: bool) -> AdapterDir:
        if convert and path.is_dir() and not (path / WEIGHTS_NAME).exists() and (
            path / PICKLE_NAME
        ).is_file():
            if not (path / CONFIG_NAME).is_file():
                raise InvalidAdapter(path, f"no {CONFIG_NAME}")
            shutil.copyfile(path / CONFIG_NAME, tmp / CONFIG_NAME)
            convert_pickle(path, tmp)
            return read_adapter_dir(tmp)
        return read_adapter_dir(path)

    def _put(self, file: Path) -> FileInfo:
        sha, size = self.store.put_file(file)
        return FileInfo(file.name, sha, size)

    def _insert_version(
        self,
        adapter: AdapterDir,
        name: str,
        files: list[FileInfo],
        digest: str,
        tags: Sequence[str],
        note: str | None,
        source: str,
        parents: Sequence[ParentLink],
        recipe: dict[str, Any] | None,
        base_fingerprint: str | None,
    ) -> AddResult:
        with self.session() as s:
            self._write_lock(s)
            line = s.execute(select(Adapter).where(Adapter.name == name)).scalar_one_or_none()
            if line is None:
                line = Adapter(name=name)
                s.add(line)
                s.flush()
            existing = s.execute(
                select(AdapterVersion).where(
                    AdapterVersion.adapter_id == line.id, AdapterVersion.manifest_digest == digest
                )
            ).scalar_one_or_none()
            if existing is not None:
                for t in tags:
                    self._set_tag(s, line, existing, t)
                s.commit()
                return AddResult(self._info(s, existing, name), created=False)
            latest = s.execute(
                select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == line.id)
            ).scalar_one()
            row = AdapterVersion(
                adapter_id=line.id,
                version=(latest or 0) + 1,
                manifest_digest=digest,
                peft_type=adapter.peft_type,
                method=adapter.method,
                rank=adapter.rank,
                alpha=adapter.alpha,
                use_rslora=adapter.use_rslora,
                rank_pattern=adapter.rank_pattern or None,
                alpha_pattern=adapter.alpha_pattern or None,
                target_modules=adapter.target_modules,
                modules_to_save=adapter.modules_to_save or None,
                task_type=adapter.task_type,
                base_model=adapter.base_model,
                base_fingerprint=base_fingerprint,
                params=adapter.params,
                size_bytes=sum(f.size for f in files),
                dtype=adapter.dtype,
                source=source,
                recipe=recipe,
                config=adapter.config,
                note=note,
            )
            s.add(row)
            s.flush()
            for f in files:
                # gc may have removed a blob we wrote before taking the lock; put it back
                if not self.store.has(f.sha256):
                    self.store.put_file(adapter.path / f.path, expected_sha256=f.sha256)
                if s.get(Blob, f.sha256) is None:
                    s.add(Blob(sha256=f.sha256, size=f.size))
                s.add(VersionFile(version_id=row.id, path=f.path, sha256=f.sha256, size=f.size))
            for p in parents:
                parent_row, parent_name = self._resolve_row(s, p.ref)
                s.add(
                    Lineage(
                        child_id=row.id,
                        parent_id=parent_row.id,
                        parent_ref=f"{parent_name}@{parent_row.version}",
                        weight=p.weight,
                        role=p.role,
                        params=p.params,
                    )
                )
            for t in tags:
                self._set_tag(s, line, row, t)
            line.updated_at = utcnow()
            s.add(line)
            _crash_point("before_commit")
            s.commit()
            return AddResult(self._info(s, row, name), created=True)

    def _write_lock(self, s: Session) -> None:
        """Serialize writers that touch blobs: gc and add (SQLite's BEGIN IMMEDIATE does it)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            s.execute(text("SELECT pg_advisory_xact_lock(4243)"))

    def _base_dir(self, base: str | Path) -> Path:
        p = Path(base)
        if p.exists():
            return p
        found = self.find_base(str(base))
        if found is None or not found.path or not Path(found.path).exists():
            raise NotFound("base model", str(base), "pass the base model's directory")
        return Path(found.path)

    # -- tags, scores, removal --------------------------------------------------------------
    def tag(self, ref: str, tag: str) -> VersionInfo:
        """Point `tag` of the adapter at the version `ref` names (moving it if it exists)."""
        check_name(tag, "tag")
        with self.session() as s:
            row, name = self._resolve_row(s, ref)
            line = s.get(Adapter, row.adapter_id)
            assert line is not None
            self._set_tag(s, line, row, tag)
            s.commit()
            return self._info(s, row, name)

    def _set_tag(self, s: Session, line: Adapter, row: AdapterVersion, tag: str) -> None:
        existing = s.execute(
            select(Tag).where(Tag.adapter_id == line.id, Tag.name == tag)
        ).scalar_one_or_none()
        if existing is None:
            assert line.id is not None and row.id is not None
            s.add(Tag(adapter_id=line.id, name=tag, version_id=row.id))
        else:
            assert row.id is not None
            existing.version_id = row.id
            existing.updated_at = utcnow()
            s.add(existing)

    def untag(self, name: str, tag: str) -> None:
        check_name(name)
        with self.session() as s:
            line = s.execute(select(Adapter).where(Adapter.name == name)).scalar_one_or_none()
            if line is None:
                raise NotFound("adapter", name, "see `adapt list`")
            n = s.execute(
                delete(Tag).where(Tag.adapter_id == line.id, Tag.name == tag)
            ).rowcount  # type: ignore[attr-defined]
            if not n:
                raise NotFound("tag", f"{name}:{tag}", f"see `adapt show {name}`")
            s.commit()

    def add_score(
        self,
        ref: str,
        metric: str,
        value: float,
        *,
        dataset: str | None = None,
        base_fingerprint: str | None = None,
        run_id: int | None = None,
    ) -> None:
        if not metric or len(metric) > 128:
            raise UsageError("a metric name is 1-128 characters")
        with self.session() as s:
            row, _ = self._resolve_row(s, ref)
            assert row.id is not None
            s.add(
                EvalScore(
                    version_id=row.id,
                    metric=metric,
                    dataset=dataset,
                    value=float(value),
                    base_fingerprint=base_fingerprint or row.base_fingerprint,
                    run_id=run_id,
                )
            )
            s.commit()

    def remove(self, ref: str) -> VersionInfo:
        """Delete one version and what hangs off it. Its blobs stay until `gc`."""
        with self.session() as s:
            row, name = self._resolve_row(s, ref)
            info = self._info(s, row, name)
            vid = row.id
            for model in (VersionFile, Tag, EvalScore, ValidationRun, HubLink):
                col = model.version_id  # type: ignore[attr-defined]
                s.execute(delete(model).where(col == vid))
            s.execute(delete(Lineage).where(Lineage.child_id == vid))
            s.execute(update(Lineage).where(Lineage.parent_id == vid).values(parent_id=None))
            s.execute(
                update(BaseRow).where(BaseRow.source_version_id == vid).values(
                    source_version_id=None)
            )
            s.execute(delete(AdapterVersion).where(AdapterVersion.id == vid))
            left = s.execute(
                select(func.count()).where(AdapterVersion.adapter_id == row.adapter_id)
            ).scalar_one()
            if not left:
                s.execute(delete(Adapter).where(Adapter.id == row.adapter_id))
            s.commit()
            return info

    # -- files out ---------------------------------------------------------------------------
    def export(self, ref: str | VersionInfo, dest: str | Path) -> Path:
        """Write the version's PEFT directory to `dest` (new or empty), verifying every hash."""
        info = self.resolve(ref)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise AlreadyExists(str(dest), "choose an empty or new directory")
        dest.mkdir(parents=True, exist_ok=True)
        for f in info.files:
            if not self.store.has(f.sha256):
                raise IntegrityError(f"{info.ref}/{f.path}", f.sha256, "missing blob")
            self.store.copy_out(f.sha256, dest / f.path)
        return dest

    def checkout(self, ref: str | VersionInfo) -> Path:
        """A verified, read-only PEFT directory for the version, cached by its digest."""
        info = self.resolve(ref)
        root = self.settings.cache_dir / "checkouts"
        target = root / info.digest.split(":", 1)[-1][:32]
        if (target / WEIGHTS_NAME).is_file() and (target / CONFIG_NAME).is_file():
            return target
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        try:
            for f in info.files:
                if not self.store.has(f.sha256):
                    raise IntegrityError(f"{info.ref}/{f.path}", f.sha256, "missing blob")
                self.store.copy_out(f.sha256, tmp / f.path)
            try:
                os.replace(tmp, target)
            except OSError:  # another process won the race; its copy is as good
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    # -- listing and showing -----------------------------------------------------------------
    def _version_query(
        self,
        base: str | None,
        method: str | None,
        tag: str | None,
        name_like: str | None,
        all_versions: bool,
    ) -> Any:
        q = select(
            AdapterVersion.id,
            Adapter.name,
            AdapterVersion.version,
            AdapterVersion.method,
            AdapterVersion.rank,
            AdapterVersion.alpha,
            AdapterVersion.base_model,
            AdapterVersion.base_fingerprint,
            AdapterVersion.params,
            AdapterVersion.size_bytes,
            AdapterVersion.manifest_digest,
            AdapterVersion.created_at,
        ).join(Adapter, Adapter.id == AdapterVersion.adapter_id)
        if not all_versions:
            latest = (
                select(
                    AdapterVersion.adapter_id.label("aid"),
                    func.max(AdapterVersion.version).label("v"),
                )
                .group_by(AdapterVersion.adapter_id)
                .subquery()
            )
            q = q.join(
                latest,
                (latest.c.aid == AdapterVersion.adapter_id)
                & (latest.c.v == AdapterVersion.version),
            )
        if method:
            q = q.where(AdapterVersion.method == method.upper())
        if name_like:
            q = q.where(Adapter.name.contains(name_like.lower(), autoescape=True))
        if tag:
            q = q.join(Tag, (Tag.version_id == AdapterVersion.id) & (Tag.name == tag))
        if base:
            fps = self._base_fingerprints(base)
            q = q.where(
                AdapterVersion.base_fingerprint.in_(fps)
                | (AdapterVersion.base_model == base)
                | col(AdapterVersion.base_fingerprint).startswith(base, autoescape=True)
            )
        return q

    def list_versions(
        self,
        *,
        base: str | None = None,
        method: str | None = None,
        tag: str | None = None,
        name_like: str | None = None,
        all_versions: bool = False,
        limit: int | None = None,
        offset: int = 0,
        order: str = "name",
    ) -> list[dict[str, Any]]:
        """Latest version of each adapter (or every version), as plain dicts."""
        q = self._version_query(base, method, tag, name_like, all_versions)
        orders = {
            "name": (Adapter.name, AdapterVersion.version),
            "updated": (AdapterVersion.created_at.desc(), Adapter.name),
            "method": (AdapterVersion.method, Adapter.name),
            "rank": (AdapterVersion.rank, Adapter.name),
        }
        if order not in orders:
            raise UsageError(f"unknown order {order!r}: use one of {', '.join(orders)}")
        q = q.order_by(*orders[order]).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            ids = [r[0] for r in rows]
            tags: dict[int, list[str]] = {}
            best: dict[int, dict[str, float]] = {}
            for chunk in _chunks(ids, 500):
                for vid, tname in conn.execute(
                    select(Tag.version_id, Tag.name).where(Tag.version_id.in_(chunk))
                ):
                    tags.setdefault(vid, []).append(tname)
                for vid, metric, value in conn.execute(
                    select(EvalScore.version_id, EvalScore.metric, func.max(EvalScore.value))
                    .where(EvalScore.version_id.in_(chunk))
                    .group_by(EvalScore.version_id, EvalScore.metric)
                ):
                    best.setdefault(vid, {})[metric] = value
        return [
            {
                "name": r[1],
                "version": r[2],
                "ref": f"{r[1]}@{r[2]}",
                "method": r[3],
                "rank": r[4],
                "alpha": r[5],
                "base_model": r[6],
                "base_fingerprint": r[7],
                "params": r[8],
                "size_bytes": r[9],
                "digest": r[10],
                "created_at": r[11],
                "tags": sorted(tags.get(r[0], [])),
                "scores": best.get(r[0], {}),
            }
            for r in rows
        ]

    def count_versions(
        self,
        *,
        base: str | None = None,
        method: str | None = None,
        tag: str | None = None,
        name_like: str | None = None,
        all_versions: bool = False,
    ) -> int:
        q = self._version_query(base, method, tag, name_like, all_versions)
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(q.subquery())).scalar_one())

    def show(self, ref: str | VersionInfo) -> dict[str, Any]:
        """Everything known about one version, as the `adapt show --json` object."""
        with self.session() as s:
            if isinstance(ref, VersionInfo):
                row = s.get(AdapterVersion, ref.id)
                if row is None:
                    raise NotFound("version", ref.ref)
                name = ref.name
            else:
                row, name = self._resolve_row(s, ref)
            info = self._info(s, row, name)
            tags = sorted(
                s.execute(select(Tag.name).where(Tag.version_id == info.id)).scalars()
            )
            parents = [
                {"ref": ln.parent_ref, "weight": ln.weight, "role": ln.role, "params": ln.params}
                for ln in s.execute(
                    select(Lineage).where(Lineage.child_id == info.id).order_by(Lineage.id)
                ).scalars()
            ]
            children = [
                {"ref": f"{n}@{v}", "role": role}
                for n, v, role in s.execute(
                    select(Adapter.name, AdapterVersion.version, Lineage.role)
                    .join(AdapterVersion, AdapterVersion.id == Lineage.child_id)
                    .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                    .where(Lineage.parent_id == info.id)
                )
            ]
            scores = [
                {
                    "metric": e.metric,
                    "dataset": e.dataset,
                    "value": e.value,
                    "base_fingerprint": e.base_fingerprint,
                    "run_id": e.run_id,
                    "created_at": e.created_at,
                }
                for e in s.execute(
                    select(EvalScore).where(EvalScore.version_id == info.id).order_by(EvalScore.id)
                ).scalars()
            ]
            runs = [
                {
                    "id": r.id,
                    "status": r.status,
                    "device": r.device,
                    "base_fingerprint": r.base_fingerprint,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                }
                for r in s.execute(
                    select(ValidationRun)
                    .where(ValidationRun.version_id == info.id)
                    .order_by(ValidationRun.id)
                ).scalars()
            ]
            hub = [
                {"repo": h.repo, "commit": h.commit, "tag": h.tag, "direction": h.direction,
                 "at": h.at}
                for h in s.execute(
                    select(HubLink).where(HubLink.version_id == info.id).order_by(HubLink.id)
                ).scalars()
            ]
        return {
            "name": info.name,
            "version": info.version,
            "ref": info.ref,
            "digest": info.digest,
            "method": info.method,
            "peft_type": info.peft_type,
            "rank": info.rank,
            "alpha": info.alpha,
            "use_rslora": info.use_rslora,
            "rank_pattern": info.rank_pattern,
            "alpha_pattern": info.alpha_pattern,
            "target_modules": info.target_modules,
            "modules_to_save": info.modules_to_save,
            "task_type": info.task_type,
            "base_model": info.base_model,
            "base_fingerprint": info.base_fingerprint,
            "params": info.params,
            "size_bytes": info.size_bytes,
            "dtype": info.dtype,
            "tags": tags,
            "files": [asdict(f) for f in info.files],
            "parents": parents,
            "children": children,
            "scores": scores,
            "validation_runs": runs,
            "hub": hub,
            "recipe": info.recipe,
            "source": info.source,
            "note": info.note,
            "created_at": info.created_at,
        }

    # -- base models -------------------------------------------------------------------------
    def fingerprint(self, model_dir: str | Path) -> ModelFingerprint:
        """Fingerprint a checkpoint (cached by file stats under ADAPT_HOME/cache)."""
        return fingerprint_model(model_dir, cache_dir=self.settings.cache_dir)

    def add_base(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        kind: str = "base",
        source_version_id: int | None = None,
        parent_fingerprint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> BaseInfo:
        """Record a checkpoint by fingerprint (idempotent; a new name or path updates it)."""
        if name is not None:
            check_name(name, "base name")
        fp = self.fingerprint(model_dir)
        with self.session() as s:
            row = s.execute(
                select(BaseRow).where(BaseRow.fingerprint == fp.fingerprint)
            ).scalar_one_or_none()
            if row is None:
                row = BaseRow(
                    fingerprint=fp.fingerprint,
                    structure=fp.structure,
                    architecture=fp.architecture,
                    params=fp.params,
                    dtype=fp.dtype,
                    kind=kind,
                )
            row.path = fp.path
            if name is not None:
                row.name = name
            if source_version_id is not None:
                row.source_version_id = source_version_id
            if parent_fingerprint is not None:
                row.parent_fingerprint = parent_fingerprint
            if details is not None:
                row.details = details
            if kind != "base":
                row.kind = kind
            s.add(row)
            try:
                s.commit()
            except DBIntegrityError:  # registered concurrently by another process
                s.rollback()
                row = s.execute(
                    select(BaseRow).where(BaseRow.fingerprint == fp.fingerprint)
                ).scalar_one()
            return _base_info(row)

    def find_base(self, key: str) -> BaseInfo | None:
        """A registered model by exact fingerprint, fingerprint prefix, or name."""
        with self.session() as s:
            row = s.execute(select(BaseRow).where(BaseRow.fingerprint == key)).scalar_one_or_none()
            if row is None and ":" in key and len(key) >= 8:
                rows = s.execute(
                    select(BaseRow).where(col(BaseRow.fingerprint).startswith(key, autoescape=True))
                ).scalars().all()
                row = rows[0] if len(rows) == 1 else None
            if row is None:
                row = s.execute(
                    select(BaseRow).where(BaseRow.name == key).order_by(BaseRow.id.desc())
                ).scalars().first()
            return _base_info(row) if row is not None else None

    def list_bases(self, kind: str | None = None) -> list[BaseInfo]:
        with self.session() as s:
            q = select(BaseRow).order_by(BaseRow.kind, BaseRow.name, BaseRow.id)
            if kind:
                q = q.where(BaseRow.kind == kind)
            return [_base_info(r) for r in s.execute(q).scalars()]

    def _base_fingerprints(self, key: str) -> list[str]:
        with self.session() as s:
            return list(
                s.execute(select(BaseRow.fingerprint).where(BaseRow.name == key)).scalars()
            )

    # -- maintenance -------------------------------------------------------------------------
    def gc(self, *, dry_run: bool = False, temp_grace_seconds: float = 3600) -> GcReport:
        """Remove blobs no version references, and temp files left by interrupted writes."""
        report = GcReport()
        with self.session() as s:
            self._write_lock(s)
            # the transaction holds the write lock (BEGIN IMMEDIATE on SQLite, an advisory lock
            # on PostgreSQL), so no add commits rows for a blob while we delete it
            referenced = set(s.execute(select(VersionFile.sha256).distinct()).scalars())
            for sha in list(self.store):
                if sha in referenced:
                    continue
                report.removed_blobs.append(sha)
                report.removed_bytes += self.store.path(sha).stat().st_size
                if not dry_run:
                    self.store.remove(sha)
            if not dry_run and report.removed_blobs:
                for chunk in _chunks(report.removed_blobs, 500):
                    s.execute(delete(Blob).where(Blob.sha256.in_(chunk)))
            if not dry_run:
                s.execute(delete(Blob).where(Blob.sha256.not_in(select(VersionFile.sha256))))
            # a temp file may belong to a write in progress: only old ones are abandoned
            cutoff = datetime.now() - timedelta(seconds=temp_grace_seconds)
            for tmp in self.store.temp_files():
                if datetime.fromtimestamp(tmp.stat().st_mtime) <= cutoff:
                    report.removed_temp_files += 1
                    if not dry_run:
                        tmp.unlink(missing_ok=True)
            s.commit()
        return report

    def fsck(self, *, verify_hashes: bool = True) -> FsckReport:
        """Every file row has its blob; every blob hashes to its name; orphans listed apart."""
        report = FsckReport()
        with self.session() as s:
            rows = s.execute(
                select(VersionFile.sha256, VersionFile.path, Adapter.name, AdapterVersion.version)
                .join(AdapterVersion, AdapterVersion.id == VersionFile.version_id)
                .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
            ).all()
            known = set(s.execute(select(Blob.sha256)).scalars())
        referenced: set[str] = set()
        for sha, path, name, version in rows:
            report.checked_rows += 1
            referenced.add(sha)
            if not self.store.has(sha):
                report.problems.append(f"{name}@{version}/{path}: blob {sha[:16]} is missing")
            elif sha not in known:
                report.problems.append(f"{name}@{version}/{path}: blob {sha[:16]} has no row")
        for sha in self.store:
            report.checked_blobs += 1
            if verify_hashes:
                actual = self.store.verify(sha)
                if actual is not None:
                    report.problems.append(
                        f"blob {sha[:16]} hashes to {actual[:16]}: its bytes changed"
                    )
            if sha not in referenced:
                report.orphan_blobs.append(sha)
        return report

    # -- model ops (delegates to registry.flows.merge / quantize / compose) -------------------

    # -- validation (delegates to registry.validation) ---------------------------------------

    # -- extraction and conversion (delegates to registry.flows.extract) ---------------------

    # -- serving targets and exports (delegates to registry.flows.ship) ----------------------


def _base_info(row: BaseRow) -> BaseInfo:
    assert row.id is not None
    return BaseInfo(
        id=row.id,
        fingerprint=row.fingerprint,
        structure=row.structure,
        name=row.name,
        path=row.path,
        architecture=row.architecture,
        params=row.params,
        dtype=row.dtype,
        kind=row.kind,
        source_version_id=row.source_version_id,
        parent_fingerprint=row.parent_fingerprint,
        details=row.details,
        created_at=row.created_at,
    )


def derive_name(path: Path) -> str:
    """An adapter name from a directory name: lowercased, other characters folded to '-'."""
    raw = path.resolve().name.lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")
    name = re.sub(r"\.{2,}", ".", name)
    return check_name(name or "adapter")


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


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _crash_point(name: str) -> None:
    """Failpoint for crash tests: ADAPT_CRASH_AT=<name> kills the process here, hard."""
    if os.environ.get("ADAPT_CRASH_AT") == name:
        os._exit(137)


__all__ = [
    "AddResult",
    "BaseInfo",
    "FileInfo",
    "FsckReport",
    "GcReport",
    "ParentLink",
    "Registry",
    "VersionInfo",
    "__version__",
]
