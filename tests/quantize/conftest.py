"""A LoRA on every Linear of the tiny Llama, its merge, and requantized outputs, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import make_lora

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="session")
def quant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="session")
def all_linear_lora(quant_dir: Path, tiny_base: Path) -> Path:
    """q/v-only LoRAs would leave most layers without a delta: target every Linear."""
    return make_lora(tiny_base, quant_dir / "lora-all", r=4, alpha=8, seed=3,
                     targets=LLAMA_LINEAR)


@pytest.fixture(scope="session")
def merged_dir(quant_dir: Path, tiny_base: Path, all_linear_lora: Path) -> Path:
    from registry.ops.merge import merge_adapter_into_base

    out = quant_dir / "merged"
    merge_adapter_into_base(all_linear_lora, tiny_base, out)
    return out


@pytest.fixture(scope="session")
def token_ids():
    import torch

    return torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
