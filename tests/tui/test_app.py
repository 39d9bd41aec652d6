"""Pilot tests: drive the TUI with keys against real registries and check what they changed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.db.models import BaseModel, ValidationRun
from registry.registry import Registry
from tests.cli import run_adapt
from tests.tui.conftest import insert_versions, screen_text, settle
from tui import make_app
from tui.compare import CompareScreen
from tui.detail import DetailScreen
from tui.dialogs import ConfirmScreen, HelpScreen, JobScreen, PromptScreen
from tui.version_list import PAGE

pytestmark = pytest.mark.anyio


def refs(app) -> list[str]:
    return [r["ref"] for r in app.screen.table.loaded]


async def type_text(pilot, text: str) -> None:
    await pilot.press(*["space" if c == " " else c for c in text])


async def test_empty_registry_says_how_to_add_an_adapter(registry: Registry) -> None:
    app = make_app(registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "No adapters registered yet" in text
        assert "adapt add PATH --base DIR" in text
        await pilot.press("enter", "t", "d", "c")  # nothing to act on: no crash
        await settle(pilot)
        assert app.is_running
        await pilot.press("q")
        await settle(pilot)
        assert not app.is_running


async def test_filter_as_you_type_narrows_the_list_and_escape_clears_it(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert refs(app) == ["sql-mix@1", "support-lora@2"]
        await pilot.press("slash")
        await type_text(pilot, "sql")
        await settle(pilot, 0.3)
        assert refs(app) == ["sql-mix@1"]
        assert "1 adapter match" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot, 0.3)
        assert refs(app) == ["sql-mix@1", "support-lora@2"]
        assert app.screen.query_one("#filter").value == ""


async def test_filter_tokens_select_base_tag_and_method(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        box = app.screen.query_one("#filter")
        for text, expected in (("base:tiny-llama", ["sql-mix@1", "support-lora@2"]),
                               ("tag:staging", ["support-lora@2"]),
                               ("method:dora", []),
                               ("base:no-such-base", [])):
            box.value = text
            await settle(pilot, 0.3)
            assert refs(app) == expected, text
        assert "Escape clears the filter" in screen_text(app)


async def test_base_picker_writes_a_base_token_into_the_filter(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        await pilot.press("down", "enter")  # the first base after "All bases"
        await settle(pilot, 0.3)
        assert app.screen.query_one("#filter").value == "base:tiny-llama"
        assert refs(app) == ["sql-mix@1", "support-lora@2"]


async def test_sort_cycles_columns_and_reverses_across_pages(registry: Registry) -> None:
    insert_versions(registry, 3 * PAGE)
    app = make_app(registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert refs(app)[0] == "adapter-00000@1"
        await pilot.press("S")  # name, descending: the last page of the database comes first
        await settle(pilot)
        assert refs(app)[:2] == ["adapter-00299@1", "adapter-00298@1"]
        await pilot.press("s", "s")  # version, then method (ordered by the database)
        await settle(pilot)
        table = app.screen.table
        assert table.sort_column == "method" and not table.descending
        assert [r["method"] for r in table.loaded[:3]] == ["DORA"] * 3
        await pilot.press("S")
        await settle(pilot)
        assert [r["method"] for r in table.loaded[:3]] == ["LORA"] * 3
        await pilot.press("s", "s")  # base: sorted here after loading every row
        await settle(pilot)
        assert table.sort_column == "base" and table.row_count == 3 * PAGE


async def test_clicking_a_header_sorts_by_that_column(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.table
        table.post_message(table.HeaderSelected(table, table.columns["tags"].key, 6,
                                                 table.columns["tags"].label))
        await settle(pilot)
        assert table.sort_column == "tags"
        assert refs(app) == ["support-lora@2", "sql-mix@1"]  # untagged rows last


async def test_list_pages_in_rows_as_the_cursor_reaches_the_end(registry: Registry) -> None:
    insert_versions(registry, 10_000)
    app = make_app(registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.table.row_count == PAGE
        await pilot.press("ctrl+end")
        await settle(pilot, 0.1)
        assert app.screen.table.row_count == 2 * PAGE
        assert f"10000 adapters  ·  {2 * PAGE} loaded" in screen_text(app)


async def test_opens_in_under_a_second_with_10000_versions(registry: Registry) -> None:
    insert_versions(registry, 10_000, per_adapter=2)
    started = time.perf_counter()
    app = make_app(registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        opened = time.perf_counter() - started
        assert app.screen.table.row_count == PAGE
        assert app.screen.table.total == 5_000
    # measured, not asserted (shared CI machines vary): the issue asks for under a second
    print(f"\nTUI open with 10,000 versions (5,000 adapters): {opened:.3f} s to the first page")


async def test_each_detail_tab_shows_its_part_of_the_version(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        expected = {
            "1": ["support-lora@2", "hub:acme/support", "more modules"],
            "2": ["prod", "staging", "2026-01-06 09:30"],
            "3": ["used by", "sql-mix@1"],
            "4": ["accuracy", "support-eval", "0.61", "0.67", "▁█", "█▁"],
            "5": ["integrity", "passed", "warn", "latency_ms=12.5"],
            "6": ["adapter_model.safetensors", "adapter_config.json"],
            "7": ["acme/support-lora", "0123456789ab", "v2"],
        }
        for key, needles in expected.items():
            await pilot.press(key)
            await settle(pilot)
            text = screen_text(app)
            for needle in needles:
                assert needle in text, (key, needle)
        sha = populated.resolve("support-lora@2").files[1].sha256
        await pilot.press("6")
        assert sha[:40] in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, DetailScreen)


async def test_lineage_tree_shows_parents_with_weights_and_methods(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("enter", "3")
        await settle(pilot)
        text = screen_text(app)
        assert "sql-mix@1" in text
        assert "support-lora@1  compose  weight 0.7  LORA r4" in text
        assert "support-lora@2  compose  weight 0.3  LORA r8" in text


async def test_selecting_another_version_opens_it(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter", "2", "up", "enter")
        await settle(pilot)
        assert app.screen.data["ref"] == "support-lora@1"
        assert "support-lora@1  LORA r4  tags: prod" in screen_text(app)


async def test_tagging_a_version_reaches_the_registry(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "t")
        await type_text(pilot, "canary")
        await pilot.press("enter")
        await settle(pilot)
        assert populated.show("support-lora@2")["tags"] == ["canary", "staging"]
        assert populated.resolve("support-lora:canary").version == 2
        assert app.screen.table.loaded[1]["tags"] == ["canary", "staging"]


async def test_tagging_from_the_versions_tab_tags_the_highlighted_version(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter", "2", "up", "t")
        await type_text(pilot, "golden")
        await pilot.press("enter")
        await settle(pilot)
        assert populated.resolve("support-lora:golden").version == 1
        assert "golden" in screen_text(app)


async def test_bad_tag_name_is_reported_not_raised(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await type_text(pilot, "Not Valid")
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running
        assert any("tag failed" in (n.title or "") for n in app._notifications)


async def test_untag_removes_the_tag(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "u", "enter")  # the prompt offers the version's tag
        await settle(pilot)
        assert populated.show("support-lora@2")["tags"] == []


async def test_delete_asks_first_and_then_removes_the_version(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert populated.count_versions() == 2
        await pilot.press("d", "y")
        await settle(pilot)
        assert populated.count_versions() == 1
        assert refs(app) == ["support-lora@2"]


async def test_export_writes_the_peft_directory_in_a_worker(populated, tmp_path: Path) -> None:
    dest = tmp_path / "exported"
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "e", "enter")  # the first format offered is peft
        await settle(pilot)
        app.screen.query_one("#answer").value = str(dest)
        await pilot.press("enter")
        await settle(pilot)
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json",
                                                      "adapter_model.safetensors"]


async def test_compare_shows_two_versions_side_by_side(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("space", "down", "space")
        await settle(pilot)
        assert "marked: sql-mix@1, support-lora@2" in str(app.screen.query_one("#status").render())
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        text = screen_text(app)
        assert "sql-mix@1" in text and "support-lora@2" in text
        assert "Weight diff" in text
        table = app.screen.query_one("#compare")
        rows = {str(table.get_row_at(i)[1]): str(table.get_row_at(i)[0])
                for i in range(table.row_count)}
        assert rows["method"] == "" and rows["tags"] == "≠" and rows["parents"] == "≠"
        assert rows["digest"] == ""  # same files, different names: the same content
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, CompareScreen)


async def test_compare_without_marks_says_what_to_do(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert not isinstance(app.screen, CompareScreen)
        assert any("Mark two versions" in n.message for n in app._notifications)


async def test_help_lists_every_binding_and_escape_closes_it(populated) -> None:
    from tui.app import AdaptApp, ListScreen

    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#keys")
        described = {str(table.get_row_at(i)[2]) for i in range(table.row_count)}
        for binding in [*ListScreen.BINDINGS, *DetailScreen.BINDINGS, *AdaptApp.BINDINGS]:
            assert binding.description in described
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, HelpScreen)


async def test_q_types_into_the_filter_and_quits_elsewhere(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", "q")
        await settle(pilot, 0.3)
        assert app.is_running and app.screen.query_one("#filter").value == "q"
        await pilot.press("enter", "q")
        await settle(pilot)
        assert not app.is_running


async def test_validation_runs_in_a_worker_and_notifies(populated) -> None:
    app = make_app(populated)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "V")  # its base is registered: no prompt, the run starts
        await settle(pilot)
        assert any(n.title == "Validation finished" for n in app._notifications)
        assert not isinstance(app.screen, JobScreen)
    with populated.catalog.write() as s:
        runs = s.query(ValidationRun).filter(ValidationRun.status != "running").count()
    assert runs == 2  # the fixture's run and the new one


async def test_validation_asks_for_the_base_when_none_is_registered(populated) -> None:
    app = make_app(populated)
    with populated.catalog.write() as s:  # forget where the base lives
        for row in s.query(BaseModel).all():
            row.path = None
            s.add(row)
        s.commit()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "V")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, (PromptScreen, JobScreen))


def test_adapt_tui_and_browse_are_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("tui", "browse"):
        result = run_adapt(capsys, name, "--help")
        assert result.code == 0 and "terminal UI" in result.out


def test_cli_start_does_not_import_textual() -> None:
    code = "import sys, registry.cli.app; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
