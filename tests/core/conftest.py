"""Fixtures for core tests: adapters to break in specific ways."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def lora_copy(tmp_path: Path, tiny_lora: Path) -> Path:
    """A private copy of the tiny LoRA that a test may damage."""
    dst = tmp_path / "lora-copy"
    shutil.copytree(tiny_lora, dst)
    return dst
