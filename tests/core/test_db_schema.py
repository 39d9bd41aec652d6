"""The migrations and the SQLModel models describe the same schema, and an old registry
migrates forward on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from registry import Registry
from registry.catalog.migration_names import MIGRATION_NAMES


def test_migrated_columns_match_the_models(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from registry.db import models
    from registry.db.migrations import MIGRATIONS

    assert tuple(name for name, _ in MIGRATIONS) == MIGRATION_NAMES
    Registry(home=tmp_path / "home").close()
    live = inspect(create_engine(f"sqlite:///{tmp_path / 'home' / 'registry.db'}"))
    for table in models.SQLModel.metadata.sorted_tables:
        declared = {c.name for c in table.columns}
        migrated = {c["name"] for c in live.get_columns(table.name)}
        assert declared == migrated, (table.name, declared ^ migrated)


def test_a_registry_from_before_the_lifecycle_migrations_opens_and_upgrades(
        tmp_path: Path, tiny_lora: Path) -> None:
    home = tmp_path / "home"
    with Registry(home=home) as reg:
        reg.add(tiny_lora, name="a", tags=["prod"])
    db = sqlite3.connect(home / "registry.db")
    # take the database back to the 002 schema, as an older adapt left it
    for column in ("protected",):
        db.execute(f"ALTER TABLE tag DROP COLUMN {column}")
    db.execute("ALTER TABLE adapter_version DROP COLUMN compat")
    db.execute("DROP TABLE tombstone")
    db.execute("DELETE FROM adapt_migration WHERE name IN ('003_lifecycle', "
               "'004_version_compat')")
    db.commit()
    db.close()
    with Registry(home=home) as reg:
        assert reg.catalog.schema_version() == MIGRATION_NAMES[-1]
        assert reg.resolve("a:prod").version == 1
        reg.remove("a@1", force=True)
        assert reg.add(tiny_lora, name="a").version.version == 2  # tombstone table works
