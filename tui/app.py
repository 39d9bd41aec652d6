"""The adapt TUI: `make_app(registry)` builds it for the CLI (`adapt tui`) and for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Static

from registry.errors import AdaptError
from tui.compare import CompareScreen
from tui.detail import DetailScreen
from tui.dialogs import BasePickerScreen, ConfirmScreen, HelpScreen, JobScreen, PromptScreen
from tui.queries import base_choices, parse_filter
from tui.version_list import COLUMNS, PAGE, VersionTable

if TYPE_CHECKING:
    from registry.registry import Registry

FILTER_DELAY = 0.15  # seconds of typing pause before the list is queried again
EMPTY_HELP = (
    "No adapters registered yet.\n\n"
    "Register a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
    "with its base model, then press r to reload:\n\n"
    "  adapt add PATH --base DIR\n\n"
    "q quits, ? lists every key."
)


class ListScreen(Screen[None]):
    """The adapter list with its filter line and status line."""

    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("enter", "open", "Open"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("b", "pick_base", "Base"),
        Binding("t", "tag", "Tag"),
        Binding("u", "untag", "Untag", show=False),
        Binding("e", "export", "Export", show=False),
        Binding("d", "delete", "Delete", show=False),
        Binding("space", "mark", "Mark for compare", show=False),
        Binding("c", "compare", "Compare", show=False),
        Binding("V", "validate", "Validate", show=False),
        Binding("P", "push", "Push", show=False),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self, registry: Registry, page_size: int) -> None:
        super().__init__()
        self.registry = registry
        self.page_size = page_size
        self._filter_timer: Timer | None = None
        self._last_load: VersionTable.Loaded | None = None

    @property
    def adapt(self) -> AdaptApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Input(placeholder="/ filter: name  base:NAME  method:LORA  tag:prod", id="filter")
        yield VersionTable(self.registry, self.page_size, id="list")
        yield Static(EMPTY_HELP, id="empty")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#empty").display = False
        self.table.focus()

    @property
    def table(self) -> VersionTable:
        return self.query_one(VersionTable)

    def refresh_data(self) -> None:
        self.table.reload(keep=self.table.selected_ref)

    # -- filter ------------------------------------------------------------------------------
    @on(Input.Changed, "#filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(FILTER_DELAY, self._apply_filter)

    def _apply_filter(self) -> None:
        self.table.list_filter = parse_filter(self.query_one("#filter", Input).value)
        self.table.reload()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value:
            box.value = ""
            if self._filter_timer is not None:
                self._filter_timer.stop()
            self._apply_filter()
        self.table.focus()

    def action_pick_base(self) -> None:
        def picked(key: str | None) -> None:
            if key is None:
                return
            box = self.query_one("#filter", Input)
            words = [w for w in box.value.split() if not w.startswith("base:")]
            if key:
                words.append(f"base:{key}" if " " not in key else f'base:"{key}"')
            box.value = " ".join(words)

        self.app.push_screen(BasePickerScreen(base_choices(self.registry)), picked)

    # -- list --------------------------------------------------------------------------------
    @on(VersionTable.Loaded)
    def _loaded(self, event: VersionTable.Loaded) -> None:
        self._last_load = event
        empty = event.total == 0 and not event.filtered
        self.query_one("#empty").display = empty
        was_shown, self.table.display = self.table.display, not empty
        if empty:
            # the hidden table would hand focus to the filter box, where q types a letter
            self.set_focus(None)
        elif not was_shown:
            self.table.focus()
        self.refresh_marks()

    def refresh_marks(self) -> None:
        """Redraw the status line: counts, sort, and the versions marked for comparison."""
        event = self._last_load
        if event is None:
            return
        noun = "adapter" if event.total == 1 else "adapters"
        parts = [f"{event.total} {noun}" + (" match" if event.filtered else "")]
        if event.shown < event.total:
            parts.append(f"{event.shown} loaded")
        parts.append(f"sort: {self.table.sort_column} {'▼' if self.table.descending else '▲'}")
        if self.adapt.marked:
            parts.append("marked: " + ", ".join(self.adapt.marked))
        if event.filtered and not event.total:
            parts.append("Escape clears the filter")
        self.query_one("#status", Static).update(Text("  ·  ".join(parts)))
        self.app.sub_title = f"{event.total} {noun}" if not event.filtered else ""

    @on(VersionTable.RowSelected)
    def _row_selected(self, event: VersionTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def _ref(self) -> str | None:
        ref = self.table.selected_ref
        if ref is None:
            self.app.notify("No adapter selected.", severity="warning")
        return ref

    def action_open(self) -> None:
        if ref := self._ref():
            self.app.push_screen(DetailScreen(self.registry, ref))

    def action_cycle_sort(self) -> None:
        keys = [k for k, _ in COLUMNS]
        self.table.sort_by(keys[(keys.index(self.table.sort_column) + 1) % len(keys)], False)

    def action_reverse_sort(self) -> None:
        self.table.sort_by(self.table.sort_column, not self.table.descending)

    def action_reload(self) -> None:
        self.refresh_data()

    def action_tag(self) -> None:
        if ref := self._ref():
            self.adapt.ask_tag(ref)

    def action_untag(self) -> None:
        if ref := self._ref():
            self.adapt.ask_untag(ref)

    def action_export(self) -> None:
        if ref := self._ref():
            self.adapt.ask_export(ref)

    def action_delete(self) -> None:
        if ref := self._ref():
            self.adapt.ask_delete(ref)

    def action_mark(self) -> None:
        if ref := self._ref():
            self.adapt.toggle_mark(ref)

    def action_compare(self) -> None:
        self.adapt.compare_marked(self.table.selected_ref)

    def action_validate(self) -> None:
        if ref := self._ref():
            self.adapt.start_validation(ref)

    def action_push(self) -> None:
        if ref := self._ref():
            self.adapt.start_push(ref)


class AdaptApp(App[None]):
    """Browse, compare and act on one registry."""

    CSS_PATH = Path(__file__).parent / "adapt.tcss"
    TITLE = "adapt"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, registry: Registry, page_size: int = PAGE) -> None:
        super().__init__()
        self.registry = registry
        self.page_size = page_size
        self.marked: list[str] = []

    def get_default_screen(self) -> Screen[Any]:
        return ListScreen(self.registry, self.page_size)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen([
            ("list", list(ListScreen.BINDINGS)),
            ("detail", list(DetailScreen.BINDINGS)),
            ("compare", list(CompareScreen.BINDINGS)),
            ("everywhere", list(self.BINDINGS)),
        ]))

    def refresh_views(self) -> None:
        """Re-read the registry in every open screen (after a change made here)."""
        for screen in list(self.screen_stack):
            refresh = getattr(screen, "refresh_data", None)
            if refresh is not None:
                refresh()

    def _attempt(self, what: str, call: Callable[[], Any]) -> Any:
        """Run a registry call; a typed error becomes an error notification, not a crash."""
        try:
            return call()
        except AdaptError as error:
            self.notify(str(error), title=f"{what} failed", severity="error", timeout=8)
            return None

    # -- actions shared by the list and the detail screen ------------------------------------
    def ask_tag(self, ref: str) -> None:
        def answered(tag: str | None) -> None:
            if tag and self._attempt("tag", lambda: self.registry.tag(ref, tag)):
                self.notify(f"{ref} is now {ref.split('@')[0]}:{tag}", title="Tagged")
                self.refresh_views()

        self.push_screen(PromptScreen(f"Tag {ref} as:", placeholder="prod"), answered)

    def ask_untag(self, ref: str) -> None:
        shown = self._attempt("untag", lambda: self.registry.show(ref))
        if shown is None:
            return
        if not shown["tags"]:
            self.notify(f"{ref} has no tags.", severity="warning")
            return
        name = shown["name"]

        def answered(tag: str | None) -> None:
            if tag and self._attempt("untag", lambda: _untag(self.registry, name, tag)):
                self.notify(f"removed tag {name}:{tag}", title="Untagged")
                self.refresh_views()

        tags = ", ".join(shown["tags"])
        self.push_screen(PromptScreen(f"Remove which tag of {name}? ({tags})",
                                      value=shown["tags"][0]), answered)

    def ask_export(self, ref: str) -> None:
        def answered(dest: str | None) -> None:
            if dest:
                self.run_worker(lambda: self._export(ref, Path(dest).expanduser()),
                                thread=True, group="jobs", name=f"export {ref}")

        default = "./" + ref.replace("@", "-v").replace(":", "-")
        self.push_screen(PromptScreen(f"Export {ref} to directory:", value=default), answered)

    def _export(self, ref: str, dest: Path) -> None:
        try:
            out = self.registry.export(ref, dest)
        except AdaptError as error:
            self.call_from_thread(self.notify, str(error), title="export failed",
                                  severity="error", timeout=8)
            return
        self.call_from_thread(self.notify, f"{ref} written to {out}", title="Exported")

    def ask_delete(self, ref: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes and self._attempt("delete", lambda: self.registry.remove(ref)):
                self.marked = [m for m in self.marked if m != ref]
                self.notify(f"deleted {ref}; `adapt gc` frees its files", title="Deleted")
                self.refresh_views()

        self.push_screen(ConfirmScreen(
            f"Delete {ref}?\nIts tags, scores and runs go with it; its files stay in the blob "
            "store until `adapt gc`.", yes="Delete"), answered)

    def toggle_mark(self, ref: str) -> None:
        """Mark a version for comparison (two at most: a third drops the oldest)."""
        if ref in self.marked:
            self.marked.remove(ref)
        else:
            self.marked = [*self.marked, ref][-2:]
        self.notify("marked: " + (", ".join(self.marked) or "none")
                    + ("  (c compares)" if len(self.marked) == 2 else ""), timeout=3)
        for screen in self.screen_stack:
            if isinstance(screen, DetailScreen | ListScreen):
                screen.refresh_marks()

    def compare_marked(self, current: str | None) -> None:
        """Compare the two marked versions, or the one marked with `current`."""
        pair = list(self.marked)
        if len(pair) == 1 and current and current != pair[0]:
            pair.append(current)
        if len(pair) != 2:
            self.notify("Mark two versions with space, then press c.", severity="warning")
            return
        self.push_screen(CompareScreen(self.registry, pair[0], pair[1]))

    def start_validation(self, ref: str) -> None:
        """Validate `ref` against its registered base in a worker, with a progress screen."""
        try:
            from registry.validation import validate_version
        except ImportError:
            self.notify("Validation is not available in this build.", severity="warning")
            return
        info = self._attempt("validate", lambda: self.registry.resolve(ref))
        if info is None:
            return
        base = self.registry.find_base(info.base_fingerprint) if info.base_fingerprint else None

        def run(base_dir: str | None) -> None:
            if not base_dir:
                return
            job = JobScreen(f"Validating {ref} against {base_dir}")
            self.push_screen(job)

            def work() -> None:
                report = validate_version(self.registry, ref, base_dir,
                                          on_progress=self._progress_to(job))
                severity = "information" if report.status == "passed" else "error"
                self.call_from_thread(self._job_done, job, f"{ref}: {report.status}",
                                      "Validation finished", severity)

            self.run_worker(self._guarded(job, "validation", work), thread=True, group="jobs",
                            name=f"validate {ref}")

        if base is not None and base.path and Path(base.path).is_dir():
            run(base.path)
        else:
            self.push_screen(PromptScreen(f"Base model directory to validate {ref} against:"),
                             run)

    def start_push(self, ref: str) -> None:
        """Push `ref` to the Hub in a worker, with a progress screen."""
        try:
            from registry.hub import push
        except ImportError:
            self.notify("Hub push is not available in this build.", severity="warning")
            return

        def run(repo: str | None) -> None:
            if not repo:
                return
            job = JobScreen(f"Pushing {ref} to {repo}")
            self.push_screen(job)

            def work() -> None:
                push(self.registry, ref, repo=repo, on_progress=self._progress_to(job))
                self.call_from_thread(self._job_done, job, f"{ref} pushed to {repo}",
                                      "Pushed", "information")

            self.run_worker(self._guarded(job, "push", work), thread=True, group="jobs",
                            name=f"push {ref}")

        self.push_screen(PromptScreen(f"Push {ref} to Hub repo:", placeholder="USER/NAME"), run)

    def _progress_to(self, job: JobScreen) -> Callable[[int, int | None], None]:
        def on_progress(done: int, total: int | None = None) -> None:
            self.call_from_thread(job.progress, done, total)

        return on_progress

    def _guarded(self, job: JobScreen, what: str, work: Callable[[], None]) -> Callable[[], None]:
        """Run `work`; any error ends the job with an error notification instead of a crash."""

        def run() -> None:
            try:
                work()
            except Exception as error:  # a job's failure is reported, the app keeps running
                self.call_from_thread(self._job_done, job, str(error), f"{what} failed",
                                      "error")

        return run

    def _job_done(self, job: JobScreen, message: str, title: str, severity: Any) -> None:
        if job.is_current:
            job.dismiss(None)
        self.notify(message, title=title, severity=severity, timeout=10)
        self.refresh_views()


def _untag(registry: Registry, name: str, tag: str) -> bool:
    """Untag and say so (untag returns None, which `_attempt` reads as a caught error)."""
    registry.untag(name, tag)
    return True


def make_app(registry: Registry, *, page_size: int = PAGE) -> AdaptApp:
    """The TUI for `registry`, ready for `.run()` or `.run_test()`.

    page_size: list rows fetched per query (the next page loads as the cursor nears the end).
    """
    return AdaptApp(registry, page_size)
