"""Registries for the TUI tests: real adapters with fixed times, and 10,000 bare versions."""

from __future__ import annotations

import io
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import select, update

from registry.db.models import (
    AdapterVersion,
    EvalScore,
    HubLink,
    Tag,
    ValidationRun,
)
from registry.registry import ParentLink, Registry
from tests.tui.bulk import T0, insert_versions

__all__ = ["T0", "insert_versions", "screen_text", "settle"]


def _fixed_copy(src: Path, out: Path) -> Path:
    """A copy of an adapter whose config names the base the same way on every machine."""
    shutil.copytree(src, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "tiny-llama"
    if isinstance(config.get("target_modules"), list):  # PEFT writes a set: order varies by run
        config["target_modules"] = sorted(config["target_modules"])
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


@pytest.fixture(scope="session")
def fixed_loras(models_dir: Path, tiny_lora: Path, tiny_lora_r8: Path) -> tuple[Path, Path]:
    return (_fixed_copy(tiny_lora, models_dir / "tui-lora-r4"),
            _fixed_copy(tiny_lora_r8, models_dir / "tui-lora-r8"))


def freeze_times(reg: Registry) -> None:
    """Give every row a fixed time, so screens read the same on every run."""
    with reg.catalog.write() as s:
        ids = s.execute(select(AdapterVersion.id).order_by(AdapterVersion.id)).scalars().all()
        for i, vid in enumerate(ids):
            s.execute(update(AdapterVersion).where(AdapterVersion.id == vid)
                      .values(created_at=T0 + timedelta(days=i)))
        s.execute(update(Tag).values(updated_at=T0))
        s.execute(update(EvalScore).values(created_at=T0))
        s.execute(update(HubLink).values(at=T0))
        s.commit()


@pytest.fixture
def populated(registry: Registry, tiny_base: Path, fixed_loras: tuple[Path, Path]) -> Registry:
    """support-lora v1 (r4, prod) and v2 (r8, staging), and sql-mix composed from both."""
    r4, r8 = fixed_loras
    reg = registry
    reg.add(r4, name="support-lora", base=tiny_base, tags=["prod"], source="hub:acme/support")
    reg.add(r8, name="support-lora", base=tiny_base, tags=["staging"], note="more modules",
            source="hub:acme/support")
    reg.add(r8, name="sql-mix", base=tiny_base, source="compose",
            parents=[ParentLink("support-lora@1", weight=0.7, role="compose"),
                     ParentLink("support-lora@2", weight=0.3, role="compose")],
            recipe={"method": "linear", "weights": [0.7, 0.3]})
    reg.add_base(tiny_base, name="tiny-llama")
    for version, ppl, acc in ((1, 9.5, 0.61), (2, 8.25, 0.67)):
        reg.add_score(f"support-lora@{version}", "ppl", ppl, dataset="support-eval")
        reg.add_score(f"support-lora@{version}", "accuracy", acc, dataset="support-eval")
    v2 = reg.resolve("support-lora@2")
    with reg.catalog.write() as s:
        s.add(ValidationRun(
            version_id=v2.id, device="cpu", status="passed",
            checks={"integrity": {"status": "passed", "summary": "2 files match"},
                    "health": {"status": "warn", "summary": "1 module norm above 10"}},
            figures={"ppl": 8.25, "latency_ms": 12.5},
            gates=[{"expr": "ppl <= 9", "name": None, "status": "passed",
                    "values": {"ppl": 8.25}, "message": None}],
            started_at=T0, finished_at=T0 + timedelta(minutes=2)))
        s.add(HubLink(version_id=v2.id, repo="acme/support-lora", commit="0123456789abcdef",
                      tag="v2"))
        s.commit()
    freeze_times(reg)
    return reg


def screen_text(app: Any) -> str:
    """What the terminal shows now, as plain text (for assertions and for reading failures)."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(),
                      force_terminal=True, color_system="truecolor", record=True,
                      legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()


async def settle(pilot: Any, delay: float = 0.0) -> None:
    """Wait for the app's workers and queued messages (twice: a page may start another)."""
    if delay:
        await pilot.pause(delay)
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests are async: anyio's pytest plugin runs them on asyncio."""
    return "asyncio"
