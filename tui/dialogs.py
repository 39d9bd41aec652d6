"""Small modal screens: confirm, ask for a value, pick a base or an option, follow a job, list
the keys."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, OptionList, ProgressBar
from textual.widgets.option_list import Option

from registry.records import BaseChoice


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no before something destructive; Escape and `n` say no."""

    BINDINGS = [
        Binding("escape", "answer(False)", "Cancel"),
        Binding("n", "answer(False)", "No", show=False),
        Binding("y", "answer(True)", "Yes", show=False),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value (a tag, a directory); Enter accepts, Escape cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.value, self.placeholder = question, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-text")
            yield Input(self.value, placeholder=self.placeholder, id="answer")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class BasePickerScreen(ModalScreen[str | None]):
    """Pick the base model to filter the list by ("" for all bases)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, choices: list[BaseChoice]) -> None:
        super().__init__(classes="dialog-screen")
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Filter by base model", classes="dialog-text")
            options = [Option("All bases", id="")]
            options += [Option(f"{c.label}  ({c.versions})", id=c.key) for c in self.choices]
            yield OptionList(*options, id="bases")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id or "")

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one of a few options (an export format); Escape cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, options: list[tuple[str, str]]) -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.options = question, options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-text")
            yield OptionList(*(Option(label, id=key) for key, label in self.options),
                             id="choices")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        choices.highlighted = 0
        choices.focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class JobScreen(ModalScreen[None]):
    """A running job's progress bar; Escape hides it while the job goes on."""

    BINDINGS = [Binding("escape", "hide", "Run in background")]

    def __init__(self, title: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-text")
            yield ProgressBar(total=None, id="progress")
            yield Label("Escape: keep working; a notification says when it is done.",
                        classes="dialog-hint")

    def progress(self, done: int, total: int | None) -> None:
        if self.is_attached:
            self.query_one(ProgressBar).update(total=total, progress=done)

    def action_hide(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key binding of every screen, from the bindings themselves."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", show=False)]

    def __init__(self, groups: Iterable[tuple[str, list[BindingType]]]) -> None:
        super().__init__(classes="dialog-screen")
        self.groups = list(groups)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label("Keys (Escape closes)", classes="dialog-text")
            yield DataTable(id="keys", cursor_type="row", show_header=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("where", "key", "does")
        seen: set[tuple[str, str]] = set()
        for where, bindings in self.groups:
            for b in bindings:
                if not isinstance(b, Binding) or not b.description:
                    continue
                key = b.key_display or _key_label(b.key)
                if (where, key) in seen:
                    continue
                seen.add((where, key))
                table.add_row(Text(where, style="dim"), Text(key, style="bold"), b.description)
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)


def _key_label(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "space": "space", "escape": "esc"}
    return ", ".join(names.get(k, k) for k in key.split(","))


__all__ = [
    "BasePickerScreen",
    "ChoiceScreen",
    "ConfirmScreen",
    "HelpScreen",
    "JobScreen",
    "PromptScreen",
]
