"""Where the registry lives: ADAPT_HOME and ADAPT_DB_URL."""

from __future__ import annotations

import os
import re
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
    blob_url: str | None = None  # s3://bucket/prefix; None: the local directory home/blobs
    cache_max_bytes: int = 20 * 1024**3  # the read-through cache of a remote blob store

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


CONFIG_NAME = "config.toml"


def load_settings(home: Path | str | None = None, db_url: str | None = None,
                  blob_url: str | None = None) -> Settings:
    """Arguments first, then ADAPT_DB_URL / ADAPT_BLOB_URL / ADAPT_CACHE_MAX_BYTES, then the
    config file `adapt init` wrote in ADAPT_HOME, then the defaults (all under ADAPT_HOME)."""
    home_path = Path(home).expanduser() if home is not None else default_home()
    config = read_config(home_path)
    url = (db_url or os.environ.get("ADAPT_DB_URL") or config.get("db_url")
           or f"sqlite:///{home_path / 'registry.db'}")
    blobs = blob_url or os.environ.get("ADAPT_BLOB_URL") or config.get("blob_url") or None
    cache_max = os.environ.get("ADAPT_CACHE_MAX_BYTES") or config.get("cache_max_bytes")
    extra = {} if cache_max is None else {"cache_max_bytes": _byte_count(cache_max)}
    return Settings(home=home_path, db_url=str(url),
                    blob_url=str(blobs) if blobs else None, **extra)


def read_config(home: Path) -> dict[str, object]:
    """The settings in ADAPT_HOME/config.toml ({} when there is none)."""
    import tomllib

    path = home / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError:
        return {}  # an unreadable home is reported when the registry opens
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        from registry.errors import UsageError

        raise UsageError(f"{path} is not valid TOML: {error}",
                         "fix it or write it again with `adapt init`") from None
    return {k: v for k, v in data.items() if k in ("db_url", "blob_url", "cache_max_bytes")}


def write_config(home: Path, *, db_url: str | None, blob_url: str | None,
                 cache_max_bytes: int | None = None) -> Path:
    """Write ADAPT_HOME/config.toml (keys not given are kept from the file). URLs that carry a
    password are refused: credentials come from the environment, never from this file."""
    import json

    from registry.errors import UsageError

    values = read_config(home)
    for key, value in (("db_url", db_url), ("blob_url", blob_url)):
        if value is None:
            continue
        if redact_url(value) != value:
            raise UsageError(f"{key.replace('_', ' ')} carries a password",
                             "leave it out of the URL: use PGPASSWORD or ~/.pgpass")
        values[key] = value
    if cache_max_bytes is not None:
        values["cache_max_bytes"] = cache_max_bytes
    lines = ["# written by `adapt init`; credentials come from the environment, never here"]
    for key, item in values.items():  # a JSON string is a valid TOML basic string
        text = json.dumps(item) if isinstance(item, str) else str(_byte_count(item))
        lines.append(f"{key} = {text}")
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_NAME
    tmp = home / f".tmp-{CONFIG_NAME}"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _byte_count(value: object) -> int:
    """An int, or text like `20GB` / `512MiB`."""
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        count = int(float(number) * factor)
    except ValueError:
        from registry.errors import UsageError

        raise UsageError(f"cannot read {value!r} as a size", "write e.g. 20GB") from None
    if count < 0:
        from registry.errors import UsageError

        raise UsageError(f"a cache size cannot be negative ({value!r})")
    return count


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
    # by name: whichever driver raised it (sqlite3, psycopg, SQLAlchemy's wrappers)
    if type(error).__name__ in ("OperationalError", "InterfaceError", "DatabaseError") or \
            type(error).__module__.split(".")[0] == "sqlite3":
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = reason.removeprefix("(sqlite3.OperationalError) ")
        return RegistryUnavailable(
            redact_url(settings.db_url), reason[:200],
            "check ADAPT_DB_URL and that the database server is running",
        )
    return None
