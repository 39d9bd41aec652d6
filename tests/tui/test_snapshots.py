"""Snapshot tests of the main screens (pytest-textual-snapshot; `--snapshot-update` rewrites).

Registries are filled with real adapters at fixed times, so screens read the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from registry.registry import Registry
from tests.tui.conftest import settle
from tui import make_app


def keys(*presses: str, width: int = 80) -> Callable[[Any], Any]:
    """A run_before that waits for the list, presses keys, and waits for what they started."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for key in presses:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.clear_notifications()  # toasts time out: keep them out of the pictures
        await pilot.pause()

    return run_before


def test_empty_registry(snap_compare: Any, registry: Registry) -> None:
    assert snap_compare(make_app(registry), run_before=keys())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_adapter_list(snap_compare: Any, populated: Registry, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(populated), terminal_size=size, run_before=keys())


def test_help_screen(snap_compare: Any, populated: Registry) -> None:
    assert snap_compare(make_app(populated), run_before=keys("question_mark"))


@pytest.mark.parametrize("tab", ["1", "2", "4", "5", "6", "7"],
                         ids=["overview", "versions", "scores", "validation", "files", "hub"])
def test_detail_tabs(snap_compare: Any, populated: Registry, tab: str) -> None:
    assert snap_compare(make_app(populated), run_before=keys("down", "enter", tab))


def test_lineage_tab_of_a_composed_version(snap_compare: Any, populated: Registry) -> None:
    assert snap_compare(make_app(populated), run_before=keys("enter", "3"))


def test_compare_screen(snap_compare: Any, populated: Registry) -> None:
    """Both versions' columns fit side by side in an 80x24 terminal."""
    run_before = keys("down", "enter", "2", "space", "up", "space", "c")
    assert snap_compare(make_app(populated), terminal_size=(80, 24), run_before=run_before)
