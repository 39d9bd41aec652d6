"""The catalog: the one layer that talks to the database.

Every query and every write in adapt lives in this package; nothing else opens a session or a
connection. Each user operation is one transaction. `Catalog.tx(write=True)` takes the write lock
at BEGIN (SQLite's BEGIN IMMEDIATE, a PostgreSQL advisory lock); `Catalog.tx()` begins a deferred
read that never waits behind a writer. Queries are plain, portable SQL (see `catalog.sql`), so a
read command on the embedded SQLite registry never imports SQLAlchemy. `read()`/`write()` give
SQLModel sessions for code that prefers the ORM (imported only when used).

Feature modules hold the queries as functions over a `Catalog`: `versions`, `bases`, `blobs`,
`hub`, `runs`, `stats`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from registry.catalog.sql import EngineDatabase, SqliteDatabase, Tx, sqlite_path

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

WRITE_OPTION = "adapt_write"


class Catalog:
    """Database access for one registry: schema, plain-SQL transactions, ORM sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite" and sqlite_path(url) not in ("", ":memory:"):
            path = sqlite_path(url)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db: SqliteDatabase | EngineDatabase = SqliteDatabase(path)
            if not self._sqlite_schema_current():
                self._migrate()
        else:
            self._db = EngineDatabase(self.engine)
            self._migrate()

    # -- schema ------------------------------------------------------------------------------
    def _sqlite_schema_current(self) -> bool:
        """True when every known migration is recorded (checked without SQLAlchemy)."""
        from registry.catalog.migration_names import MIGRATION_NAMES

        assert isinstance(self._db, SqliteDatabase)
        try:
            with self._db.tx(write=False) as tx:
                done = {r[0] for r in tx.all("SELECT name FROM adapt_migration")}
        except Exception as error:  # no table yet (a new registry), or not a database at all
            if "no such table" in str(error):
                return False
            raise
        return set(MIGRATION_NAMES) <= done

    def _migrate(self) -> None:
        from registry.db.migrations import ensure_schema

        ensure_schema(self.engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use (migrations, ORM sessions, servers)."""
        if self._engine is None:
            from registry.db import make_engine

            self._engine = make_engine(self.url)
        return self._engine

    def schema_version(self) -> str | None:
        from registry.catalog.migration_names import MIGRATION_NAMES

        with self.tx() as tx:
            done = {r[0] for r in tx.all("SELECT name FROM adapt_migration")}
        known = [n for n in MIGRATION_NAMES if n in done]
        return known[-1] if known else None

    def close(self) -> None:
        self._db.close()
        if self._engine is not None:
            self._engine.dispose()

    # -- transactions --------------------------------------------------------------------------
    @contextmanager
    def tx(self, write: bool = False) -> Iterator[Tx]:
        """A plain-SQL transaction; `write=True` holds the registry's write lock."""
        with self._db.tx(write) as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[Session]:
        """An ORM session for reads: a deferred transaction, never queued behind a writer."""
        from sqlmodel import Session

        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """An ORM session holding the registry's write lock from BEGIN to commit."""
        from sqlmodel import Session

        writer = self.engine.execution_options(**{WRITE_OPTION: True})
        with Session(writer, expire_on_commit=False) as session:
            if self.engine.dialect.name == "postgresql":
                from sqlalchemy import text

                from registry.catalog.sql import WRITE_LOCK_KEY

                session.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"))
            yield session


