"""Plain-text renderings shared by the TUI's widgets: times, sizes, scores, sparklines, runs.

The TUI formats its own values (it does not import `registry.cli`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text

if TYPE_CHECKING:
    from registry.catalog.runs import RunRecord

SPARK = "▁▂▃▄▅▆▇█"
STATUS_STYLE = {
    "passed": "green",
    "pass": "green",
    "fail": "bold red",
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


def human_bytes(n: int | float | None) -> str:
    """A size in decimal units, as `adapt show` prints it."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def one_line(error: BaseException) -> str:
    """An error as one line of a notification (OS errors can carry newlines in paths)."""
    return " ".join(str(error).split()) or type(error).__name__


def fmt_score(value: float) -> str:
    return f"{value:.4g}"


def best_score(scores: dict[str, float]) -> tuple[str, float | None]:
    """The list's "best" cell: the headline metric (`registry.scoring.headline_metric`: a
    quality metric of the adapter, not a timing nor the base's own figure) and its best value
    by that metric's direction, the same rule as `adapt best`.

    Short on purpose (the list must fit 80 columns): the Scores tab shows every metric.
    """
    from registry.scoring import headline_metric

    metric = headline_metric(scores)
    if metric is None:
        return "-", None
    value = scores[metric]
    return f"{metric.removeprefix('validate.')[:8]} {fmt_score(value)}", value


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


@dataclass(frozen=True)
class GateLine:
    """A stored gate as the Validation tab shows it: expression, status, measured values."""

    expr: str
    status: str
    measured: str  # "ppl=8.25, base_ppl=8.1", or "-" when the gate read nothing
    message: str | None = None


@dataclass(frozen=True)
class RunView:
    """One validation run as the Validation tab shows it."""

    id: int
    status: str
    device: str
    started_at: datetime | None
    finished_at: datetime | None
    checks: list[tuple[str, str, str]]
    gates: list[GateLine]
    figures: list[tuple[str, str]]


def gate_line(gate: Any) -> GateLine:
    """A gate stored as a record (expr, status, values) or as a dict (older runs: `passed`)."""
    get = gate.get if isinstance(gate, dict) else (lambda k, d=None: getattr(gate, k, d))
    status = get("status")
    if status is None:
        passed = get("passed")
        status = "error" if passed is None else ("passed" if passed else "failed")
    values = get("values") or {}
    measured = ", ".join(
        f"{k}={'not measured' if v is None else fmt_score(v) if isinstance(v, float) else v}"
        for k, v in values.items()
    ) if isinstance(values, dict) else ""
    expr = str(get("expr") or get("name") or "?")
    return GateLine(expr, str(status), measured or "-", get("message"))


def run_view(run: RunRecord) -> RunView:
    """A RunView of a stored run (`Registry.runs`)."""
    return RunView(int(run.id), str(run.status), str(run.device), run.started_at,
                   run.finished_at, [(c.name, c.status, c.summary) for c in run.checks],
                   [gate_line(g) for g in run.gates], figure_items(run.figures))
