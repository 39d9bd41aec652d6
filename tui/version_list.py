"""The adapter list: a DataTable that loads rows from the registry a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.message import Message
from textual.widgets import DataTable
from textual.worker import get_current_worker

from tui.filters import ListFilter, short_base
from tui.render import best_score, fmt_time

if TYPE_CHECKING:
    from registry.records import VersionSummary
    from registry.registry import Registry

PAGE = 100
# (key, label); the registry orders by the first four itself, so those page from the database
COLUMNS = (
    ("name", "name"),
    ("version", "v"),
    ("method", "method"),
    ("rank", "r"),
    ("base", "base"),
    ("best", "best"),
    ("tags", "tags"),
    ("updated", "updated"),
)
SERVER_ORDERS = ("name", "method", "rank", "updated")


def base_label(row: VersionSummary, bases: dict[str, str]) -> str:
    """The base column: the registered base's name, else the last part of the model id."""
    fp = row.base_fingerprint
    return bases[fp] if fp in bases else short_base(row.base_model)


def _local_key(column: str, row: VersionSummary, bases: dict[str, str]) -> Any:
    """Sort key for a column the database cannot order by; missing values sort last."""
    if column == "version":
        return (0, row.version, row.name)
    if column == "base":
        return (0, base_label(row, bases), row.name)
    if column == "best":  # best first, by each metric's direction (the rule `adapt best` uses)
        from registry.scoring import headline_metric, known_direction

        metric = headline_metric(row.scores)
        if metric is None:
            return (True, 0.0, row.name)
        value = row.scores[metric]
        return (False, -value if known_direction(metric) else value, row.name)
    if column == "tags":
        return (not row.tags, ",".join(row.tags), row.name)
    return (0, str(row.get(column)), row.name)


class VersionTable(DataTable[Any]):
    """Latest version of each adapter, paged in as the cursor nears the end."""

    @dataclass
    class Loaded(Message):
        """A page arrived. total: rows matching the filter; shown: rows in the table."""

        total: int
        shown: int
        filtered: bool

    def __init__(self, registry: Registry, page_size: int = PAGE, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.registry = registry
        self.page_size = page_size
        self.list_filter = ListFilter()
        self.sort_column = "name"
        self.descending = False
        self.total = 0
        self.loaded: list[VersionSummary] = []
        self._busy = False
        self._generation = 0
        self._bases: dict[str, str] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self.reload()

    # -- loading -----------------------------------------------------------------------------
    def reload(self, keep: str | None = None) -> None:
        """Start over from the first page (after a filter, sort or registry change).

        keep: a ref to put the cursor back on if it is in the first page.
        """
        self._generation += 1
        self._busy = True
        self._fetch(self._generation, 0, True, keep)

    def load_more(self) -> None:
        if self._busy or len(self.loaded) >= self.total:
            return
        self._busy = True
        self._fetch(self._generation, len(self.loaded), False, None)

    @work(thread=True, group="rows")
    def _fetch(self, generation: int, offset: int, reset: bool, keep: str | None) -> None:
        reg, kw = self.registry, self.list_filter.kwargs()
        total = reg.count_versions(**kw) if reset else self.total
        bases = reg.base_names() if reset else self._bases
        if self.sort_column not in SERVER_ORDERS:
            # a column the database does not order by: sort everything that matches here
            rows = reg.list_versions(**kw) if reset else []
        elif not self.descending:
            rows = reg.list_versions(**kw, order=self.sort_column, limit=self.page_size,
                                     offset=offset)
        else:
            # descending pages are ascending pages counted from the end, reversed
            end = total - offset
            start = max(end - self.page_size, 0)
            rows = reg.list_versions(**kw, order=self.sort_column, limit=end - start, offset=start)
            rows.reverse()
        if self.sort_column not in SERVER_ORDERS:
            rows.sort(key=lambda r: _local_key(self.sort_column, r, bases),
                      reverse=self.descending)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._apply, generation, rows, total, bases, reset, keep)

    def _apply(self, generation: int, rows: list[VersionSummary], total: int,
               bases: dict[str, str], reset: bool, keep: str | None) -> None:
        if generation != self._generation:
            return  # a newer filter or sort superseded this page
        self._busy = False
        self.total, self._bases = total, bases
        if reset:
            self.loaded = []
            self.clear()
        for row in rows:
            self.add_row(*self._cells(row), key=row.ref)
        self.loaded.extend(rows)
        if reset and keep is not None and keep in {r.ref for r in rows}:
            self.move_cursor(row=self.get_row_index(keep))
        self._label_sorted_column()
        filtered = any(self.list_filter.kwargs().values())
        self.post_message(self.Loaded(total, len(self.loaded), filtered))

    def _cells(self, row: VersionSummary) -> list[Any]:
        best, _ = best_score(row.scores)
        return [
            Text(row.name, style="bold"),
            str(row.version),
            row.method,
            "-" if row.rank is None else str(row.rank),
            base_label(row, self._bases),
            best,
            Text(",".join(row.tags) or "-", style="cyan" if row.tags else "dim"),
            fmt_time(row.created_at)[:10],
        ]

    def _label_sorted_column(self) -> None:
        for key, label in COLUMNS:
            column = self.columns.get(key)  # type: ignore[call-overload]
            if column is None:
                continue
            arrow = (" ▼" if self.descending else " ▲") if key == self.sort_column else ""
            column.label = Text(label + arrow)
        self.refresh()

    # -- paging and sorting ------------------------------------------------------------------
    @on(DataTable.RowHighlighted)
    def _near_end(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row >= self.row_count - 10:  # before the user reaches the end
            self.load_more()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new >= self.max_scroll_y - 5:
            self.load_more()

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def sort_by(self, column: str, descending: bool | None = None) -> None:
        """Sort by `column` (clicking the sorted column again reverses it)."""
        if descending is None:
            descending = not self.descending if column == self.sort_column else False
        self.sort_column, self.descending = column, descending
        self.reload(keep=self.selected_ref)

    @property
    def selected_ref(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def selected_row(self) -> VersionSummary | None:
        ref = self.selected_ref
        return next((r for r in self.loaded if r.ref == ref), None)
