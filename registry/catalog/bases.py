"""Base models (and merged/quantized outputs) known by fingerprint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.catalog.sql import Row, Tx, json_out, time_out
from registry.errors import InUse, NotFound
from registry.records import BaseChoice, BaseInfo

if TYPE_CHECKING:
    from registry.catalog import Catalog
    from registry.fingerprint import ModelFingerprint

BASE_COLUMNS = ("id, fingerprint, structure, name, path, architecture, params, dtype, kind, "
                "source_version_id, parent_fingerprint, details, created_at")


def _info(row: Row) -> BaseInfo:
    return BaseInfo(
        id=row[0], fingerprint=row[1], structure=row[2], name=row[3], path=row[4],
        architecture=row[5], params=row[6], dtype=row[7], kind=row[8],
        source_version_id=row[9], parent_fingerprint=row[10], details=json_out(row[11]),
        created_at=time_out(row[12]),  # type: ignore[arg-type]
    )


def _by_fingerprint(tx: Tx, fingerprint: str) -> Row | None:
    return tx.one(f"SELECT {BASE_COLUMNS} FROM base_model WHERE fingerprint = :fp",
                  fp=fingerprint)


def record(cat: Catalog, fp: ModelFingerprint, *, name: str | None, kind: str,
           source_version_id: int | None, parent_fingerprint: str | None,
           details: dict[str, Any] | None) -> BaseInfo:
    """Insert or update a checkpoint by fingerprint (idempotent; a new name or path updates)."""
    with cat.tx(write=True) as tx:
        if _by_fingerprint(tx, fp.fingerprint) is None:
            tx.run("INSERT INTO base_model (fingerprint, structure, architecture, params, dtype, "
                   "kind, created_at) VALUES (:fp, :st, :arch, :params, :dtype, :kind, :t)",
                   fp=fp.fingerprint, st=fp.structure, arch=fp.architecture, params=fp.params,
                   dtype=fp.dtype, kind=kind, t=tx.now())
        updates: dict[str, Any] = {"path": fp.path}
        if name is not None:
            updates["name"] = name
        if source_version_id is not None:
            updates["source_version_id"] = source_version_id
        if parent_fingerprint is not None:
            updates["parent_fingerprint"] = parent_fingerprint
        if details is not None:
            updates["details"] = tx.json_in(details)
        if kind != "base":
            updates["kind"] = kind
        sets = ", ".join(f"{k} = :{k}" for k in updates)
        tx.run(f"UPDATE base_model SET {sets} WHERE fingerprint = :fp", fp=fp.fingerprint,
               **updates)
        row = _by_fingerprint(tx, fp.fingerprint)
        assert row is not None
        return _info(row)


def find(cat: Catalog, key: str) -> BaseInfo | None:
    """A registered model by exact fingerprint, unique fingerprint prefix, or name."""
    with cat.tx() as tx:
        row = _by_fingerprint(tx, key)
        if row is None and ":" in key and len(key) >= 8:
            rows = tx.all(f"SELECT {BASE_COLUMNS} FROM base_model WHERE fingerprint LIKE :p",
                          p=key.replace("%", "").replace("_", "\\_") + "%")
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            row = tx.one(f"SELECT {BASE_COLUMNS} FROM base_model WHERE name = :n "
                         "ORDER BY id DESC LIMIT 1", n=key)
        return _info(row) if row is not None else None


def list_bases(cat: Catalog, kind: str | None = None) -> list[BaseInfo]:
    with cat.tx() as tx:
        sql = f"SELECT {BASE_COLUMNS} FROM base_model"
        if kind:
            return [_info(r) for r in tx.all(f"{sql} WHERE kind = :k ORDER BY kind, name, id",
                                             k=kind)]
        return [_info(r) for r in tx.all(f"{sql} ORDER BY kind, name, id")]


def names(cat: Catalog) -> dict[str, str]:
    """Registered base names by fingerprint."""
    with cat.tx() as tx:
        return {fp: n for fp, n in tx.all("SELECT fingerprint, name FROM base_model") if n}


def referencing_versions(tx: Tx, fingerprint: str) -> list[str]:
    return [f"{n}@{v}" for n, v in tx.all(
        "SELECT a.name, v.version FROM adapter_version v JOIN adapter a ON a.id = v.adapter_id "
        "WHERE v.base_fingerprint = :fp ORDER BY a.name, v.version", fp=fingerprint)]


def remove(cat: Catalog, key: str, *, force: bool = False) -> BaseInfo:
    """Forget a registered model; refused while versions reference it unless `force`."""
    found = find(cat, key)
    if found is None:
        raise NotFound("base model", key, "see `adapt base list`")
    with cat.tx(write=True) as tx:
        users = referencing_versions(tx, found.fingerprint)
        if users and not force:
            raise InUse(f"base {found.name or found.fingerprint[:19]}", users)
        tx.run("DELETE FROM base_model WHERE id = :id", id=found.id)
    return found


def choices(cat: Catalog) -> list[BaseChoice]:
    """Bases that registered versions point at, with how many versions each."""
    with cat.tx() as tx:
        known = {fp: n for fp, n in tx.all("SELECT fingerprint, name FROM base_model") if n}
        rows = tx.all("SELECT base_fingerprint, base_model, COUNT(*) FROM adapter_version "
                      "GROUP BY base_fingerprint, base_model")
    merged: dict[str, BaseChoice] = {}
    for fp, model, count in rows:
        if fp and fp in known:
            key = label = known[fp]
        elif fp:
            key = fp[:23]  # "sha256:" + 16 hex: a prefix list_versions matches
            label = f"{short_base(model)} ({key})"
        elif model:
            key, label = model, short_base(model)
        else:
            continue
        old = merged.get(key)
        merged[key] = BaseChoice(label, key, count + (old.versions if old else 0))
    return sorted(merged.values(), key=lambda c: c.label)


def short_base(base_model: str | None) -> str:
    """The last part of a base model id or path: enough to tell bases apart in a column."""
    if not base_model:
        return "-"
    return base_model.rstrip("/").rsplit("/", 1)[-1] or base_model
