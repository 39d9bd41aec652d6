"""The adapt TUI: `make_app(registry)` builds it for the CLI (`adapt tui`) and for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Static

from registry.errors import AdaptError
from tui.actions import VersionScreen, version_bindings
from tui.compare import CompareScreen
from tui.detail import DetailScreen
from tui.dialogs import (
    BasePickerScreen,
    ChoiceScreen,
    ConfirmScreen,
    HelpScreen,
    JobScreen,
    PromptScreen,
)
from tui.filters import parse_filter
from tui.render import one_line
from tui.version_list import COLUMNS, PAGE, VersionTable

if TYPE_CHECKING:
    from registry.records import BaseChoice, VersionDetail
    from registry.registry import Registry

T = TypeVar("T")
EXPORT_FORMATS = [  # (format, label) as `adapt export --format` takes them
    ("peft", "PEFT directory (adapter_config.json + safetensors)"),
    ("gguf", "llama.cpp LoRA GGUF file (needs the registered base)"),
    ("ollama", "Ollama directory (GGUF adapter + Modelfile)"),
]

FILTER_DELAY = 0.15  # seconds of typing pause before the list is queried again
EMPTY_HELP = (
    "No adapters registered yet.\n\n"
    "Register a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
    "with its base model, then press r to reload:\n\n"
    "  adapt add PATH --base DIR\n\n"
    "q quits, ? lists every key."
)


class ListScreen(VersionScreen):
    """The adapter list with its filter line and status line."""

    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("enter", "open", "Open"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("b", "pick_base", "Base"),
        *version_bindings(show_compare=False),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self, registry: Registry, page_size: int) -> None:
        super().__init__()
        self.registry = registry
        self.page_size = page_size
        self._filter_timer: Timer | None = None
        self._last_load: VersionTable.Loaded | None = None

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
        self._read_base_choices()

    @work(thread=True, group="reads")
    def _read_base_choices(self) -> None:
        choices = self.registry.base_choices()
        self.app.call_from_thread(self._show_base_picker, choices)

    def _show_base_picker(self, choices: list[BaseChoice]) -> None:
        def picked(key: str | None) -> None:
            if key is None:
                return
            box = self.query_one("#filter", Input)
            words = [w for w in box.value.split() if not w.startswith("base:")]
            if key:
                words.append(f"base:{key}" if " " not in key else f'base:"{key}"')
            box.value = " ".join(words)

        if self.is_current:
            self.app.push_screen(BasePickerScreen(choices), picked)

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
        self.refresh_marks(self.marked)

    def refresh_marks(self, marked: list[str]) -> None:
        """Redraw the status line: counts, sort, and the versions marked for comparison."""
        super().refresh_marks(marked)
        event = self._last_load
        if event is None:
            return
        noun = "adapter" if event.total == 1 else "adapters"
        parts = [f"{event.total} {noun}" + (" match" if event.filtered else "")]
        if event.shown < event.total:
            parts.append(f"{event.shown} loaded")
        parts.append(f"sort: {self.table.sort_column} {'▼' if self.table.descending else '▲'}")
        if self.marked:
            parts.append("marked: " + ", ".join(self.marked))
        if event.filtered and not event.total:
            parts.append("Escape clears the filter")
        self.query_one("#status", Static).update(Text("  ·  ".join(parts)))
        self.app.sub_title = f"{event.total} {noun}" if not event.filtered else ""

    @on(VersionTable.RowSelected)
    def _row_selected(self, event: VersionTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def acted_ref(self) -> str | None:
        return self.table.selected_ref

    def compare_ref(self) -> str | None:
        return self.table.selected_ref

    def action_open(self) -> None:
        self._post(self.OpenRequested)

    def action_cycle_sort(self) -> None:
        keys = [k for k, _ in COLUMNS]
        self.table.sort_by(keys[(keys.index(self.table.sort_column) + 1) % len(keys)], False)

    def action_reverse_sort(self) -> None:
        self.table.sort_by(self.table.sort_column, not self.table.descending)

    def action_reload(self) -> None:
        self.refresh_data()


class AdaptApp(App[None]):
    """Browse, compare and act on one registry.

    Screens post `VersionScreen` messages; the handlers here act through the Registry facade in
    thread workers, so the UI thread never waits on the database or the disk.
    """

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
            if isinstance(screen, ListScreen | DetailScreen):
                screen.refresh_data()

    def in_worker(self, what: str, call: Callable[[], T],
                  done: Callable[[T], None] | None = None) -> None:
        """Run a registry call in a thread; `done(result)` runs on the UI thread after it.

        A typed error, an OS error (a dangling symlink, /proc, a full disk) or a bad value (a
        path with NUL) becomes a one-line error notification; the app keeps running.
        """

        def run() -> None:
            try:
                result = call()
            except (AdaptError, OSError, ValueError) as error:
                self.call_from_thread(self.report_failure, what, error)
                return
            if done is not None:
                self.call_from_thread(done, result)

        self.run_worker(run, thread=True, group="registry", name=what)

    def report_failure(self, what: str, error: BaseException) -> None:
        self.notify(one_line(error), title=f"{what} failed", severity="error", timeout=8)

    # -- what the screens ask for ------------------------------------------------------------
    @on(VersionScreen.OpenRequested)
    def _open(self, event: VersionScreen.OpenRequested) -> None:
        screen = DetailScreen(self.registry, event.ref)
        screen.marked = list(self.marked)
        self.push_screen(screen)

    @on(VersionScreen.TagRequested)
    def _tag(self, event: VersionScreen.TagRequested) -> None:
        ref = event.ref

        def answered(tag: str | None) -> None:
            if tag:
                self.in_worker("tag", lambda: self.registry.tag(ref, tag),
                               lambda _: self._tagged(ref, tag))

        self.push_screen(PromptScreen(f"Tag {ref} as:", placeholder="prod"), answered)

    def _tagged(self, ref: str, tag: str) -> None:
        self.notify(f"{ref} is now {ref.split('@')[0]}:{tag}", title="Tagged")
        self.refresh_views()

    @on(VersionScreen.UntagRequested)
    def _untag(self, event: VersionScreen.UntagRequested) -> None:
        ref = event.ref

        def ask(shown: VersionDetail) -> None:
            if not shown.tags:
                self.notify(f"{ref} has no tags.", severity="warning")
                return
            name = shown.name

            def answered(tag: str | None) -> None:
                if tag:
                    self.in_worker("untag", lambda: self.registry.untag(name, tag),
                                   lambda _: self._untagged(name, tag))

            self.push_screen(PromptScreen(f"Remove which tag of {name}? "
                                          f"({', '.join(shown.tags)})", value=shown.tags[0]),
                             answered)

        self.in_worker("untag", lambda: self.registry.show(ref), ask)

    def _untagged(self, name: str, tag: str) -> None:
        self.notify(f"removed tag {name}:{tag}", title="Untagged")
        self.refresh_views()

    @on(VersionScreen.ExportRequested)
    def _export(self, event: VersionScreen.ExportRequested) -> None:
        """Ask for a format, then a destination; export in a worker (`adapt export`)."""
        ref = event.ref
        stem = "./" + ref.replace("@", "-v").replace(":", "-")

        def to(fmt: str, dest: str | None) -> None:
            if not dest:
                return
            self.in_worker("export",
                           lambda: self.registry.export_as(ref, Path(dest).expanduser(),
                                                           format=fmt),
                           lambda out: self.notify(f"{ref} written to {out.path}",
                                                   title="Exported"))

        def chosen(fmt: str | None) -> None:
            if fmt:
                default = stem + (".gguf" if fmt == "gguf" else "")
                where = "file" if fmt == "gguf" else "directory"
                self.push_screen(PromptScreen(f"Export {ref} ({fmt}) to {where}:",
                                              value=default), lambda dest: to(fmt, dest))

        self.push_screen(ChoiceScreen(f"Export {ref} as:", EXPORT_FORMATS), chosen)

    @on(VersionScreen.DeleteRequested)
    def _delete(self, event: VersionScreen.DeleteRequested) -> None:
        ref = event.ref

        def deleted(_: object) -> None:
            self.marked = [m for m in self.marked if m != ref]
            self.notify(f"deleted {ref}; `adapt gc` frees its files", title="Deleted")
            self._marks_changed()
            self.refresh_views()

        def answered(yes: bool | None) -> None:
            if yes:
                self.in_worker("delete", lambda: self.registry.remove(ref), deleted)

        self.push_screen(ConfirmScreen(
            f"Delete {ref}?\nIts tags, scores and runs go with it; its files stay in the blob "
            "store until `adapt gc`.", yes="Delete"), answered)

    @on(VersionScreen.MarkToggled)
    def _mark(self, event: VersionScreen.MarkToggled) -> None:
        """Mark a version for comparison (two at most: a third drops the oldest)."""
        if event.ref in self.marked:
            self.marked.remove(event.ref)
        else:
            self.marked = [*self.marked, event.ref][-2:]
        self.notify("marked: " + (", ".join(self.marked) or "none")
                    + ("  (c compares)" if len(self.marked) == 2 else ""), timeout=3)
        self._marks_changed()

    def _marks_changed(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, VersionScreen):
                screen.refresh_marks(self.marked)

    @on(VersionScreen.CompareRequested)
    def _compare(self, event: VersionScreen.CompareRequested) -> None:
        """Compare the two marked versions, or the one marked with the current one."""
        pair = list(self.marked)
        if len(pair) == 1 and event.current and event.current != pair[0]:
            pair.append(event.current)
        if len(pair) != 2:
            self.notify("Mark two versions with space, then press c.", severity="warning")
            return
        self.push_screen(CompareScreen(self.registry, pair[0], pair[1]))

    @on(VersionScreen.ValidateRequested)
    def _validate(self, event: VersionScreen.ValidateRequested) -> None:
        """Validate against the registered base in a worker, with a progress screen."""
        ref = event.ref

        def where_base() -> str | None:
            info = self.registry.resolve(ref)
            base = self.registry.find_base(info.base_fingerprint) if info.base_fingerprint \
                else None
            return base.path if base is not None and base.path and Path(base.path).is_dir() \
                else None

        def start(base_dir: str | None) -> None:
            if base_dir:
                self._start_validation(ref, base_dir)
            else:
                self.push_screen(PromptScreen(f"Base model directory to validate {ref} against:"),
                                 lambda typed: self._start_validation(ref, typed))

        self.in_worker("validate", where_base, start)

    def _start_validation(self, ref: str, base_dir: str | None) -> None:
        if not base_dir:
            return
        from registry.validation.options import ValidationOptions

        job = JobScreen(f"Validating {ref} against {base_dir}")
        self.push_screen(job)

        def work() -> None:
            report = self.registry.validate(ref, ValidationOptions.build(base_dir),
                                            on_progress=self._progress_to(job))
            severity = "information" if report.status == "passed" else "error"
            self.call_from_thread(self._job_done, job, f"{ref}: {report.status}",
                                  "Validation finished", severity)

        self.run_worker(self._guarded(job, "validation", work), thread=True, group="jobs",
                        name=f"validate {ref}")

    @on(VersionScreen.PushRequested)
    def _push(self, event: VersionScreen.PushRequested) -> None:
        """Push to the Hub in a worker, with a progress screen."""
        ref = event.ref

        def run(repo: str | None) -> None:
            if not repo:
                return
            job = JobScreen(f"Pushing {ref} to {repo}")
            self.push_screen(job)

            def work() -> None:
                self.registry.push(ref, repo=repo, on_progress=self._progress_to(job))
                self.call_from_thread(self._job_done, job, f"{ref} pushed to {repo}",
                                      "Pushed", "information")

            self.run_worker(self._guarded(job, "push", work), thread=True, group="jobs",
                            name=f"push {ref}")

        self.push_screen(PromptScreen(f"Push {ref} to Hub repo:", placeholder="USER/NAME"), run)

    # -- long jobs ---------------------------------------------------------------------------
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
                self.call_from_thread(self._job_done, job, one_line(error), f"{what} failed",
                                      "error")

        return run

    def _job_done(self, job: JobScreen, message: str, title: str, severity: Any) -> None:
        if job.is_current:
            job.dismiss(None)
        self.notify(message, title=title, severity=severity, timeout=10)
        self.refresh_views()


def make_app(registry: Registry, *, page_size: int = PAGE) -> AdaptApp:
    """The TUI for `registry`, ready for `.run()` or `.run_test()`.

    page_size: list rows fetched per query (the next page loads as the cursor nears the end).
    """
    return AdaptApp(registry, page_size)
