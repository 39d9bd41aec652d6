"""Shared fixtures: an isolated ADAPT_HOME per test, and tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.factories import make_lora, make_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def adapt_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own ADAPT_HOME (and so its own SQLite registry and blob store)."""
    home = tmp_path / "adapt-home"
    monkeypatch.setenv("ADAPT_HOME", str(home))
    monkeypatch.delenv("ADAPT_DB_URL", raising=False)
    monkeypatch.delenv("ADAPT_BLOB_URL", raising=False)  # never the developer's bucket
    return home


@pytest.fixture
def registry(adapt_home: Path):
    from registry import Registry

    reg = Registry(home=adapt_home)
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_base(models_dir: Path) -> Path:
    """A 2-layer random Llama (float32), single safetensors file."""
    return make_tiny_llama(models_dir / "tiny-llama")


@pytest.fixture(scope="session")
def other_base(models_dir: Path) -> Path:
    """Same architecture as tiny_base but a different hidden size: incompatible."""
    return make_tiny_llama(models_dir / "tiny-llama-wide", hidden_size=96, intermediate_size=160)


@pytest.fixture(scope="session")
def tiny_lora(models_dir: Path, tiny_base: Path) -> Path:
    return make_lora(tiny_base, models_dir / "lora-r4", r=4, alpha=8, seed=1)


@pytest.fixture(scope="session")
def tiny_lora_r8(models_dir: Path, tiny_base: Path) -> Path:
    return make_lora(tiny_base, models_dir / "lora-r8", r=8, alpha=16, seed=2,
                     targets=["q_proj", "k_proj", "v_proj", "o_proj"])
