"""`Registry.search`: a parsed filter evaluated over versions with their tags and scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.records import SearchHit

if TYPE_CHECKING:
    from registry.registry import Registry


def search_versions(reg: Registry, node: Any, metrics: set[str], order_field: str,
                    descending: bool, dataset: str | None, base: str | None,
                    limit: int | None) -> list[SearchHit]:
    """Versions matching a parsed filter (registry.search), ordered; missing values last."""
    from registry.catalog.scores import scored_versions
    from registry.search import matches

    fps = None
    if base is not None:
        found = reg.find_base(base)
        fps = [found.fingerprint] if found else [base]
    rows = scored_versions(reg.catalog, metrics=metrics, dataset=dataset, base_fingerprints=fps)
    if base is not None:
        rows = [r for r in rows if r.base_fingerprint in (fps or [])
                or r.fields["base_model"] == base]
    hits = [r for r in rows if matches(node, r.fields, r.tags, r.metrics)]

    def key(r: Any) -> tuple[int, Any]:
        if order_field.startswith("metric."):
            value = r.metrics.get(order_field[len("metric."):])
            return (0, value) if value is not None else (1, 0.0)
        value = r.fields.get(order_field)
        return (0, value) if value is not None else (1, "")

    present = sorted((r for r in hits if key(r)[0] == 0), key=lambda r: key(r)[1],
                     reverse=descending)
    ordered = present + [r for r in hits if key(r)[0] == 1]  # missing values last
    if limit is not None:
        ordered = ordered[:limit]
    one_metric = next(iter(metrics)) if len(metrics) == 1 else None
    return [
        SearchHit(ref=r.fields["ref"], name=r.fields["name"], version=r.fields["version"],
                  method=r.fields["method"], base=r.fields["base"], tags=sorted(r.tags),
                  metrics=r.metrics, created=r.fields["created"],
                  higher_is_better=r.directions.get(one_metric) if one_metric else None)
        for r in ordered
    ]
