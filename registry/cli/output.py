"""Output modes in one place: human text on stdout, JSON for scripts, errors on stderr.

- `--json`: stdout holds only JSON (`print_json`); progress and notes go to stderr or nowhere.
- `-q/--quiet` (every command): no human output and no notes; errors and JSON still print.
- Colour only on a terminal (errors in red); none with NO_COLOR or when piped (rich decides).
- Tables fit the terminal's width (COLUMNS, else 80 when not a terminal): `fit_table`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from registry.registry import Registry



class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 here; let app.main() treat `adapt ... | head` alike for every command.
        self.quiet = True
        raise BrokenPipeError


def _console(**options: Any) -> Console:
    # rich drops colours for NO_COLOR but keeps bold/dim; NO_COLOR users want no escapes at all.
    if os.environ.get("NO_COLOR"):
        options["color_system"] = None
    return _Console(highlight=False, **options)


console = _console(soft_wrap=False)
err_console = _console(stderr=True)  # notes and progress: silenced by --quiet
_error_console = _console(stderr=True, soft_wrap=True)  # errors: never silenced


def set_quiet(quiet: bool) -> None:
    """Silence human output and notes (not errors, not JSON) for the rest of the command."""
    console.quiet = quiet
    err_console.quiet = quiet


def is_quiet() -> bool:
    return console.quiet


def print_error(message: str, *, prefix: str = "error") -> None:
    """One line on stderr, `error:` in red on a terminal; the message is never read as markup."""
    _error_console.print(Text.assemble((f"{prefix}:", "bold red"), " ",
                                       " ".join(message.split("\n"))))


def emit(text: str) -> None:
    """Plain text to stdout (fast for long tables), unless --quiet."""
    if not console.quiet:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def with_output_modes(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with a `-q/--quiet` option added, for every command (see app.py)."""
    import typer

    signature = inspect.signature(func)
    if "quiet" in signature.parameters:
        return func

    @functools.wraps(func)
    def command(*args: Any, quiet: bool = False, **kwargs: Any) -> Any:
        set_quiet(quiet)
        return func(*args, **kwargs)

    option = inspect.Parameter(
        "quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--quiet", "-q",
                             help="Print nothing but errors (and JSON with --json)."),
    )
    params = [*signature.parameters.values(), option]
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {**getattr(func, "__annotations__", {}), "quiet": "bool"}
    return command


def quiet_third_party() -> None:
    """Hide dependencies' import-time noise (bitsandbytes kernel notices, transformers'
    FutureWarnings and advisories) unless ADAPT_DEBUG=1. Imports none of them."""
    if os.environ.get("ADAPT_DEBUG"):
        return
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("bitsandbytes", "transformers", "peft", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") + ("Z" if value.tzinfo is None else "")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)


def print_json(data: Any) -> None:
    """JSON to stdout, nothing else: safe to pipe. Printed even with --quiet (it was asked for)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default, sort_keys=False) + "\n")
    sys.stdout.flush()


def to_jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=_default))


def open_registry() -> Registry:
    """The registry at ADAPT_HOME / ADAPT_DB_URL; says where on stderr when it creates one."""
    from registry.config import load_settings, redact_url
    from registry.registry import Registry

    settings = load_settings()
    db_file = sqlite_file(settings.db_url)
    fresh = db_file is not None and not db_file.exists()
    reg = Registry()
    if fresh:
        where = str(settings.home) if db_file == settings.home / "registry.db" else (
            redact_url(settings.db_url))
        err_console.print(f"created a new registry at {where} (set ADAPT_HOME to use another)",
                          markup=False, soft_wrap=True)
    return reg


def sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    return Path(path) if path and path != ":memory:" else None


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


def fit_table(headers: list[str], rows: list[list[str]], *, shrink: tuple[int, ...] = (),
              optional: tuple[int, ...] = (), width: int | None = None,
              min_width: int = 8) -> str:
    """`plain_table` that fits `width` (default: the terminal's, 80 when piped).

    First the `shrink` columns are shortened in the middle (`abc…xyz`), widest first, down to
    `min_width`; then `optional` columns are left out, in the order given. Other columns are
    never cut: they tell rows apart. `--json` has every field in full.
    """
    width = width or console.width
    natural = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for left_out in range(len(optional) + 1):
        keep = [i for i in range(len(headers)) if i not in optional[:left_out]]
        widths = _shrink_to(width, keep, natural, shrink, headers, min_width)
        if sum(widths[i] for i in keep) + 2 * (len(keep) - 1) <= width:
            break
    cells = [[shorten_middle(r[i], widths[i]) if i in shrink else r[i] for i in keep]
             for r in rows]
    return plain_table([headers[i] for i in keep], cells)


def _shrink_to(width: int, keep: list[int], natural: list[int], shrink: tuple[int, ...],
               headers: list[str], min_width: int) -> list[int]:
    widths = list(natural)
    excess = sum(widths[i] for i in keep) + 2 * (len(keep) - 1) - width
    floors = {i: max(min_width, len(headers[i])) for i in shrink if i in keep}
    while excess > 0:
        candidates = [i for i, floor in floors.items() if widths[i] > floor]
        if not candidates:
            break
        i = max(candidates, key=lambda c: widths[c])
        cut = min(excess, widths[i] - floors[i], max(1, widths[i] - max(
            (widths[c] for c in candidates if c != i), default=0)))
        widths[i] -= cut
        excess -= cut
    return widths


def shorten_middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, keeping its start and its (distinguishing) end."""
    if len(text) <= width:
        return text
    if width < 3:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def shorten_common_prefix(names: list[str]) -> tuple[str, list[str]]:
    """The dotted prefix all `names` share, and each name without it (never the tail)."""
    if len(names) < 2:
        return "", list(names)
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for pieces in zip(*(p[:-1] for p in parts), strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    prefix = ".".join(common) + "." if common else ""
    return prefix, [n[len(prefix):] for n in names]


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
