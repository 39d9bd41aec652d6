"""Hub links, and what a pull restores beside a version: lineage, runs, scores, its time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from registry.catalog.sql import Tx

if TYPE_CHECKING:
    from registry.catalog import Catalog


@dataclass(frozen=True)
class ImportedLineage:
    parent_ref: str  # printed reference, kept even when the parent is not in this registry
    parent_id: int | None
    weight: float | None = None
    role: str = "parent"
    params: dict[str, Any] | None = None
    parent_digest: str | None = None


@dataclass(frozen=True)
class HubLinkRecord:
    repo: str
    commit: str
    tag: str | None
    direction: str  # push | pull


@dataclass(frozen=True)
class ImportedHistory:
    """Metadata a pull restores with the version, in the same transaction (all or nothing)."""

    link: HubLinkRecord
    created_at: datetime | None = None
    lineage: tuple[ImportedLineage, ...] = ()
    runs: tuple[dict[str, Any], ...] = ()  # manifest validation_runs entries
    scores: tuple[dict[str, Any], ...] = ()  # manifest scores entries
    extra: dict[str, Any] = field(default_factory=dict)


def _time_in(tx: Tx, value: datetime | str | None) -> Any:
    if value is None:
        return tx.now()
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    naive = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(sep=" ", timespec="microseconds") if tx.dialect == "sqlite" else naive


def apply_history(tx: Tx, version_id: int, history: ImportedHistory, *, created: bool) -> None:
    """Write a pulled version's history (only when the version is new) and its Hub link."""
    if created:
        if history.created_at is not None:
            tx.run("UPDATE adapter_version SET created_at = :t WHERE id = :v",
                   t=_time_in(tx, history.created_at), v=version_id)
        for p in history.lineage:
            tx.run("INSERT INTO lineage (child_id, parent_id, parent_ref, parent_digest, weight, "
                   "role, params) VALUES (:c, :p, :r, :dg, :w, :role, :params)", c=version_id,
                   p=p.parent_id, r=p.parent_ref, dg=p.parent_digest, w=p.weight, role=p.role,
                   params=tx.json_in(p.params))
        run_ids: dict[Any, int] = {}
        for r in history.runs:
            run_ids[r.get("id")] = tx.insert(
                "INSERT INTO validation_run (version_id, base_fingerprint, device, status, "
                "figures, gates, started_at, finished_at) VALUES (:v, :fp, :dev, :st, :fig, "
                ":gates, :a, :b) RETURNING id", v=version_id, fp=r.get("base_fingerprint"),
                dev=r.get("device", "cpu"), st=r["status"], fig=tx.json_in(r.get("figures")),
                gates=tx.json_in(r.get("gates")), a=_time_in(tx, r.get("started_at")),
                b=_time_in(tx, r["finished_at"]) if r.get("finished_at") else None,
            )
        for sc in history.scores:
            tx.run("INSERT INTO eval_score (version_id, metric, dataset, value, "
                   "base_fingerprint, run_id, created_at, higher_is_better, quantization) "
                   "VALUES (:v, :m, :d, :x, :fp, :run, :t, :hib, :q)", v=version_id,
                   m=sc["metric"], d=sc.get("dataset"), x=sc["value"],
                   fp=sc.get("base_fingerprint"), run=run_ids.get(sc.get("run_id")),
                   t=_time_in(tx, sc.get("created_at")), hib=sc.get("higher_is_better"),
                   q=sc.get("quantization"))
    add_link(tx, version_id, history.link)


def add_link(tx: Tx, version_id: int, link: HubLinkRecord) -> None:
    exists = tx.scalar("SELECT id FROM hub_link WHERE version_id = :v AND repo = :r AND "
                       "\"commit\" = :c AND direction = :d", v=version_id, r=link.repo,
                       c=link.commit, d=link.direction)
    if exists is None:
        tx.run("INSERT INTO hub_link (version_id, repo, \"commit\", tag, direction, at) "
               "VALUES (:v, :r, :c, :t, :d, :at)", v=version_id, r=link.repo, c=link.commit,
               t=link.tag, d=link.direction, at=tx.now())


def record_link(cat: Catalog, version_id: int, link: HubLinkRecord) -> None:
    with cat.tx(write=True) as tx:
        add_link(tx, version_id, link)


def last_repo(cat: Catalog, name: str) -> str | None:
    """The repo adapter `name` was last pushed to or pulled from."""
    with cat.tx() as tx:
        return tx.scalar("SELECT h.repo FROM hub_link h "
                         "JOIN adapter_version v ON v.id = h.version_id "
                         "JOIN adapter a ON a.id = v.adapter_id WHERE a.name = :n "
                         "ORDER BY h.id DESC LIMIT 1", n=name)


def version_numbers(cat: Catalog, name: str) -> list[int]:
    with cat.tx() as tx:
        return [r[0] for r in tx.all(
            "SELECT v.version FROM adapter_version v JOIN adapter a ON a.id = v.adapter_id "
            "WHERE a.name = :n ORDER BY v.version", n=name)]
