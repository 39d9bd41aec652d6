"""Where the registry lives: ADAPT_HOME and ADAPT_DB_URL."""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.errors import RegistryUnavailable


def default_home() -> Path:
    env = os.environ.get("ADAPT_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("adapt", appauthor=False))


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def load_settings(home: Path | str | None = None, db_url: str | None = None) -> Settings:
    home_path = Path(home).expanduser() if home is not None else default_home()
    url = db_url or os.environ.get("ADAPT_DB_URL") or f"sqlite:///{home_path / 'registry.db'}"
    return Settings(home=home_path, db_url=url)


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***: safe to print, log or put in a bug report."""
    return re.sub(r"^([A-Za-z0-9+.-]+://[^/@:]*:)[^/]*@", r"\1***@", url)


def environment_problem(settings: Settings, error: BaseException) -> RegistryUnavailable | None:
    """The typed error for a registry that cannot be opened here, or None if `error` is a bug.

    Unwritable or invalid ADAPT_HOME (OSError) and unreachable databases (the driver's
    OperationalError / InterfaceError, whichever driver) are the environment's problem, not
    adapt's: they exit 9 with one line instead of a traceback.
    """
    from registry.errors import RegistryUnavailable

    if isinstance(error, OSError):
        where = error.filename or settings.home
        return RegistryUnavailable(
            str(settings.home), f"{error.strerror or error}: {where}",
            "set ADAPT_HOME to a directory you can write to",
        )
    if type(error).__name__ in ("OperationalError", "InterfaceError") or isinstance(
        error, sqlite3.Error
    ):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = reason.removeprefix("(sqlite3.OperationalError) ")
        return RegistryUnavailable(
            redact_url(settings.db_url), reason[:200],
            "check ADAPT_DB_URL and that the database server is running",
        )
    return None
