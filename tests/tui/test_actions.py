"""The TUI's shape: actions run through the facade off the UI thread, errors never crash it,
stored gate results are shown as stored, and the Compare screen fits 80x24."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from registry.registry import Registry
from tests.hub.conftest import hub  # noqa: F401  # the local Hub server fixture, for push
from tests.tui.conftest import screen_text, settle
from tui import make_app
from tui.compare import CompareScreen
from tui.detail import DetailScreen
from tui.render import gate_line

pytestmark = pytest.mark.anyio
TUI = Path(__file__).resolve().parents[2] / "tui"


def spy_on_threads(reg: Registry) -> list[tuple[str, bool]]:
    """Wrap every public Registry method of `reg`; record (name, ran on the UI thread)."""
    calls: list[tuple[str, bool]] = []
    ui = threading.main_thread()  # the Pilot app runs on the test's event loop
    for name in dir(Registry):
        if name.startswith("_") or not callable(getattr(Registry, name, None)):
            continue
        original = getattr(reg, name)

        def spy(*args: Any, _call: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, threading.current_thread() is ui))
            return _call(*args, **kwargs)

        setattr(reg, name, spy)
    return calls


async def test_no_registry_call_runs_on_the_ui_thread(populated: Registry,
                                                      tmp_path: Path) -> None:
    calls = spy_on_threads(populated)
    app = make_app(populated)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("b")  # base picker reads base_choices
        await settle(pilot)
        await pilot.press("escape", "down", "t", *"canary", "enter")
        await settle(pilot)
        await pilot.press("u", "enter")  # untag reads the version's tags first
        await settle(pilot)
        await pilot.press("space", "up", "space", "c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("escape", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        for tab in "12345678":
            await pilot.press(tab)
            await settle(pilot)
        await pilot.press("e", "enter")
        await settle(pilot)
        app.screen.query_one("#answer").value = str(tmp_path / "out")
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running
    names = {name for name, _ in calls}
    assert {"list_versions", "count_versions", "base_names", "base_choices", "tag", "untag",
            "show", "adapter_versions", "score_series", "runs", "export_as",
            "check_target"} <= names
    on_ui = sorted({name for name, ui in calls if ui})
    assert on_ui == [], f"registry calls on the UI thread: {on_ui}"
    assert (tmp_path / "out" / "adapter_config.json").is_file()


@pytest.mark.parametrize("where", ["dangling symlink", "NUL in the path"])
async def test_an_os_error_in_an_action_is_one_notification_not_a_crash(
        populated: Registry, tmp_path: Path, where: str) -> None:
    if where == "dangling symlink":
        dest = tmp_path / "link"
        dest.symlink_to(tmp_path / "missing" / "target")
        typed = str(dest)
    else:
        typed = str(tmp_path / "a\0b")
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("e", "enter")
        await settle(pilot)
        app.screen.query_one("#answer").value = typed
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running
        failed = [n for n in app._notifications if n.title == "export failed"]
        assert len(failed) == 1 and "\n" not in failed[0].message and failed[0].message
        await pilot.press("down")  # still answering keys
        await settle(pilot)
        assert app.screen.table.selected_ref == "support-lora@2"


async def test_validation_tab_shows_each_gate_as_stored_with_its_measured_value(
        populated: Registry) -> None:
    app = make_app(populated)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter", "5")
        await settle(pilot)
        table = app.screen.query_one("#validation-table")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        gate = next(r for r in rows if r[1].startswith("gate "))
        assert gate[1:] == ["gate ppl <= 9", "passed", "measured ppl=8.25"]


def test_gate_line_reads_old_and_new_stored_shapes() -> None:
    assert gate_line({"expr": "ppl <= 9", "passed": True}).status == "passed"
    assert gate_line({"expr": "ppl <= 9", "passed": False}).status == "failed"
    unmeasured = gate_line({"expr": "acc >= 0.5", "status": "error",
                            "values": {"acc": None}, "message": "acc was not measured"})
    assert (unmeasured.status, unmeasured.measured) == ("error", "acc=not measured")
    assert gate_line({"expr": "x > 1"}).status == "error"  # nothing says it passed


async def test_compare_fits_both_versions_at_80x24(populated: Registry) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("space", "down", "space", "c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        lines = screen_text(app).splitlines()
        header = next(line for line in lines if "field" in line)
        assert "sql-mix@1" in header and "support-lora@2" in header
        rank = next(line for line in lines if " rank " in f" {line} ")
        assert "8" in rank.split("rank", 1)[1]  # both values of the row are on screen
        assert all(len(line.rstrip()) <= 80 for line in lines)


def test_screens_do_not_import_the_app_or_the_cli() -> None:
    for path in TUI.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m and m.startswith("registry.cli") for m in imported), path.name
        if path.name not in ("app.py", "__init__.py"):
            assert "tui.app" not in imported, f"{path.name} imports tui.app (a cycle)"
    code = ("import sys, tui.app; "
            "print(sorted(m for m in sys.modules if m.startswith('registry.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_export_offers_formats_and_writes_a_gguf_file(populated: Registry,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "support.gguf"
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "e")
        await settle(pilot)
        offered = app.screen.query_one("#choices")
        assert [offered.get_option_at_index(i).id for i in range(offered.option_count)] == [
            "peft", "gguf", "ollama"]
        await pilot.press("down", "enter")
        await settle(pilot)
        assert app.screen.query_one("#answer").value.endswith("support-lora-v2.gguf")
        app.screen.query_one("#answer").value = str(out)
        await pilot.press("enter")
        await settle(pilot)
        assert not [n for n in app._notifications if "failed" in (n.title or "")]
    assert out.read_bytes()[:4] == b"GGUF"


async def test_targets_tab_shows_each_targets_verdict_as_adapt_check_gives_it(
        populated: Registry) -> None:
    app = make_app(populated)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter", "8")
        await settle(pilot)
        table = app.screen.query_one("#targets-table")
        shown = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[2])
                 for i in range(table.row_count)}
    expected = {}
    for target, version, default in populated.list_target_tables():
        if default:
            report = populated.check_target("support-lora@2", target, target_version=version)
            expected[target] = ("fail" if report.failed else "warn" if report.warned
                                else "pass")
    assert shown == expected and len(shown) >= 3


async def test_push_runs_through_the_facade_and_records_the_hub_link(
        populated: Registry, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("hub")
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "P")
        await settle(pilot)
        app.screen.query_one("#answer").value = "alice/support-tui"
        await pilot.press("enter")
        await settle(pilot, 0.5)
        await settle(pilot)
        assert [n.title for n in app._notifications][-1:] == ["Pushed"]
    links = [(h["repo"], h["direction"]) for h in populated.show("support-lora@2").hub]
    assert ("alice/support-tui", "push") in links
