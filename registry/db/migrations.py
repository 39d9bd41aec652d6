"""Named schema migrations, applied in order and recorded in `adapt_migration`.

A migration is a function of a connection. Never edit one that has shipped; add the next.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, text

from registry.catalog.migration_names import MIGRATION_NAMES
from registry.db import models

INITIAL_TABLES = [
    models.Adapter, models.AdapterVersion, models.Blob, models.VersionFile, models.Lineage,
    models.Tag, models.BaseModel, models.ValidationRun, models.EvalScore, models.HubLink,
]


def m001_initial(conn: Connection) -> None:
    tables = [t.__table__ for t in INITIAL_TABLES]  # type: ignore[attr-defined]
    models.SQLModel.metadata.create_all(conn, tables=tables)


def m002_version_listing_index(conn: Connection) -> None:
    # `adapt list` asks for the latest version of each adapter; this keeps it an index scan.
    conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_version_adapter_version "
             "ON adapter_version (adapter_id, version)")
    )


def m003_lifecycle(conn: Connection) -> None:
    """Safe deletion, protected tags, keyed scores, lineage by content (issue: lifecycle)."""
    # a deleted version leaves a tombstone: lineage stays readable, numbers are never reused
    conn.execute(text(
        "CREATE TABLE IF NOT EXISTS tombstone (id INTEGER PRIMARY KEY, adapter_name VARCHAR "
        "NOT NULL, version INTEGER NOT NULL, digest VARCHAR NOT NULL, deleted_at TIMESTAMP "
        "NOT NULL)" if conn.dialect.name == "sqlite" else
        "CREATE TABLE IF NOT EXISTS tombstone (id SERIAL PRIMARY KEY, adapter_name VARCHAR "
        "NOT NULL, version INTEGER NOT NULL, digest VARCHAR NOT NULL, deleted_at TIMESTAMP "
        "NOT NULL)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_tombstone_name ON tombstone "
                      "(adapter_name, version)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_tombstone_digest ON tombstone (digest)"))
    columns = {t: {c["name"] for c in inspect(conn).get_columns(t)}
               for t in ("tag", "eval_score", "lineage")}
    for table, column, decl in (
        ("tag", "protected", "BOOLEAN NOT NULL DEFAULT FALSE"),
        ("eval_score", "higher_is_better", "BOOLEAN"),
        ("eval_score", "quantization", "VARCHAR"),
        ("lineage", "parent_digest", "VARCHAR"),
    ):
        if column not in columns[table]:  # a new database got it from 001's models
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {decl}"))
    # lineage points at content: fill the digest of every parent still present
    conn.execute(text(
        "UPDATE lineage SET parent_digest = (SELECT manifest_digest FROM adapter_version "
        "WHERE adapter_version.id = lineage.parent_id) WHERE parent_id IS NOT NULL"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_lineage_parent_digest ON lineage "
                      "(parent_digest)"))


def m004_version_compat(conn: Connection) -> None:
    """How a version fits its base (new heads, renamed modules), shown by `adapt show`."""
    if "compat" not in {c["name"] for c in inspect(conn).get_columns("adapter_version")}:
        conn.execute(text("ALTER TABLE adapter_version ADD COLUMN compat JSON"))


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("001_initial", m001_initial),
    ("002_version_listing_index", m002_version_listing_index),
    ("003_lifecycle", m003_lifecycle),
    ("004_version_compat", m004_version_compat),
]


assert tuple(name for name, _ in MIGRATIONS) == MIGRATION_NAMES, "update migration_names.py"


def pending_migrations(engine: Engine) -> list[str]:
    """Names of migrations not yet applied, read without taking the write lock."""
    from sqlalchemy.exc import DBAPIError

    # one cheap query (no schema reflection) on every open: this runs before every command
    try:
        with engine.connect() as conn:
            done = {row[0] for row in conn.execute(text("SELECT name FROM adapt_migration"))}
    except DBAPIError:  # no table yet: a new database
        return [name for name, _ in MIGRATIONS]
    return [name for name, _ in MIGRATIONS if name not in done]


def ensure_schema(engine: Engine) -> list[str]:
    """Migrate only when the schema is behind, so reads work on a read-only registry."""
    if not pending_migrations(engine):
        return []
    return migrate(engine)


def schema_version(engine: Engine) -> str | None:
    """The newest applied migration's name (None for an empty database)."""
    table = models.Migration.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        if not inspect(conn).has_table(table.name):
            return None
        names = {row[0] for row in conn.execute(text("SELECT name FROM adapt_migration"))}
    known = [name for name, _ in MIGRATIONS if name in names]
    return known[-1] if known else None


def migrate(engine: Engine) -> list[str]:
    """Apply pending migrations; return the names applied."""
    table = models.Migration.__table__  # type: ignore[attr-defined]
    applied_now: list[str] = []
    with engine.execution_options(adapt_write=True).begin() as conn:
        if engine.dialect.name == "postgresql":
            # one migrator at a time across processes
            conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
        if not inspect(conn).has_table(table.name):
            table.create(conn, checkfirst=True)
        done = {row[0] for row in conn.execute(text("SELECT name FROM adapt_migration"))}
        for name, step in MIGRATIONS:
            if name in done:
                continue
            step(conn)
            conn.execute(table.insert().values(name=name, applied_at=models.utcnow()))
            applied_now.append(name)
    return applied_now
