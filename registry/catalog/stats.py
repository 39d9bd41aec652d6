"""Counts of what a registry holds, for `adapt env` and bug reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.catalog import Catalog

# What `adapt env` counts: label -> table.
COUNTED_TABLES: dict[str, str] = {
    "adapters": "adapter",
    "versions": "adapter_version",
    "tags": "tag",
    "blobs": "blob",
    "base_models": "base_model",
    "scores": "eval_score",
    "validation_runs": "validation_run",
    "hub_links": "hub_link",
}


def registry_counts(cat: Catalog) -> dict[str, int]:
    """Rows per kind of record (one read transaction; table names are constants above)."""
    with cat.tx() as tx:
        return {label: int(tx.scalar(f"SELECT count(*) FROM {table}") or 0)
                for label, table in COUNTED_TABLES.items()}
