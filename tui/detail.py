"""One version in detail: tabs for overview, versions, lineage, scores, validation, files, hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane, Tabs, Tree

from registry.errors import AdaptError, NotFound
from tui.actions import VersionScreen, version_bindings
from tui.render import (
    RunView,
    fmt_score,
    fmt_time,
    fmt_value,
    human_bytes,
    one_line,
    run_view,
    sparkline,
    status_text,
)

if TYPE_CHECKING:
    from registry.records import ScoreSeries, VersionDetail, VersionSummary
    from registry.registry import Registry

TABS = ("overview", "versions", "lineage", "scores", "validation", "files", "hub", "targets")
OVERVIEW_SKIP = ("files", "parents", "children", "scores", "validation_runs", "hub")
LINEAGE_DEPTH = 4


@dataclass(frozen=True)
class DetailData:
    """Everything the tabs show, read in one worker."""

    detail: VersionDetail
    versions: list[VersionSummary]
    series: list[ScoreSeries]
    runs: list[RunView]
    related: dict[str, VersionDetail | None]  # lineage: parents by ref (None: not registered)


def read_detail(reg: Registry, ref: str) -> DetailData:
    """Read version `ref` and what its tabs show, through the facade (runs in a worker)."""
    detail = reg.show(ref)
    related: dict[str, VersionDetail | None] = {}
    frontier = [(p["ref"], 1) for p in detail.parents]
    while frontier:
        parent, depth = frontier.pop()
        if parent in related:
            continue
        try:
            related[parent] = found = reg.show(parent)
        except NotFound:
            related[parent] = None
            continue
        if depth < LINEAGE_DEPTH:
            frontier += [(p["ref"], depth + 1) for p in found.parents]
    return DetailData(detail, reg.adapter_versions(detail.name), reg.score_series(detail.name),
                      read_runs(reg, detail), related)


def read_runs(reg: Registry, detail: VersionDetail) -> list[RunView]:
    """The version's validation runs, newest first, with checks, gates and figures."""
    return [run_view(r) for r in reg.runs(detail.ref)]


def read_targets(reg: Registry, ref: str) -> list[tuple[str, str, str, str]]:
    """(target, rules version, pass | warn | fail | error, first problem) per default table, as
    `adapt check` judges the version (and its registered base, when its files are here)."""
    rows = []
    for target, version, default in reg.list_target_tables():
        if not default:
            continue
        try:
            report = reg.check_target(ref, target, target_version=version)
        except (AdaptError, OSError, ValueError) as error:
            rows.append((target, version, "error", one_line(error)))
            continue
        problems = report.failed or report.warned
        verdict = "fail" if report.failed else "warn" if report.warned else "pass"
        detail = problems[0].detail if problems else f"{len(report.results)} rules pass"
        rows.append((target, version, verdict, detail))
    return rows


def _table(id: str, **kwargs: Any) -> DataTable[Any]:
    return DataTable(id=id, cursor_type="row", zebra_stripes=True, **kwargs)


class DetailScreen(VersionScreen):
    """Everything about version `ref`; Escape goes back to the list."""

    BINDINGS = [
        Binding("escape", "close", "Back"),
        *(Binding(str(i + 1), f"tab('{t}')", t.capitalize(), show=False)
          for i, t in enumerate(TABS)),
        *version_bindings(show_compare=True),
    ]

    def __init__(self, registry: Registry, ref: str) -> None:
        super().__init__()
        self.registry = registry
        self.ref = ref
        self.loaded: DetailData | None = None
        self._targets_of: str | None = None  # the ref the Targets tab was checked for
        self.data: Any = {}  # the VersionDetail shown (read once the first read is done)
        self._generation = 0

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title", classes="screen-title")
        with TabbedContent(id="tabs"):
            with TabPane("Overview", id="overview"):
                yield _table("overview-table", show_header=False)
            with TabPane("Versions", id="versions"):
                yield _table("versions-table")
            with TabPane("Lineage", id="lineage"):
                yield Tree("lineage", id="lineage-tree")
            with TabPane("Scores", id="scores"):
                yield _table("scores-table")
                yield Static(classes="empty", id="scores-empty")
            with TabPane("Validation", id="validation"):
                yield _table("validation-table")
                yield Static(classes="empty", id="validation-empty")
            with TabPane("Files", id="files"):
                yield _table("files-table")
            with TabPane("Hub", id="hub"):
                yield _table("hub-table")
                yield Static(classes="empty", id="hub-empty")
            with TabPane("Targets", id="targets"):
                yield _table("targets-table")
                yield Static(classes="empty", id="targets-empty")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_data()

    # -- loading -----------------------------------------------------------------------------
    def refresh_data(self) -> None:
        """Read the version again (after a tag, a validation, a push); close if it is gone."""
        self._generation += 1
        self._read(self._generation, self.ref)

    @work(thread=True, group="reads")
    def _read(self, generation: int, ref: str) -> None:
        try:
            data: DetailData | AdaptError | OSError = read_detail(self.registry, ref)
        except (AdaptError, OSError) as error:
            data = error
        self.app.call_from_thread(self._show, generation, data)

    def _show(self, generation: int, data: DetailData | AdaptError | OSError) -> None:
        if generation != self._generation or not self.is_attached:
            return  # a newer read superseded this one, or the screen was closed
        if isinstance(data, NotFound):
            self.dismiss(None)
            return
        if not isinstance(data, DetailData):
            self.notify(one_line(data), title="read failed", severity="error", timeout=8)
            return
        self.loaded = data
        d = self.data = data.detail
        self.ref = d.ref
        tags = f"  tags: {', '.join(d.tags)}" if d.tags else ""
        rank = f" r{d.rank}" if d.rank is not None else ""
        self.query_one("#detail-title", Static).update(
            Text.assemble((d.ref, "bold"), f"  {d.method}{rank}", (tags, "cyan"))
        )
        self._overview()
        self._versions(data.versions)
        self._lineage(data.related)
        self._scores(data.series)
        self._validation(data.runs)
        self._files()
        self._hub()
        self._targets_of = None
        if self.query_one(TabbedContent).active == "targets":
            self._check_targets()

    def _overview(self) -> None:
        table = self.query_one("#overview-table", DataTable)
        table.clear(columns=True)
        table.add_columns("field", "value")
        for key, value in self.data.items():
            if key in OVERVIEW_SKIP or (key == "new_heads" and not value):
                continue
            table.add_row(Text(key, style="bold"), fmt_value(value))
        counts = (f"{len(self.data[k])} {k.replace('_', ' ')}" for k in OVERVIEW_SKIP)
        table.add_row(Text("see tabs", style="bold"), ", ".join(counts))

    def _versions(self, versions: list[VersionSummary]) -> None:
        table = self.query_one("#versions-table", DataTable)
        table.clear(columns=True)
        for key, label in (("mark", " "), ("version", "ver"), ("digest", "digest"),
                           ("method", "method"), ("rank", "rank"), ("tags", "tags"),
                           ("created", "created")):
            table.add_column(label, key=key)
        for row in versions:
            current = row.version == self.data["version"]
            table.add_row(
                self.mark_cell(row.ref),
                Text(str(row.version), style="bold reverse" if current else "bold"),
                row.digest.split(":", 1)[-1][:12],
                row.method,
                fmt_value(row.rank),
                Text(",".join(row.tags) or "-", style="cyan"),
                fmt_time(row.created_at),
                key=row.ref,
            )
            if current:
                table.move_cursor(row=table.row_count - 1)

    def refresh_marks(self, marked: list[str]) -> None:
        super().refresh_marks(marked)
        table = self.query_one("#versions-table", DataTable)
        if "mark" not in {str(k.value) for k in table.columns}:
            return  # nothing read yet
        for row_key in table.rows:
            table.update_cell(row_key, "mark", self.mark_cell(str(row_key.value)))

    def _lineage(self, related: dict[str, VersionDetail | None]) -> None:
        tree: Tree[str] = self.query_one("#lineage-tree", Tree)
        tree.clear()
        d = self.data
        tree.root.set_label(Text.assemble((d["ref"], "bold"), f"  {d['method']}"))
        tree.root.data = d["ref"]
        seen = {d["ref"]}
        self._add_parents(tree.root, d["parents"], related, seen, 1)
        if not d["parents"]:
            tree.root.add_leaf(Text("no parents: registered directly", style="dim"))
        if d["children"]:
            used = tree.root.add(Text("used by", style="italic"), expand=True)
            for child in d["children"]:
                used.add_leaf(f"{child['ref']}  ({child['role']})", data=child["ref"])
        tree.root.expand()

    def _add_parents(self, node: Any, parents: list[dict[str, Any]],
                     related: dict[str, VersionDetail | None], seen: set[str],
                     depth: int) -> None:
        for p in parents:
            weight = f"  weight {fmt_score(p['weight'])}" if p["weight"] is not None else ""
            parent = related.get(p["ref"])
            if parent is None:
                node.add_leaf(Text.assemble((p["ref"], "bold"), f"  {p['role']}{weight}",
                                            ("  (not in this registry)", "dim")))
                continue
            method = parent["method"] + (f" r{parent['rank']}" if parent["rank"] else "")
            label = Text.assemble((parent["ref"], "bold"), f"  {p['role']}{weight}  {method}")
            if parent["ref"] in seen or depth >= LINEAGE_DEPTH or not parent["parents"]:
                node.add_leaf(label, data=parent["ref"])
                continue
            branch = node.add(label, data=parent["ref"], expand=True)
            self._add_parents(branch, parent["parents"], related, seen | {parent["ref"]},
                              depth + 1)

    def _scores(self, series: list[ScoreSeries]) -> None:
        table = self.query_one("#scores-table", DataTable)
        table.clear(columns=True)
        versions = sorted({v for s in series for v in s.values})[-8:]  # the latest eight
        table.add_columns("metric", "dataset", *(f"v{v}" for v in versions), "trend")
        for s in series:
            values = [s.values.get(v) for v in versions]
            table.add_row(
                Text(s.metric, style="bold"),
                s.dataset or "-",
                *(Text(fmt_score(x), style="reverse" if v == self.data["version"] else "")
                  if x is not None else "-" for v, x in zip(versions, values, strict=True)),
                Text(sparkline(values), style="green"),
            )
        self._empty("scores", not series,
                    "No scores yet. Record one with:\n"
                    f"  adapt score {self.data['ref']} --metric ppl --value 7.3")

    def _validation(self, runs: list[RunView]) -> None:
        table = self.query_one("#validation-table", DataTable)
        table.clear(columns=True)
        table.add_columns("run", "check", "result", "detail")
        for run in runs:
            table.add_row(
                Text(f"#{run.id}", style="bold"),
                Text(run.device, style="bold"),
                status_text(run.status),
                f"{fmt_time(run.started_at)} → {fmt_time(run.finished_at)}",
            )
            for name, status, summary in run.checks:
                table.add_row("", name, status_text(status), summary)
            for gate in run.gates:
                # the stored status, and the figures it read as measured, beside the expression
                detail = f"measured {gate.measured}"
                if gate.message:
                    detail += f"  ({gate.message})"
                table.add_row("", f"gate {gate.expr}", status_text(gate.status), detail)
            if run.figures:
                table.add_row("", "figures", "",
                              "  ".join(f"{k}={v}" for k, v in run.figures if v != "-"))
        self._empty("validation", not runs,
                    "No validation runs yet. Press V to validate, or run:\n"
                    f"  adapt validate {self.data['ref']} --base DIR")

    def _files(self) -> None:
        table = self.query_one("#files-table", DataTable)
        table.clear(columns=True)
        table.add_columns("path", "size", "sha256")
        for f in self.data["files"]:
            table.add_row(Text(f["path"], style="bold"), human_bytes(f["size"]), f["sha256"])

    def _hub(self) -> None:
        table = self.query_one("#hub-table", DataTable)
        table.clear(columns=True)
        table.add_columns("repo", "commit", "tag", "direction", "at")
        for h in self.data["hub"]:
            table.add_row(Text(h["repo"], style="bold"), h["commit"][:12], h["tag"] or "-",
                          h["direction"], fmt_time(h["at"]))
        self._empty("hub", not self.data["hub"],
                    "Not linked to the Hub yet. Press P to push, or run:\n"
                    f"  adapt push {self.data['ref']} --repo USER/NAME")

    # -- targets (checked only when the tab opens: each check reads the base) ---------------
    def _check_targets(self) -> None:
        if self.loaded is None or self._targets_of == self.ref:
            return
        self._targets_of = self.ref
        self._empty("targets", True, "Checking the serving targets' rules…")
        self._read_targets(self._generation, self.ref)

    @work(thread=True, group="reads")
    def _read_targets(self, generation: int, ref: str) -> None:
        rows = read_targets(self.registry, ref)
        self.app.call_from_thread(self._show_targets, generation, rows)

    def _show_targets(self, generation: int, rows: list[tuple[str, str, str, str]]) -> None:
        if generation != self._generation or not self.is_attached:
            return
        table = self.query_one("#targets-table", DataTable)
        table.clear(columns=True)
        table.add_columns("target", "rules", "verdict", "first problem")
        for target, version, verdict, detail in rows:
            table.add_row(Text(target, style="bold"), version, status_text(verdict), detail)
        self._empty("targets", not rows, "No serving-target rules tables are installed.")

    def _empty(self, tab: str, empty: bool, message: str) -> None:
        note = self.query_one(f"#{tab}-empty", Static)
        note.update(message if empty else "")
        note.display = empty
        self.query_one(f"#{tab}-table", DataTable).display = not empty

    # -- keys --------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.set_focus(None)
        self._focus_pane(tab)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "targets":
            self._check_targets()
        if event.pane.id:
            self.call_after_refresh(self._focus_pane, event.pane.id)

    def _focus_pane(self, tab: str) -> None:
        if isinstance(self.focused, Tabs):  # the user is moving along the tabs: stay there
            return
        for widget in self.query_one(f"#{tab}", TabPane).query("DataTable, Tree"):
            if widget.display:
                widget.focus()
                break

    def acted_ref(self) -> str | None:
        """The version the keys act on: the highlighted one on the Versions tab, else this one."""
        if self.query_one(TabbedContent).active == "versions":
            table = self.query_one("#versions-table", DataTable)
            if table.row_count:
                key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
                return str(key.value)
        return self.ref

    def compare_ref(self) -> str | None:
        return self.ref

    @on(DataTable.RowSelected, "#versions-table")
    def _open_version(self, event: DataTable.RowSelected) -> None:
        self.ref = str(event.row_key.value)
        self.refresh_data()

    @on(Tree.NodeSelected, "#lineage-tree")
    def _open_parent(self, event: Tree.NodeSelected[str]) -> None:
        if event.node.data and event.node.data != self.ref:
            self.ref = event.node.data
            self.refresh_data()

    def action_close(self) -> None:
        self.dismiss(None)
