"""Two versions side by side: their metadata, and the `adapt diff` summary when it exists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from registry.errors import AdaptError
from tui.render import fmt_value, one_line

if TYPE_CHECKING:
    from registry.registry import Registry

FIELDS = ("version", "digest", "method", "peft_type", "rank", "alpha", "use_rslora",
          "rank_pattern", "alpha_pattern", "target_modules", "modules_to_save", "task_type",
          "base_model", "base_fingerprint", "params", "size_bytes", "dtype", "tags",
          "created_at", "source", "note", "recipe")
FIELD_WIDTH = 16  # "base_fingerprint"; longer labels (scores) are shortened


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
    """The `adapt diff` summary line of two versions."""
    return "Weight diff: " + reg.diff(a, b).summary


class CompareScreen(Screen[None]):
    """Metadata of two versions side by side; rows that differ are marked."""

    BINDINGS = [Binding("escape", "close", "Back")]

    def __init__(self, registry: Registry, a: str, b: str) -> None:
        super().__init__()
        self.registry, self.a, self.b = registry, a, b
        self.value_width = 28

    def compose(self) -> ComposeResult:
        yield Static(f"Compare {self.a}  ↔  {self.b}", classes="screen-title")
        yield DataTable(id="compare", cursor_type="row", zebra_stripes=True)
        yield Static("Weight diff: computing…", id="diff")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # two value columns share what the field column leaves, so both fit at 80 columns
        self.value_width = max(12, (self.app.size.width - FIELD_WIDTH - 12) // 2)
        table.add_column("", key="mark", width=1)
        table.add_column("field", key="field", width=FIELD_WIDTH)
        table.add_column(_short(self.a, self.value_width), key="a", width=self.value_width)
        table.add_column(_short(self.b, self.value_width), key="b", width=self.value_width)
        table.focus()
        self._read()

    @work(thread=True, group="reads")
    def _read(self) -> None:
        try:
            pair: tuple[Any, Any] | Exception = (self.registry.show(self.a),
                                                 self.registry.show(self.b))
        except (AdaptError, OSError) as error:
            pair = error
        self.app.call_from_thread(self._show, pair)
        self._diff()

    def _show(self, pair: tuple[Any, Any] | Exception) -> None:
        if not self.is_attached:
            return
        if isinstance(pair, Exception):
            self.notify(one_line(pair), title="compare failed", severity="error", timeout=8)
            self.dismiss(None)
            return
        table = self.query_one(DataTable)
        for name, va, vb in comparison_rows(*pair):
            same = va == vb
            style = "" if same else "yellow"
            table.add_row(
                "" if same else Text("≠", style="bold yellow"),
                Text(_short(name, FIELD_WIDTH), style="dim" if same else "bold"),
                Text(_short(va, self.value_width), style=style),
                Text(_short(vb, self.value_width), style=style),
            )

    def _diff(self) -> None:
        try:
            text = diff_summary(self.registry, self.a, self.b)
        except Exception as error:  # the diff is extra: its failure must not close the screen
            text = f"Weight diff failed: {one_line(error)}"
        self.app.call_from_thread(self._show_diff, text)

    def _show_diff(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#diff", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)


def _short(value: Any, width: int = 60) -> str:
    text = fmt_value(value)
    return text if len(text) <= width else text[: width - 1] + "…"
