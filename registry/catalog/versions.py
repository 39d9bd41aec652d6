"""Adapters, versions, files, tags, scores and lineage: every query and write on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from registry.catalog.hub import ImportedHistory, apply_history
from registry.catalog.sql import Row, Tx, in_clause, json_out, time_out
from registry.errors import InUse, NotFound, UsageError
from registry.records import (
    FileInfo,
    ParentLink,
    VersionDetail,
    VersionInfo,
    VersionSummary,
)
from registry.refs import Ref

if TYPE_CHECKING:
    from registry.catalog import Catalog

VERSION_COLUMNS = (
    "v.id, v.adapter_id, v.version, v.manifest_digest, v.method, v.peft_type, v.rank, v.alpha, "
    "v.use_rslora, v.rank_pattern, v.alpha_pattern, v.target_modules, v.modules_to_save, "
    "v.task_type, v.base_model, v.base_fingerprint, v.params, v.size_bytes, v.dtype, v.source, "
    "v.recipe, v.config, v.note, v.created_at"
)


# -- resolving -----------------------------------------------------------------------------------
def resolve_row(tx: Tx, ref: str | Ref) -> tuple[Row, str]:
    """The version row (VERSION_COLUMNS) and adapter name a reference names; NotFound if none."""
    parsed = ref if isinstance(ref, Ref) else Ref.parse(ref)
    select = f"SELECT {VERSION_COLUMNS}, a.name FROM adapter_version v " \
             "JOIN adapter a ON a.id = v.adapter_id"
    if parsed.digest is not None:
        rows = tx.all(f"{select} WHERE v.manifest_digest LIKE :prefix "
                      "ORDER BY a.name, v.version", prefix=f"sha256:{parsed.digest}%")
        if not rows:
            raise NotFound("version", str(parsed), "see `adapt list`")
        if len({r[3] for r in rows}) > 1:
            raise UsageError(f"digest prefix {parsed} is ambiguous: use more hex digits")
        return rows[0][:-1], rows[0][-1]
    adapter_id = tx.scalar("SELECT id FROM adapter WHERE name = :name", name=parsed.name)
    if adapter_id is None:
        raise NotFound("adapter", str(parsed.name), "see `adapt list`")
    if parsed.version is not None:
        row = tx.one(f"{select} WHERE v.adapter_id = :aid AND v.version = :v",
                     aid=adapter_id, v=parsed.version)
        if row is None:
            raise NotFound("version", str(parsed), f"see `adapt show {parsed.name}`")
    elif parsed.tag is not None:
        row = tx.one(f"{select} JOIN tag t ON t.version_id = v.id "
                     "WHERE t.adapter_id = :aid AND t.name = :tag", aid=adapter_id, tag=parsed.tag)
        if row is None:
            raise NotFound("tag", str(parsed), f"see `adapt show {parsed.name}`")
    else:
        row = tx.one(f"{select} WHERE v.adapter_id = :aid ORDER BY v.version DESC LIMIT 1",
                     aid=adapter_id)
        if row is None:
            raise NotFound("version", str(parsed))
    return row[:-1], row[-1]


def row_by_id(tx: Tx, version_id: int) -> tuple[Row, str] | None:
    row = tx.one(f"SELECT {VERSION_COLUMNS}, a.name FROM adapter_version v "
                 "JOIN adapter a ON a.id = v.adapter_id WHERE v.id = :id", id=version_id)
    return (row[:-1], row[-1]) if row is not None else None


def version_info(tx: Tx, row: Row, name: str) -> VersionInfo:
    files = tx.all("SELECT path, sha256, size FROM version_file WHERE version_id = :id "
                   "ORDER BY path", id=row[0])
    return VersionInfo(
        id=row[0], adapter_id=row[1], name=name, version=row[2], digest=row[3], method=row[4],
        peft_type=row[5], rank=row[6], alpha=row[7], use_rslora=bool(row[8]),
        rank_pattern=dict(json_out(row[9]) or {}), alpha_pattern=dict(json_out(row[10]) or {}),
        target_modules=json_out(row[11]), modules_to_save=list(json_out(row[12]) or []),
        task_type=row[13], base_model=row[14], base_fingerprint=row[15], params=row[16],
        size_bytes=row[17], dtype=row[18], source=row[19], recipe=json_out(row[20]),
        config=dict(json_out(row[21]) or {}), note=row[22], created_at=time_out(row[23]),  # type: ignore[arg-type]
        files=tuple(FileInfo(p, sha, size) for p, sha, size in files),
    )


def resolve(cat: Catalog, ref: str | Ref) -> VersionInfo:
    with cat.tx() as tx:
        row, name = resolve_row(tx, ref)
        return version_info(tx, row, name)


def by_id(cat: Catalog, version_id: int) -> VersionInfo | None:
    with cat.tx() as tx:
        found = row_by_id(tx, version_id)
        return version_info(tx, *found) if found else None


def by_digest(cat: Catalog, digest: str) -> VersionInfo | None:
    with cat.tx() as tx:
        vid = tx.scalar("SELECT id FROM adapter_version WHERE manifest_digest = :d "
                        "ORDER BY id LIMIT 1", d=digest)
        found = row_by_id(tx, vid) if vid is not None else None
        return version_info(tx, *found) if found else None


def by_digest_prefix(cat: Catalog, hex_prefix: str) -> VersionInfo | None:
    """The oldest live version whose digest's hex starts with `hex_prefix` (checkout folders)."""
    with cat.tx() as tx:
        vid = tx.scalar("SELECT id FROM adapter_version WHERE manifest_digest LIKE :p "
                        "ORDER BY id LIMIT 1", p=f"sha256:{hex_prefix.replace('%', '')}%")
        found = row_by_id(tx, vid) if vid is not None else None
        return version_info(tx, *found) if found else None


# -- adding --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewVersion:
    """What `add` read from an adapter directory, ready to insert."""

    name: str
    digest: str
    peft_type: str
    method: str
    rank: int | None
    alpha: float | None
    use_rslora: bool
    rank_pattern: dict[str, int] | None
    alpha_pattern: dict[str, float] | None
    target_modules: Any
    modules_to_save: list[str] | None
    task_type: str | None
    base_model: str | None
    base_fingerprint: str | None
    params: int
    dtype: str
    source: str | None
    recipe: dict[str, Any] | None
    config: dict[str, Any] | None
    note: str | None
    files: tuple[FileInfo, ...]
    compat: dict[str, Any] | None = None


def insert_version(
    cat: Catalog,
    new: NewVersion,
    *,
    tags: Sequence[str] = (),
    parents: Sequence[ParentLink] = (),
    ensure_blob: Callable[[FileInfo], None] = lambda f: None,
    before_commit: Callable[[], None] = lambda: None,
    history: ImportedHistory | None = None,
    preferred_version: int | None = None,
) -> tuple[VersionInfo, bool]:
    """Insert a version with its files, lineage and tags in one transaction.

    Identical content under the same name returns the existing version (created False).
    `ensure_blob` runs under the write lock for each file, so a blob that a concurrent gc removed
    before the lock was taken is put back before its row commits.
    """
    with cat.tx(write=True) as tx:
        now = tx.now()
        adapter_id = tx.scalar("SELECT id FROM adapter WHERE name = :n", n=new.name)
        if adapter_id is None:
            adapter_id = tx.insert("INSERT INTO adapter (name, created_at, updated_at) "
                                   "VALUES (:n, :t, :t) RETURNING id", n=new.name, t=now)
        existing = tx.scalar("SELECT id FROM adapter_version WHERE adapter_id = :a AND "
                             "manifest_digest = :d", a=adapter_id, d=new.digest)
        if existing is not None:
            for t in tags:
                set_tag(tx, adapter_id, existing, t)
            if history is not None:
                apply_history(tx, existing, history, created=False)
            found = row_by_id(tx, existing)
            assert found is not None
            return version_info(tx, *found), False
        version = _next_number(tx, adapter_id, new.name, preferred_version)
        vid = tx.insert(
            "INSERT INTO adapter_version (adapter_id, version, manifest_digest, peft_type, "
            "method, rank, alpha, use_rslora, rank_pattern, alpha_pattern, target_modules, "
            "modules_to_save, task_type, base_model, base_fingerprint, params, size_bytes, "
            "dtype, source, recipe, config, note, created_at, compat) VALUES (:adapter_id, "
            ":version, :digest, :peft_type, :method, :rank, :alpha, :use_rslora, :rank_pattern, "
            ":alpha_pattern, :target_modules, :modules_to_save, :task_type, :base_model, "
            ":base_fingerprint, :params, :size_bytes, :dtype, :source, :recipe, :config, :note, "
            ":created_at, :compat) RETURNING id",
            adapter_id=adapter_id, version=version, digest=new.digest,
            peft_type=new.peft_type, method=new.method, rank=new.rank, alpha=new.alpha,
            use_rslora=bool(new.use_rslora), rank_pattern=tx.json_in(new.rank_pattern or None),
            alpha_pattern=tx.json_in(new.alpha_pattern or None),
            target_modules=tx.json_in(new.target_modules),
            modules_to_save=tx.json_in(new.modules_to_save or None), task_type=new.task_type,
            base_model=new.base_model, base_fingerprint=new.base_fingerprint, params=new.params,
            size_bytes=sum(f.size for f in new.files), dtype=new.dtype, source=new.source,
            recipe=tx.json_in(new.recipe), config=tx.json_in(new.config), note=new.note,
            created_at=now, compat=tx.json_in(new.compat),
        )
        for f in new.files:
            ensure_blob(f)
            if tx.scalar("SELECT 1 FROM blob WHERE sha256 = :s", s=f.sha256) is None:
                tx.run("INSERT INTO blob (sha256, size, created_at) VALUES (:s, :n, :t)",
                       s=f.sha256, n=f.size, t=now)
            tx.run("INSERT INTO version_file (version_id, path, sha256, size) "
                   "VALUES (:v, :p, :s, :n)", v=vid, p=f.path, s=f.sha256, n=f.size)
        for p in parents:
            parent_row, parent_name = resolve_row(tx, p.ref)
            tx.run("INSERT INTO lineage (child_id, parent_id, parent_ref, parent_digest, weight, "
                   "role, params) VALUES (:c, :p, :r, :d, :w, :role, :params)", c=vid,
                   p=parent_row[0], r=f"{parent_name}@{parent_row[2]}", d=parent_row[3],
                   w=p.weight, role=p.role, params=tx.json_in(p.params))
        # children that knew this content only as a remote or deleted parent now link to it
        tx.run("UPDATE lineage SET parent_id = :v WHERE parent_id IS NULL AND "
               "parent_digest = :d AND child_id != :v", v=vid, d=new.digest)
        for t in tags:
            set_tag(tx, adapter_id, vid, t)
        tx.run("UPDATE adapter SET updated_at = :t WHERE id = :a", t=now, a=adapter_id)
        if history is not None:
            apply_history(tx, vid, history, created=True)
        before_commit()
        found = row_by_id(tx, vid)
        assert found is not None
        return version_info(tx, *found), True


def _next_number(tx: Tx, adapter_id: int, name: str, preferred: int | None) -> int:
    """The next version number: never one a live or deleted version of the line has had.

    A pulled version keeps its remote number `preferred` when the local line never used it.
    """
    used = {r[0] for r in tx.all("SELECT version FROM adapter_version WHERE adapter_id = :a",
                                 a=adapter_id)}
    used |= {r[0] for r in tx.all("SELECT version FROM tombstone WHERE adapter_name = :n",
                                  n=name)}
    if preferred is not None and preferred >= 1 and preferred not in used:
        return preferred
    return max(used, default=0) + 1


# -- tags, scores, removal -----------------------------------------------------------------------
def set_tag(tx: Tx, adapter_id: int, version_id: int, tag: str, *, protect: bool = False,
            force: bool = False) -> None:
    """Point a tag at a version; a protected tag moves only with `force`."""
    current = tx.one("SELECT version_id, protected FROM tag WHERE adapter_id = :a AND "
                     "name = :n", a=adapter_id, n=tag)
    if current is None:
        tx.run("INSERT INTO tag (adapter_id, name, version_id, updated_at, protected) "
               "VALUES (:a, :n, :v, :t, :p)", a=adapter_id, n=tag, v=version_id, t=tx.now(),
               p=bool(protect))
        return
    if current[1] and current[0] != version_id and not force:
        raise InUse(f"tag {tag!r}", [f"protected, on version id {current[0]}"],
                    "pass --force to move a protected tag")
    tx.run("UPDATE tag SET version_id = :v, updated_at = :t, protected = :p "
           "WHERE adapter_id = :a AND name = :n", v=version_id, t=tx.now(),
           p=bool(protect or current[1]), a=adapter_id, n=tag)


def tag(cat: Catalog, ref: str, tag_name: str, *, protect: bool = False,
        force: bool = False) -> VersionInfo:
    with cat.tx(write=True) as tx:
        row, name = resolve_row(tx, ref)
        set_tag(tx, row[1], row[0], tag_name, protect=protect, force=force)
        return version_info(tx, row, name)


def untag(cat: Catalog, name: str, tag_name: str, *, force: bool = False) -> None:
    with cat.tx(write=True) as tx:
        adapter_id = tx.scalar("SELECT id FROM adapter WHERE name = :n", n=name)
        if adapter_id is None:
            raise NotFound("adapter", name, "see `adapt list`")
        protected = tx.scalar("SELECT protected FROM tag WHERE adapter_id = :a AND name = :n",
                              a=adapter_id, n=tag_name)
        if protected and not force:
            raise InUse(f"tag {name}:{tag_name}", ["protected"],
                        "pass --force to remove a protected tag")
        if not tx.run("DELETE FROM tag WHERE adapter_id = :a AND name = :n", a=adapter_id,
                      n=tag_name):
            raise NotFound("tag", f"{name}:{tag_name}", f"see `adapt show {name}`")


def removal_blockers(tx: Tx, version_id: int) -> list[str]:
    """Why a version should not be deleted without --force: tags, pushes, children, passes."""
    why = [f"tagged {t}" for (t,) in tx.all(
        "SELECT name FROM tag WHERE version_id = :v ORDER BY name", v=version_id)]
    why += [f"pushed to {r}" for (r,) in tx.all(
        "SELECT DISTINCT repo FROM hub_link WHERE version_id = :v AND direction = 'push' "
        "ORDER BY repo", v=version_id)]
    why += [f"parent of {n}@{v}" for n, v in tx.all(
        "SELECT a.name, cv.version FROM lineage l JOIN adapter_version cv ON cv.id = l.child_id "
        "JOIN adapter a ON a.id = cv.adapter_id WHERE l.parent_id = :v "
        "ORDER BY a.name, cv.version", v=version_id)]
    passed = tx.scalar("SELECT COUNT(*) FROM validation_run WHERE version_id = :v AND "
                       "status = 'passed'", v=version_id)
    if passed:
        why.append(f"{passed} passing validation run(s)")
    return why


def remove(cat: Catalog, ref: str, *, force: bool = False, dry_run: bool = False
           ) -> tuple[VersionInfo, list[str]]:
    """Delete one version and what hangs off it, in one transaction, leaving a tombstone.

    Refused (InUse) while the version is tagged, pushed, a parent, or validated, unless
    `force`. Returns the version and the reasons that `force` overrode (or would block).
    Blobs stay until gc.
    """
    with cat.tx(write=not dry_run) as tx:
        row, name = resolve_row(tx, ref)
        info = version_info(tx, row, name)
        vid = row[0]
        blockers = removal_blockers(tx, vid)
        if dry_run:
            return info, blockers
        if blockers and not force:
            raise InUse(info.ref, blockers, "pass --force to delete it anyway, or "
                        "--dry-run to see what would go")
        tx.run("INSERT INTO tombstone (adapter_name, version, digest, deleted_at) VALUES "
               "(:n, :v, :d, :t)", n=name, v=info.version, d=info.digest, t=tx.now())
        tx.run("DELETE FROM eval_score WHERE version_id = :v OR run_id IN "
               "(SELECT id FROM validation_run WHERE version_id = :v)", v=vid)
        for table in ("version_file", "tag", "validation_run", "hub_link"):
            tx.run(f"DELETE FROM {table} WHERE version_id = :v", v=vid)
        tx.run("DELETE FROM lineage WHERE child_id = :v", v=vid)
        tx.run("UPDATE lineage SET parent_id = NULL WHERE parent_id = :v", v=vid)
        tx.run("UPDATE base_model SET source_version_id = NULL WHERE source_version_id = :v",
               v=vid)
        tx.run("DELETE FROM adapter_version WHERE id = :v", v=vid)
        if not tx.scalar("SELECT COUNT(*) FROM adapter_version WHERE adapter_id = :a", a=row[1]):
            tx.run("DELETE FROM adapter WHERE id = :a", a=row[1])
        return info, blockers


# -- listing and showing -------------------------------------------------------------------------
LIST_ORDERS = {
    "name": "a.name, v.version",
    "updated": "v.created_at DESC, a.name",
    "method": "v.method, a.name",
    "rank": "v.rank, a.name",
}


def _where(tx: Tx, *, base_fps: Sequence[str], base: str | None, method: str | None,
           tag_name: str | None, name_like: str | None, all_versions: bool
           ) -> tuple[str, dict[str, Any]]:
    joins = ["JOIN adapter a ON a.id = v.adapter_id"]
    where: list[str] = []
    params: dict[str, Any] = {}
    if not all_versions:
        # one index scan of (adapter_id, version); a correlated MAX per row is 10x slower
        joins.append("JOIN (SELECT adapter_id AS aid, MAX(version) AS latest FROM "
                     "adapter_version GROUP BY adapter_id) l ON l.aid = v.adapter_id "
                     "AND l.latest = v.version")
    if method:
        where.append("v.method = :method")
        params["method"] = method.upper()
    if name_like:
        where.append("a.name LIKE :name_like ESCAPE '\\'")
        params["name_like"] = "%" + _escape_like(name_like.lower()) + "%"
    if tag_name:
        joins.append("JOIN tag t ON t.version_id = v.id AND t.name = :tag")
        params["tag"] = tag_name
    if base:
        clause = "v.base_model = :base OR v.base_fingerprint LIKE :base_prefix ESCAPE '\\'"
        params.update(base=base, base_prefix=_escape_like(base) + "%")
        if base_fps:
            fps, fp_params = in_clause("fp", list(base_fps))
            clause = f"v.base_fingerprint IN {fps} OR {clause}"
            params.update(fp_params)
        where.append(f"({clause})")
    sql = " ".join(joins) + (" WHERE " + " AND ".join(where) if where else "")
    return sql, params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _base_fps(tx: Tx, base: str | None) -> list[str]:
    if not base:
        return []
    return [r[0] for r in tx.all("SELECT fingerprint FROM base_model WHERE name = :n", n=base)]


def list_versions(cat: Catalog, *, base: str | None = None, method: str | None = None,
                  tag: str | None = None, name_like: str | None = None,
                  all_versions: bool = False, limit: int | None = None, offset: int = 0,
                  order: str = "name") -> list[VersionSummary]:
    if order not in LIST_ORDERS:
        raise UsageError(f"unknown order {order!r}: use one of {', '.join(LIST_ORDERS)}")
    from registry.catalog import scores

    with cat.tx() as tx:
        where, params = _where(tx, base_fps=_base_fps(tx, base), base=base, method=method,
                               tag_name=tag, name_like=name_like, all_versions=all_versions)
        sql = ("SELECT v.id, a.name, v.version, v.method, v.rank, v.alpha, v.base_model, "
               "v.base_fingerprint, v.params, v.size_bytes, v.manifest_digest, v.created_at "
               f"FROM adapter_version v {where} ORDER BY {LIST_ORDERS[order]}")
        if limit is not None:
            sql += " LIMIT :limit OFFSET :offset"
            params.update(limit=limit, offset=offset)
        elif offset:
            sql += " LIMIT -1 OFFSET :offset" if tx.dialect == "sqlite" else " OFFSET :offset"
            params["offset"] = offset
        rows = tx.all(sql, **params)
        tags: dict[int, list[str]] = {}
        best: dict[int, dict[str, float]] = {}
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), 500):
            chunk, chunk_params = in_clause("id", ids[i:i + 500])
            for vid, tname in tx.all(f"SELECT version_id, name FROM tag WHERE version_id IN "
                                     f"{chunk}", **chunk_params):
                tags.setdefault(vid, []).append(tname)
            for vid, metric, value, hib in tx.all(
                f"SELECT version_id, metric, value, higher_is_better FROM eval_score "
                f"WHERE version_id IN {chunk} ORDER BY id", **chunk_params
            ):
                scores.keep_best(best.setdefault(vid, {}), metric, value, hib)
    return [
        VersionSummary(
            name=r[1], version=r[2], ref=f"{r[1]}@{r[2]}", method=r[3], rank=r[4], alpha=r[5],
            base_model=r[6], base_fingerprint=r[7], params=r[8], size_bytes=r[9], digest=r[10],
            created_at=time_out(r[11]),  # type: ignore[arg-type]
            tags=sorted(tags.get(r[0], [])), scores=best.get(r[0], {}),
        )
        for r in rows
    ]


def count_versions(cat: Catalog, *, base: str | None = None, method: str | None = None,
                   tag: str | None = None, name_like: str | None = None,
                   all_versions: bool = False) -> int:
    with cat.tx() as tx:
        where, params = _where(tx, base_fps=_base_fps(tx, base), base=base, method=method,
                               tag_name=tag, name_like=name_like, all_versions=all_versions)
        return int(tx.scalar(f"SELECT COUNT(*) FROM adapter_version v {where}", **params) or 0)


def detail(cat: Catalog, ref: str | VersionInfo) -> VersionDetail:
    """Everything known about one version, read in one transaction."""
    with cat.tx() as tx:
        if isinstance(ref, VersionInfo):
            found = row_by_id(tx, ref.id)
            if found is None:
                raise NotFound("version", ref.ref)
            row, name = found
        else:
            row, name = resolve_row(tx, ref)
        info = version_info(tx, row, name)
        vid = info.id
        tags = sorted(r[0] for r in tx.all("SELECT name FROM tag WHERE version_id = :v", v=vid))
        parents = [
            {"ref": _parent_label(tx, ref_, pid, digest), "weight": w, "role": role,
             "params": json_out(params), "digest": digest,
             "state": _parent_state(tx, ref_, pid, digest)}
            for ref_, w, role, params, pid, digest in tx.all(
                "SELECT parent_ref, weight, role, params, parent_id, parent_digest FROM lineage "
                "WHERE child_id = :v ORDER BY id", v=vid)
        ]
        children = [
            {"ref": f"{n}@{v}", "role": role}
            for n, v, role in tx.all(
                "SELECT a.name, cv.version, l.role FROM lineage l "
                "JOIN adapter_version cv ON cv.id = l.child_id "
                "JOIN adapter a ON a.id = cv.adapter_id WHERE l.parent_id = :v "
                "ORDER BY l.id", v=vid)
        ]
        scores = [
            {"metric": m, "dataset": d, "value": x, "base_fingerprint": fp, "run_id": run,
             "created_at": time_out(t), "higher_is_better": None if hib is None else bool(hib),
             "quantization": q}
            for m, d, x, fp, run, t, hib, q in tx.all(
                "SELECT metric, dataset, value, base_fingerprint, run_id, created_at, "
                "higher_is_better, quantization FROM eval_score WHERE version_id = :v "
                "ORDER BY id", v=vid)
        ]
        runs = [
            {"id": i, "status": st, "device": dev, "base_fingerprint": fp,
             "started_at": time_out(a), "finished_at": time_out(b)}
            for i, st, dev, fp, a, b in tx.all(
                "SELECT id, status, device, base_fingerprint, started_at, finished_at "
                "FROM validation_run WHERE version_id = :v ORDER BY id", v=vid)
        ]
        compat = json_out(tx.scalar("SELECT compat FROM adapter_version WHERE id = :v", v=vid))
        hub = [
            {"repo": repo, "commit": commit, "tag": t, "direction": d, "at": time_out(at)}
            for repo, commit, t, d, at in tx.all(
                "SELECT repo, \"commit\", tag, direction, at FROM hub_link "
                "WHERE version_id = :v ORDER BY id", v=vid)
        ]
    return VersionDetail(
        name=info.name, version=info.version, ref=info.ref, digest=info.digest,
        method=info.method, peft_type=info.peft_type, rank=info.rank, alpha=info.alpha,
        use_rslora=info.use_rslora, rank_pattern=info.rank_pattern,
        alpha_pattern=info.alpha_pattern, target_modules=info.target_modules,
        modules_to_save=info.modules_to_save, task_type=info.task_type,
        base_model=info.base_model, base_fingerprint=info.base_fingerprint, params=info.params,
        size_bytes=info.size_bytes, dtype=info.dtype, tags=tags,
        files=[asdict(f) for f in info.files], parents=parents, children=children,
        scores=scores, validation_runs=runs, hub=hub, recipe=info.recipe, source=info.source,
        note=info.note, created_at=info.created_at, new_heads=list((compat or {}).get(
            "new_heads", [])),
    )


def _parent_state(tx: Tx, ref: str, parent_id: int | None, digest: str | None) -> str:
    """local (a link), deleted (a tombstone of that content), remote (hf://), or unknown."""
    if parent_id is not None:
        return "local"
    if ref.startswith("hf://"):
        return "remote"
    if digest and tx.scalar("SELECT 1 FROM tombstone WHERE digest = :d", d=digest):
        return "deleted"
    return "unknown"


def _parent_label(tx: Tx, ref: str, parent_id: int | None, digest: str | None) -> str:
    """The parent's current local reference when linked (numbers may differ after a pull)."""
    if parent_id is not None:
        found = tx.one("SELECT a.name, v.version FROM adapter_version v JOIN adapter a ON "
                       "a.id = v.adapter_id WHERE v.id = :id", id=parent_id)
        if found is not None:
            return f"{found[0]}@{found[1]}"
    return ref
