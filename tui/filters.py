"""The list's filter line, parsed without touching the registry (the facade does the reading)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any


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


def short_base(base_model: str | None) -> str:
    """The last part of a base model id or path: enough to tell bases apart in a column."""
    if not base_model:
        return "-"
    return base_model.rstrip("/").rsplit("/", 1)[-1] or base_model
