"""Typed results of the Registry facade: what the CLI renders, the TUI shows and `--json` prints.

Every record is a frozen dataclass; `to_dict()` is the one place its JSON form is made. Records
that used to be plain dicts (`list_versions` rows, `show`) are also read-only mappings over that
JSON form, so `row["ref"]` keeps working for scripts written against earlier releases.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class Record(Mapping[str, Any]):
    """A frozen dataclass that reads like its JSON object (keys in field order)."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    def __getitem__(self, key: str) -> Any:
        if key not in _field_names(type(self)):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_field_names(type(self)))

    def __len__(self) -> int:
        return len(_field_names(type(self)))


@dataclass(frozen=True)
class FileInfo:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class VersionInfo:
    """A detached snapshot of one adapter version."""

    id: int
    adapter_id: int
    name: str
    version: int
    digest: str
    method: str
    peft_type: str
    rank: int | None
    alpha: float | None
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    target_modules: Any
    modules_to_save: list[str]
    task_type: str | None
    base_model: str | None
    base_fingerprint: str | None
    params: int
    size_bytes: int
    dtype: str
    source: str | None
    recipe: dict[str, Any] | None
    config: dict[str, Any]
    note: str | None
    created_at: datetime
    files: tuple[FileInfo, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ref": self.ref}


@dataclass(frozen=True, eq=False)
class VersionSummary(Record):
    """One row of `adapt list`: a version with its tags and best score per metric."""

    name: str
    version: int
    ref: str
    method: str
    rank: int | None
    alpha: float | None
    base_model: str | None
    base_fingerprint: str | None
    params: int
    size_bytes: int
    digest: str
    created_at: datetime
    tags: list[str]
    scores: dict[str, float]


@dataclass(frozen=True, eq=False)
class VersionDetail(Record):
    """Everything known about one version: the `adapt show --json` object."""

    name: str
    version: int
    ref: str
    digest: str
    method: str
    peft_type: str
    rank: int | None
    alpha: float | None
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    target_modules: Any
    modules_to_save: list[str]
    task_type: str | None
    base_model: str | None
    base_fingerprint: str | None
    params: int
    size_bytes: int
    dtype: str
    tags: list[str]
    files: list[dict[str, Any]]
    parents: list[dict[str, Any]]
    children: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    validation_runs: list[dict[str, Any]]
    hub: list[dict[str, Any]]
    recipe: dict[str, Any] | None
    source: str | None
    note: str | None
    created_at: datetime
    new_heads: list[str] = field(default_factory=list)  # saved modules its base lacks


@dataclass(frozen=True)
class ParentLink:
    """A parent of a new version: a reference, and how it contributed."""

    ref: str
    weight: float | None = None
    role: str = "parent"
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class AddResult:
    version: VersionInfo
    created: bool


@dataclass(frozen=True)
class BaseInfo:
    id: int
    fingerprint: str
    structure: str
    name: str | None
    path: str | None
    architecture: str | None
    params: int
    dtype: str | None
    kind: str
    source_version_id: int | None
    parent_fingerprint: str | None
    details: dict[str, Any] | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BaseChoice:
    """A base that versions point at, for pickers: label, the key `list --base` takes, count."""

    label: str
    key: str
    versions: int


@dataclass(frozen=True)
class ScoreSeries:
    """One metric on one dataset across an adapter's versions."""

    metric: str
    dataset: str | None
    values: dict[int, float]  # version -> latest value recorded


@dataclass
class GcReport:
    removed_blobs: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    removed_temp_files: int = 0
    removed_temp_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FsckReport:
    checked_blobs: int = 0
    checked_rows: int = 0
    problems: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    # temp blobs and partial directories left by crashes: {path, kind, size, age_seconds}
    leftovers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class RemovalPlan:
    """What `adapt rm --dry-run` reports."""

    ref: str
    digest: str
    files: list[str]
    blockers: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    """A version found by `search`/`best`, with the metric values it was judged on."""

    ref: str
    name: str
    version: int
    method: str
    base: str | None
    tags: list[str]
    metrics: dict[str, float]
    created: str
    higher_is_better: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
