"""`adapt tui` (alias `adapt browse`): browse, compare and act on the registry in a terminal UI."""

from __future__ import annotations

import typer

from registry.cli.output import open_registry


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("tui")(tui)
    app.command("browse", hidden=True)(tui)


def tui() -> None:
    """Open the terminal UI (alias: `adapt browse`).

    Browse adapters (filter with /, sort with s, open with Enter), see a version's metadata,
    versions, lineage, scores, validation runs, files and Hub links in tabs, compare two
    versions, and tag, export or delete. Press ? for every key, q to quit.

    Example:

      ADAPT_HOME=~/.adapt adapt tui
    """
    from tui import make_app  # textual loads only when the TUI opens

    registry = open_registry()
    try:
        make_app(registry).run()
    finally:
        registry.close()
