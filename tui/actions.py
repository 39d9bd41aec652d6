"""What a screen showing versions can ask for: the keys, and the messages the app acts on.

The list and the detail screen both inherit `VersionScreen`; each says which version the keys act
on (`acted_ref`), posts a message, and the app does the work through the Registry facade in a
worker. No screen reaches into the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen


def version_bindings(*, show_compare: bool) -> list[Binding]:
    """The keys both screens share (the detail screen shows "c" in its footer, the list not)."""
    return [
        Binding("t", "tag", "Tag"),
        Binding("u", "untag", "Untag", show=False),
        Binding("e", "export", "Export", show=False),
        Binding("d", "delete", "Delete", show=False),
        Binding("space", "mark", "Mark for compare", show=False),
        Binding("c", "compare", "Compare", show=show_compare),
        Binding("V", "validate", "Validate", show=False),
        Binding("P", "push", "Push", show=False),
    ]


class VersionScreen(Screen[None]):
    """A screen whose keys act on one version at a time."""

    @dataclass
    class Requested(Message):
        """The user asked for something on version `ref`."""

        ref: str

    class OpenRequested(Requested):
        """Open `ref` in the detail screen."""

    class TagRequested(Requested):
        """Ask for a tag name and point it at `ref`."""

    class UntagRequested(Requested):
        """Ask which of `ref`'s tags to remove."""

    class ExportRequested(Requested):
        """Ask for a format and a destination and export `ref` there."""

    class DeleteRequested(Requested):
        """Confirm, then remove `ref` from the registry."""

    class MarkToggled(Requested):
        """Mark `ref` for comparison, or unmark it."""

    class ValidateRequested(Requested):
        """Validate `ref` against its base."""

    class PushRequested(Requested):
        """Ask for a Hub repo and push `ref` to it."""

    @dataclass
    class CompareRequested(Message):
        """Compare the marked versions (with `current` when only one is marked)."""

        current: str | None

    def __init__(self) -> None:
        super().__init__()
        self.marked: list[str] = []

    def acted_ref(self) -> str | None:
        """The version the keys act on now (None: nothing selected)."""
        raise NotImplementedError

    def compare_ref(self) -> str | None:
        """The version compared with a single marked one."""
        return self.acted_ref()

    def refresh_marks(self, marked: list[str]) -> None:
        """The app's marked versions changed: redraw what shows them."""
        self.marked = list(marked)

    def mark_cell(self, ref: str) -> Text:
        return Text("●", style="bold magenta") if ref in self.marked else Text("")

    def _post(self, message: type[VersionScreen.Requested]) -> None:
        ref = self.acted_ref()
        if ref is None:
            self.notify("No adapter selected.", severity="warning")
        else:
            self.post_message(message(ref))

    def action_tag(self) -> None:
        self._post(self.TagRequested)

    def action_untag(self) -> None:
        self._post(self.UntagRequested)

    def action_export(self) -> None:
        self._post(self.ExportRequested)

    def action_delete(self) -> None:
        self._post(self.DeleteRequested)

    def action_mark(self) -> None:
        self._post(self.MarkToggled)

    def action_validate(self) -> None:
        self._post(self.ValidateRequested)

    def action_push(self) -> None:
        self._post(self.PushRequested)

    def action_compare(self) -> None:
        self.post_message(self.CompareRequested(self.compare_ref()))
