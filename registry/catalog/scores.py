"""Evaluation scores: keyed recording, best per direction, series and the rows search reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.catalog.sql import in_clause, time_out
from registry.catalog.versions import resolve_row
from registry.scoring import better, known_direction

if TYPE_CHECKING:
    from registry.catalog import Catalog


def add_score(cat: Catalog, ref: str, metric: str, value: float, *, dataset: str | None,
              base_fingerprint: str | None, run_id: int | None,
              higher_is_better: bool | None = None, quantization: str | None = None,
              append: bool = False) -> int:
    """Record a score; the same (version, metric, dataset, base, quantization, run) key is
    replaced unless `append` keeps the history. Returns how many earlier rows it replaced."""
    with cat.tx(write=True) as tx:
        row, _ = resolve_row(tx, ref)
        fp = base_fingerprint or row[15]
        replaced = 0
        if not append:
            replaced = tx.run(
                "DELETE FROM eval_score WHERE version_id = :v AND metric = :m AND "
                "COALESCE(dataset, '') = COALESCE(:d, '') AND "
                "COALESCE(base_fingerprint, '') = COALESCE(:fp, '') AND "
                "COALESCE(quantization, '') = COALESCE(:q, '') AND "
                "COALESCE(run_id, -1) = COALESCE(:run, -1)",
                v=row[0], m=metric, d=dataset, fp=fp, q=quantization, run=run_id)
        tx.run("INSERT INTO eval_score (version_id, metric, dataset, value, base_fingerprint, "
               "run_id, created_at, higher_is_better, quantization) VALUES (:v, :m, :d, :x, "
               ":fp, :run, :t, :hib, :q)", v=row[0], m=metric, d=dataset, x=float(value), fp=fp,
               run=run_id, t=tx.now(), hib=higher_is_better, q=quantization)
        return replaced


def keep_best(scores: dict[str, float], metric: str, value: float, hib: Any) -> None:
    """Fold one score row (oldest first) into a version's best value per metric."""
    higher = known_direction(metric) if hib is None else bool(hib)
    old = scores.get(metric)
    if old is None or higher is None or better(value, old, higher):
        scores[metric] = value  # unknown direction: the latest recorded value


def scored_versions(cat: Catalog, *, metrics: set[str], dataset: str | None,
                    base_fingerprints: Sequence[str] | None) -> list[ScoredVersion]:
    """Every version with its tags and, per metric asked for, the latest value recorded under
    the dataset/base filters (and whether higher is better, when the score says)."""
    with cat.tx() as tx:
        rows = tx.all(
            "SELECT v.id, a.name, v.version, v.method, v.rank, v.alpha, v.base_model, "
            "v.base_fingerprint, v.params, v.size_bytes, v.dtype, v.task_type, v.created_at "
            "FROM adapter_version v JOIN adapter a ON a.id = v.adapter_id")
        tags: dict[int, set[str]] = {}
        for vid, tname in tx.all("SELECT version_id, name FROM tag"):
            tags.setdefault(vid, set()).add(tname)
        values: dict[int, dict[str, float]] = {}
        directions: dict[str, bool] = {}
        if metrics:
            names, params = in_clause("m", sorted(metrics))
            sql = (f"SELECT version_id, metric, value, higher_is_better, dataset, "
                   f"base_fingerprint FROM eval_score WHERE metric IN {names} ORDER BY id")
            for vid, metric, value, hib, ds, fp in tx.all(sql, **params):
                if dataset is not None and ds != dataset:
                    continue
                if base_fingerprints is not None and fp not in base_fingerprints:
                    continue
                values.setdefault(vid, {})[metric] = value
                if hib is not None:
                    directions[metric] = bool(hib)
        bases = {fp: n for fp, n in tx.all("SELECT fingerprint, name FROM base_model") if n}
    out = []
    for r in rows:
        created = time_out(r[12])
        out.append(ScoredVersion(
            fields={"name": r[1], "version": r[2], "ref": f"{r[1]}@{r[2]}", "method": r[3],
                    "rank": r[4], "alpha": r[5], "base_model": r[6],
                    "base": bases.get(r[7] or "", r[7]), "params": r[8], "size_bytes": r[9],
                    "dtype": r[10], "task_type": r[11],
                    "created": created.isoformat() if created else ""},
            base_fingerprint=r[7], tags=tags.get(r[0], set()), metrics=values.get(r[0], {}),
            directions=directions,
        ))
    return out


@dataclass(frozen=True)
class ScoredVersion:
    fields: dict[str, Any]
    base_fingerprint: str | None
    tags: set[str]
    metrics: dict[str, float]
    directions: dict[str, bool]


def score_series(cat: Catalog, name: str) -> list[tuple[str, str | None, int, float]]:
    """(metric, dataset, version, value) of every score of adapter `name`, oldest first."""
    with cat.tx() as tx:
        return [
            (m, d, v, x) for m, d, v, x in tx.all(
                "SELECT s.metric, s.dataset, v.version, s.value FROM eval_score s "
                "JOIN adapter_version v ON v.id = s.version_id "
                "JOIN adapter a ON a.id = v.adapter_id WHERE a.name = :n ORDER BY s.id", n=name)
        ]
