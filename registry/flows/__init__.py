"""Glue between the Registry facade and the pure ops: resolve refs, check out, record results.

Each flow takes `reg: Registry` and uses only its public methods (never a database session);
the facade's method for a feature is a short delegate to its flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import NotFound

if TYPE_CHECKING:
    from registry.registry import Registry


def protected_dirs(reg: Registry) -> list[tuple[Path, str]]:
    """What an output directory must never be, contain or lie inside: the registry's own
    directories (`--force` must not be able to delete them)."""
    home = reg.settings.home
    dirs = [(home, f"the registry's home (ADAPT_HOME={home})")]
    store_root = Path(reg.store.root)
    if not store_root.resolve().is_relative_to(home.resolve()):
        dirs.append((store_root, f"the registry's blob store ({store_root})"))
    return dirs


def resolve_base_dir(reg: Registry, base: str | Path) -> Path:
    """A base model directory given as a path, or as a registered base's name or fingerprint."""
    path = Path(base)
    if path.exists():
        return path
    found = reg.find_base(str(base))
    if found is None or not found.path or not Path(found.path).exists():
        raise NotFound("base model", str(base),
                       "pass the base model's directory or a registered base name")
    return Path(found.path)
