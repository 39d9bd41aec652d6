"""Where the registry lives: ADAPT_HOME and ADAPT_DB_URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
