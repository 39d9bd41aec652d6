"""Read-only queries the TUI needs beyond the Registry facade.

Each takes a `Registry` and reads through `reg.session()` and the models; candidates to lift
into the facade.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from registry.db.models import Adapter, AdapterVersion, EvalScore, ValidationRun
from registry.db.models import BaseModel as BaseRow

if TYPE_CHECKING:
    from registry.registry import Registry


@dataclass(frozen=True)
class BaseChoice:
    """One base model adapters were registered against, as the list can filter by it."""

    label: str  # what the user sees
    key: str  # what `list_versions(base=...)` matches
    versions: int


@dataclass
class ListFilter:
    """The list's filter: free text on the name plus `base:`, `method:` and `tag:` tokens."""

    name: str | None = None
    base: str | None = None
    method: str | None = None
    tag: str | None = None
    extra: list[str] = field(default_factory=list)

    def kwargs(self) -> dict[str, Any]:
        return {"name_like": self.name, "base": self.base, "method": self.method, "tag": self.tag}


def parse_filter(text: str) -> ListFilter:
    """Split filter text such as `sql base:llama tag:prod` into its parts."""
    try:
        words = shlex.split(text)
    except ValueError:  # an unclosed quote while typing: take the words as they are
        words = text.split()
    result = ListFilter()
    names: list[str] = []
    for word in words:
        key, sep, value = word.partition(":")
        if sep and key in ("base", "method", "tag"):
            setattr(result, key, value or None)
        else:
            names.append(word)
    result.name = " ".join(names) or None
    return result


def base_choices(reg: Registry) -> list[BaseChoice]:
    """Bases that registered versions point at, with how many versions each."""
    with reg.session() as s:
        names = {
            fp: name
            for fp, name in s.execute(select(BaseRow.fingerprint, BaseRow.name))
            if name
        }
        rows = s.execute(
            select(AdapterVersion.base_fingerprint, AdapterVersion.base_model, func.count())
            .group_by(AdapterVersion.base_fingerprint, AdapterVersion.base_model)
        ).all()
    merged: dict[str, BaseChoice] = {}
    for fp, model, count in rows:
        if fp and fp in names:
            key = label = names[fp]
        elif fp:
            key = fp[:23]  # "sha256:" + 16 hex: a prefix list_versions matches
            label = f"{short_base(model)} ({key})"
        elif model:
            key, label = model, short_base(model)
        else:
            continue
        old = merged.get(key)
        merged[key] = BaseChoice(label, key, count + (old.versions if old else 0))
    return sorted(merged.values(), key=lambda c: c.label)


def base_names(reg: Registry) -> dict[str, str]:
    """Registered base names by fingerprint."""
    with reg.session() as s:
        return {
            fp: name for fp, name in s.execute(select(BaseRow.fingerprint, BaseRow.name)) if name
        }


def short_base(base_model: str | None) -> str:
    """The last part of a base model id or path: enough to tell bases apart in a column."""
    if not base_model:
        return "-"
    return base_model.rstrip("/").rsplit("/", 1)[-1] or base_model


def adapter_versions(reg: Registry, name: str) -> list[dict[str, Any]]:
    """Every version of adapter `name`, oldest first (list_versions rows)."""
    rows = reg.list_versions(name_like=name, all_versions=True)
    return [r for r in rows if r["name"] == name]


@dataclass(frozen=True)
class ScoreSeries:
    """One metric on one dataset across an adapter's versions."""

    metric: str
    dataset: str | None
    values: dict[int, float]  # version -> latest value recorded


def scores_across_versions(reg: Registry, name: str) -> list[ScoreSeries]:
    """Every score of adapter `name`, per metric and dataset, by version (latest wins)."""
    with reg.session() as s:
        rows = s.execute(
            select(EvalScore.metric, EvalScore.dataset, AdapterVersion.version, EvalScore.value)
            .join(AdapterVersion, AdapterVersion.id == EvalScore.version_id)
            .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
            .where(Adapter.name == name)
            .order_by(EvalScore.id)
        ).all()
    series: dict[tuple[str, str | None], dict[int, float]] = {}
    for metric, dataset, version, value in rows:
        series.setdefault((metric, dataset), {})[version] = value
    return [
        ScoreSeries(metric, dataset, values)
        for (metric, dataset), values in sorted(series.items(), key=lambda kv: (kv[0][0],
                                                                                kv[0][1] or ""))
    ]


def validation_runs(reg: Registry, version_id: int) -> list[ValidationRun]:
    """The validation runs of one version, newest first, with their checks and figures."""
    with reg.session() as s:
        return list(
            s.execute(
                select(ValidationRun)
                .where(ValidationRun.version_id == version_id)
                .order_by(ValidationRun.id.desc())
            ).scalars()
        )
