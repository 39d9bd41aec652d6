"""Two versions side by side: their metadata, and the `adapt diff` summary when it exists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.render import fmt_value

if TYPE_CHECKING:
    from registry.registry import Registry

FIELDS = ("version", "digest", "method", "peft_type", "rank", "alpha", "use_rslora",
          "rank_pattern", "alpha_pattern", "target_modules", "modules_to_save", "task_type",
          "base_model", "base_fingerprint", "params", "size_bytes", "dtype", "tags",
          "created_at", "source", "note", "recipe")


def comparison_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, value in a, value in b) for two `Registry.show()` objects, in display order."""
    rows: list[tuple[str, Any, Any]] = [(f, a.get(f), b.get(f)) for f in FIELDS]
    rows.append(("parents", [p["ref"] for p in a["parents"]], [p["ref"] for p in b["parents"]]))
    keys = {(s["metric"], s["dataset"]) for s in a["scores"] + b["scores"]}
    for key in sorted(keys, key=lambda k: (k[0], k[1] or "")):
        label = f"score {key[0]}" + (f" ({key[1]})" if key[1] else "")
        rows.append((label, _last_score(a, key), _last_score(b, key)))
    return rows


def _last_score(show: dict[str, Any], key: tuple[str, str | None]) -> float | None:
    values = [s["value"] for s in show["scores"] if (s["metric"], s["dataset"]) == key]
    return values[-1] if values else None


def diff_summary(reg: Registry, a: str, b: str) -> str:
    """The `adapt diff` summary of two versions, or a line saying why there is none."""
    try:
        from registry.ops import diff as diff_ops  # type: ignore[attr-defined]  # compose issue
    except ImportError:
        return "Weight diff: not available in this build (registry.ops.diff is missing)."
    summarize = getattr(diff_ops, "diff_summary", None) or getattr(diff_ops, "diff_versions", None)
    if summarize is None:
        return "Weight diff: registry.ops.diff has no diff_versions() to call."
    result = summarize(reg, a, b)
    summary = getattr(result, "summary", None)
    return "Weight diff: " + str(summary() if callable(summary) else summary or result)


class CompareScreen(Screen[None]):
    """Metadata of two versions side by side; rows that differ are marked."""

    BINDINGS = [Binding("escape", "close", "Back")]

    def __init__(self, registry: Registry, a: str, b: str) -> None:
        super().__init__()
        self.registry, self.a, self.b = registry, a, b

    def compose(self) -> ComposeResult:
        yield Static(f"Compare {self.a}  ↔  {self.b}", classes="screen-title")
        yield DataTable(id="compare", cursor_type="row", zebra_stripes=True)
        yield Static("Weight diff: computing…", id="diff")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("", key="mark")
        table.add_column("field", key="field")
        table.add_column(self.a, key="a")
        table.add_column(self.b, key="b")
        a, b = self.registry.show(self.a), self.registry.show(self.b)
        for name, va, vb in comparison_rows(a, b):
            same = va == vb
            style = "" if same else "yellow"
            table.add_row(
                "" if same else Text("≠", style="bold yellow"),
                Text(name, style="dim" if same else "bold"),
                Text(_short(va), style=style),
                Text(_short(vb), style=style),
            )
        table.focus()
        self._diff()

    @work(thread=True, group="diff")
    def _diff(self) -> None:
        try:
            text = diff_summary(self.registry, self.a, self.b)
        except Exception as error:  # the diff is extra: its failure must not close the screen
            text = f"Weight diff failed: {error}"
        self.app.call_from_thread(self._show_diff, text)

    def _show_diff(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#diff", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)


def _short(value: Any, width: int = 60) -> str:
    text = fmt_value(value)
    return text if len(text) <= width else text[: width - 1] + "…"
