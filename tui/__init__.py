"""The adapt TUI (Textual): `make_app(registry)` builds it; `adapt tui` runs it."""

from tui.app import AdaptApp, make_app

__all__ = ["AdaptApp", "make_app"]
