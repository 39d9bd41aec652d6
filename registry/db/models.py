"""SQLModel tables. Schema changes go through `registry.db.migrations`, never create_all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(default: Any = None) -> Any:
    return Field(default=default, sa_column=Column(JSON, nullable=True))


class Adapter(SQLModel, table=True):
    """A named line of versions."""

    __tablename__ = "adapter"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AdapterVersion(SQLModel, table=True):
    """One immutable version of an adapter."""

    __tablename__ = "adapter_version"
    __table_args__ = (
        UniqueConstraint("adapter_id", "version"),
        UniqueConstraint("adapter_id", "manifest_digest"),
    )
    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(foreign_key="adapter.id", index=True)
    version: int
    manifest_digest: str = Field(index=True)
    peft_type: str
    method: str = Field(index=True)
    rank: int | None = None
    alpha: float | None = None
    use_rslora: bool = False
    rank_pattern: dict[str, int] | None = _json()
    alpha_pattern: dict[str, float] | None = _json()
    target_modules: Any = _json()
    modules_to_save: list[str] | None = _json()
    task_type: str | None = None
    base_model: str | None = None
    base_fingerprint: str | None = Field(default=None, index=True)
    params: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    dtype: str = ""
    source: str | None = None
    recipe: dict[str, Any] | None = _json()
    config: dict[str, Any] | None = _json()
    note: str | None = None
    compat: dict[str, Any] | None = _json()  # new heads, renamed modules (fit to its base)
    created_at: datetime = Field(default_factory=utcnow)


class Blob(SQLModel, table=True):
    __tablename__ = "blob"
    sha256: str = Field(primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class VersionFile(SQLModel, table=True):
    __tablename__ = "version_file"
    __table_args__ = (UniqueConstraint("version_id", "path"),)
    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="adapter_version.id", index=True)
    path: str
    sha256: str = Field(foreign_key="blob.sha256", index=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))


class Lineage(SQLModel, table=True):
    """What a composed, merged or converted version came from."""

    __tablename__ = "lineage"
    id: int | None = Field(default=None, primary_key=True)
    child_id: int = Field(foreign_key="adapter_version.id", index=True)
    parent_id: int | None = Field(default=None, foreign_key="adapter_version.id", index=True)
    parent_ref: str  # printed reference, kept when the parent is deleted or not local
    parent_digest: str | None = Field(default=None, index=True)  # the parent's content
    weight: float | None = None
    role: str = "parent"
    params: dict[str, Any] | None = _json()


class Tag(SQLModel, table=True):
    __tablename__ = "tag"
    __table_args__ = (UniqueConstraint("adapter_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(foreign_key="adapter.id", index=True)
    name: str
    version_id: int = Field(foreign_key="adapter_version.id", index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    protected: bool = False  # moving or removing it needs --force


class BaseModel(SQLModel, table=True):
    """A model checkpoint known by its fingerprint: a base, or a merged/quantized output."""

    __tablename__ = "base_model"
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, unique=True)
    name: str | None = Field(default=None, index=True)
    path: str | None = None
    architecture: str | None = None
    params: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    dtype: str | None = None
    structure: str = ""  # digest of (names, shapes, dtypes)
    kind: str = "base"  # base | merged | quantized
    source_version_id: int | None = Field(default=None, foreign_key="adapter_version.id")
    parent_fingerprint: str | None = None
    details: dict[str, Any] | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class EvalScore(SQLModel, table=True):
    __tablename__ = "eval_score"
    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="adapter_version.id", index=True)
    metric: str
    dataset: str | None = None
    value: float
    base_fingerprint: str | None = None
    run_id: int | None = Field(default=None, foreign_key="validation_run.id")
    created_at: datetime = Field(default_factory=utcnow)
    higher_is_better: bool | None = None  # None: known metric names decide
    quantization: str | None = None


class ValidationRun(SQLModel, table=True):
    __tablename__ = "validation_run"
    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="adapter_version.id", index=True)
    base_fingerprint: str | None = None
    device: str = "cpu"
    status: str = "running"  # running | passed | failed | error
    checks: dict[str, Any] | None = _json()
    figures: dict[str, Any] | None = _json()
    gates: list[dict[str, Any]] | None = _json()
    report: dict[str, Any] | None = _json()
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class HubLink(SQLModel, table=True):
    __tablename__ = "hub_link"
    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="adapter_version.id", index=True)
    repo: str
    commit: str
    tag: str | None = None
    direction: str = "push"  # push | pull
    at: datetime = Field(default_factory=utcnow)


class Tombstone(SQLModel, table=True):
    """What stays of a deleted version: lineage stays readable, its number is never reused."""

    __tablename__ = "tombstone"
    id: int | None = Field(default=None, primary_key=True)
    adapter_name: str = Field(index=True)
    version: int
    digest: str = Field(index=True)
    deleted_at: datetime = Field(default_factory=utcnow)


class Migration(SQLModel, table=True):
    """Applied schema migrations, by name."""

    __tablename__ = "adapt_migration"
    name: str = Field(primary_key=True)
    applied_at: datetime = Field(default_factory=utcnow)
