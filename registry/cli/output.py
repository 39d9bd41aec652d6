"""Output in one place: human tables on stdout, JSON for scripts, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from registry.registry import Registry

console = Console(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") + ("Z" if value.tzinfo is None else "")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)


def print_json(data: Any) -> None:
    """JSON to stdout, nothing else: safe to pipe."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default, sort_keys=False) + "\n")
    sys.stdout.flush()


def to_jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=_default))


def open_registry() -> Registry:
    from registry.registry import Registry

    return Registry()


@contextmanager
def progress_bar(description: str, total: int | None, *, unit: str = "bytes",
                 enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr; yields `update(done, total)` for ops callbacks.

    Disabled (a no-op callback) with enabled=False, e.g. under --json or when stderr is no tty.
    """
    if not enabled:

        def ignore(done: int, new_total: int | None = None) -> None:
            return None

        yield ignore
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn("{task.description}"), BarColumn(), amount, TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            if new_total is not None:
                bar.update(task, total=new_total)
            bar.update(task, completed=done)

        yield update


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned columns as plain text: fast for thousands of rows, and friendly to grep/cut."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def short_fp(fp: str | None, n: int = 12) -> str:
    if not fp:
        return "-"
    algo, _, hexpart = fp.partition(":")
    return f"{algo}:{hexpart[:n]}" if hexpart else fp[:n]
