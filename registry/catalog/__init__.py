"""The catalog: the one layer that talks to the database.

Every query and every write in adapt lives in this package; nothing else opens a session. Each
user operation is one transaction: `Catalog.write()` takes the write lock at BEGIN (SQLite's
BEGIN IMMEDIATE, PostgreSQL's advisory lock), `Catalog.read()` begins a deferred transaction that
never waits behind a writer. Feature modules (`versions`, `bases`, `runs`, `hub`) hold the
queries as functions over a `Catalog`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlmodel import Session

from registry.db import make_engine
from registry.db.migrations import ensure_schema

WRITE_OPTION = "adapt_write"


class Catalog:
    """Database access for one registry: engine, schema, read and write transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        ensure_schema(self.engine)
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session: a deferred transaction, never queued behind a writer."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write session holding the registry's write lock from BEGIN to commit."""
        with Session(self._writer, expire_on_commit=False) as session:
            if self.dialect == "postgresql":
                from sqlalchemy import text

                session.execute(text("SELECT pg_advisory_xact_lock(4243)"))
            yield session
