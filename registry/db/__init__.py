"""Database engine and migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL mode, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Python's sqlite3 opens transactions lazily; take the write lock at BEGIN instead
            # so two writers queue on the busy timeout rather than deadlock on upgrade.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # Writers (sessions from Catalog.write(), migrations) take the lock at BEGIN;
            # readers begin deferred and never queue behind a writer (WAL gives them a snapshot).
            if conn.get_execution_options().get("adapt_write", False):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    return _server_engine(url)


def _server_engine(url: str) -> Engine:
    """An engine for a database server; a missing driver or a bad URL is a typed error."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from registry.config import redact_url
    from registry.errors import MissingDependency, RegistryUnavailable

    try:
        return create_engine(url, pool_pre_ping=True)
    except ImportError as error:  # the URL names a driver that is not installed
        package = (error.name or "the database driver").split(".")[0]
        postgres = url.startswith(("postgresql", "postgres"))
        raise MissingDependency(
            package, f"use the database at {redact_url(url)}",
            install='"adapt[postgres]"' if postgres else package,
        ) from None
    except (ArgumentError, NoSuchModuleError) as error:
        raise RegistryUnavailable(
            redact_url(url), str(error).splitlines()[0],
            "ADAPT_DB_URL must be a SQLAlchemy URL, e.g. postgresql+psycopg://USER@HOST/DB",
        ) from None
