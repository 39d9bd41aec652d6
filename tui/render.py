"""Plain-text renderings shared by the TUI's widgets: times, scores, sparklines, checks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.text import Text

SPARK = "▁▂▃▄▅▆▇█"
STATUS_STYLE = {
    "passed": "green",
    "ok": "green",
    "warn": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "failed": "bold red",
    "error": "bold red",
}


def fmt_time(value: datetime | None) -> str:
    """An absolute UTC time (never "3 minutes ago": screens must not change by themselves)."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M")


def fmt_value(value: Any) -> str:
    """A metadata value on one line."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, datetime):
        return fmt_time(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def fmt_score(value: float) -> str:
    return f"{value:.4g}"


def best_score(scores: dict[str, float]) -> tuple[str, float | None]:
    """The list's "best" cell: the first metric by name, the highest value recorded for it.

    Short on purpose (the list must fit 80 columns): the Scores tab shows every metric.
    """
    if not scores:
        return "-", None
    metric = sorted(scores)[0]
    value = scores[metric]
    return f"{metric[:8]} {fmt_score(value)}", value


def sparkline(values: Sequence[float | None]) -> str:
    """Block characters scaled between the series' min and max; a gap where a value is missing."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif span == 0:
            out.append(SPARK[len(SPARK) // 2])
        else:
            out.append(SPARK[round((v - low) / span * (len(SPARK) - 1))])
    return "".join(out)


def status_text(status: str | None) -> Text:
    status = status or "-"
    return Text(status, style=STATUS_STYLE.get(status.lower(), ""))


def check_items(checks: Any) -> Iterable[tuple[str, str, str]]:
    """(name, status, summary) for each check of a validation run, whatever shape it was stored in.

    Runs store checks as a list of CheckResult dicts or as a mapping name -> result; a bare
    boolean reads as passed/failed.
    """
    if not checks:
        return []
    items: list[tuple[str, Any]]
    if isinstance(checks, dict):
        items = list(checks.items())
    else:
        items = [(str(c.get("name", "?")) if isinstance(c, dict) else "?", c) for c in checks]
    out = []
    for name, result in items:
        if isinstance(result, bool):
            out.append((name, "passed" if result else "failed", ""))
        elif isinstance(result, dict):
            status = result.get("status")
            if status is None and "passed" in result:
                status = "passed" if result["passed"] else "failed"
            out.append((str(result.get("name", name)), str(status or "-"),
                        str(result.get("summary", result.get("message", "")))))
        else:
            out.append((name, "-", str(result)))
    return out


def figure_items(figures: Any) -> list[tuple[str, str]]:
    """(name, value) for each figure of a run, numbers shortened."""
    if not isinstance(figures, dict):
        return []
    return [
        (name, fmt_score(v) if isinstance(v, float) else fmt_value(v))
        for name, v in sorted(figures.items())
    ]
