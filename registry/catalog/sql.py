"""Plain SQL transactions that start fast: sqlite3 for the embedded default, SQLAlchemy otherwise.

Read commands must start in well under 0.3 s, and importing SQLAlchemy's ORM alone costs more than
that. The catalog therefore writes its queries once, as portable SQL with `:name` parameters
(SQLite and PostgreSQL both accept them), and runs them through `Tx`: a sqlite3 connection for
`sqlite:///` URLs (no SQLAlchemy import at all) or a SQLAlchemy connection for any other URL.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_LOCK_KEY = 4243  # PostgreSQL advisory lock that serialises writers (add, gc, ...)

Row = tuple[Any, ...]


class Tx:
    """One transaction: `all`, `one`, `scalar` read; `run` writes; `insert` returns the new id."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        if self.dialect == "sqlite":
            return self._conn.execute(sql, params)
        from sqlalchemy import text

        return self._conn.execute(text(sql), params)

    def all(self, sql: str, **params: Any) -> list[Row]:
        return [tuple(r) for r in self._execute(sql, params).fetchall()]

    def one(self, sql: str, **params: Any) -> Row | None:
        row = self._execute(sql, params).fetchone()
        return tuple(row) if row is not None else None

    def scalar(self, sql: str, **params: Any) -> Any:
        row = self.one(sql, **params)
        return row[0] if row is not None else None

    def run(self, sql: str, **params: Any) -> int:
        """Execute a write; the number of rows it touched."""
        return int(self._execute(sql, params).rowcount or 0)

    def insert(self, sql: str, **params: Any) -> int:
        """Execute an INSERT ... RETURNING id; the new row's id."""
        row = self._execute(sql, params).fetchone()
        assert row is not None
        return int(row[0])

    # -- values in and out ---------------------------------------------------------------------
    def now(self) -> Any:
        """The current UTC time as this backend stores it (naive UTC, like SQLAlchemy does)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        return now.isoformat(sep=" ", timespec="microseconds") if self.dialect == "sqlite" else now

    def json_in(self, value: Any) -> Any:
        return None if value is None else json.dumps(value)


def in_clause(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`(:p0, :p1, ...)` and its parameters, for `WHERE x IN ...` with bound values."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    return "(" + ", ".join(f":{n}" for n in names) + ")", dict(zip(names, values, strict=True))


def json_out(value: Any) -> Any:
    """A JSON column as Python: SQLite returns text, PostgreSQL already-decoded values."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def time_out(value: Any) -> datetime | None:
    """A timestamp column as a naive UTC datetime (SQLite returns text)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def sqlite_path(url: str) -> str:
    return url.split("///", 1)[-1]


class SqliteDatabase:
    """One sqlite3 connection per thread to one SQLite file (TUI workers read from threads)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._open(self.path, uri=False)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError as error:
                # a read-only medium: a WAL database cannot create its -shm file there, so
                # read it read-only (immutable when even that needs a lock file)
                if not _read_only_problem(error) or not Path(self.path).is_file():
                    raise
                conn = self._read_only()
            self._local.conn = conn
        return conn

    def _open(self, target: str, *, uri: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, uri=uri,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _read_only(self) -> sqlite3.Connection:
        from urllib.parse import quote

        base = "file:" + quote(str(Path(self.path).resolve()))
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(base + query, uri=True, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return conn
            except sqlite3.OperationalError as error:
                if not _read_only_problem(error) or query.endswith("immutable=1"):
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def tx(self, write: bool) -> Iterator[Tx]:
        conn = self._connect()
        # writers take the lock at BEGIN so two of them queue on the busy timeout instead of
        # deadlocking on upgrade; readers begin deferred and read a WAL snapshot
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield Tx(conn, "sqlite")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _read_only_problem(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


class EngineDatabase:
    """Transactions on a SQLAlchemy engine (PostgreSQL and other servers)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @contextmanager
    def tx(self, write: bool) -> Iterator[Tx]:
        with self.engine.connect() as conn, conn.begin():
            if write and self.dialect == "postgresql":
                from sqlalchemy import text

                conn.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"))
            yield Tx(conn, self.dialect)

    def close(self) -> None:
        self.engine.dispose()
