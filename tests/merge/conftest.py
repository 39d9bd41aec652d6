"""Adapters of every mergeable method, built once per session by PEFT itself on tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.factories import make_adapter, make_tiny_gpt2, make_tiny_llama

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora(**kwargs: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(init_lora_weights=False, **kwargs)


def _configs() -> dict[str, tuple[str, Any]]:
    """name -> (base fixture, PEFT config). Built lazily: peft imports only when needed."""
    from peft import AdaLoraConfig, IA3Config, LoHaConfig, LoKrConfig

    return {
        "lora": ("merge_base", _lora(r=4, lora_alpha=12, target_modules=LLAMA_LINEAR)),
        "lora-patterns": ("merge_base", _lora(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
            rank_pattern={"q_proj": 2, "layers.1.mlp.gate_proj": 6},
            alpha_pattern={"v_proj": 3, "down_proj": 32})),
        "rslora": ("merge_base", _lora(r=8, lora_alpha=4, use_rslora=True,
                                       target_modules=["q_proj", "v_proj", "up_proj"])),
        "dora": ("merge_base", _lora(r=4, lora_alpha=8, use_dora=True,
                                     target_modules=["q_proj", "v_proj", "down_proj"])),
        "modules-to-save": ("merge_base", _lora(r=4, lora_alpha=8,
                                                target_modules=["q_proj", "v_proj"],
                                                modules_to_save=["lm_head"])),
        "embedding-lora": ("merge_base", _lora(r=4, lora_alpha=8,
                                               target_modules=["embed_tokens", "q_proj"])),
        "gpt2-lora": ("merge_gpt2", _lora(r=4, lora_alpha=8, fan_in_fan_out=True,
                                          target_modules=["c_attn", "c_proj", "c_fc"])),
        "gpt2-dora": ("merge_gpt2", _lora(r=4, lora_alpha=8, fan_in_fan_out=True,
                                          use_dora=True, target_modules=["c_attn", "c_fc"])),
        "gpt2-ia3": ("merge_gpt2", IA3Config(target_modules=["c_attn", "mlp.c_proj"],
                                             feedforward_modules=["mlp.c_proj"],
                                             fan_in_fan_out=True, init_ia3_weights=False)),
        "loha": ("merge_base", LoHaConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj",
                                                                        "up_proj"],
                                          init_weights=False)),
        # r=4 on 64 = 8 x 8 factors: lokr_w1 and lokr_w2 both full matrices
        "lokr": ("merge_base", LoKrConfig(r=4, alpha=6, target_modules=["q_proj", "down_proj"],
                                          init_weights=False)),
        # r=2 with decompose_both: lokr_w1_a/_b and lokr_w2_a/_b low-rank factors
        "lokr-lowrank": ("merge_base", LoKrConfig(r=2, alpha=6, decompose_both=True,
                                                  target_modules=["q_proj", "down_proj"],
                                                  init_weights=False)),
        "ia3": ("merge_base", IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                        feedforward_modules=["down_proj"],
                                        init_ia3_weights=False)),
        "adalora": ("merge_base", AdaLoraConfig(init_r=6, target_r=4, total_step=10,
                                                lora_alpha=8, target_modules=["q_proj",
                                                                              "v_proj"])),
        "sharded-lora": ("merge_sharded_base", _lora(r=4, lora_alpha=8,
                                                     target_modules=["q_proj", "up_proj"])),
        "qlora": ("merge_base", _lora(r=4, lora_alpha=8, target_modules="all-linear")),
    }


ADAPTERS = ["lora", "lora-patterns", "rslora", "dora", "modules-to-save", "embedding-lora",
            "gpt2-lora", "gpt2-dora", "gpt2-ia3", "loha", "lokr", "lokr-lowrank", "ia3",
            "adalora", "sharded-lora"]


@pytest.fixture(scope="session")
def merge_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("merge-models")


@pytest.fixture(scope="session")
def merge_base(merge_models: Path) -> Path:
    return make_tiny_llama(merge_models / "llama", seed=3)


@pytest.fixture(scope="session")
def merge_sharded_base(merge_models: Path) -> Path:
    return make_tiny_llama(merge_models / "llama-sharded", seed=4, max_shard_size="100KB")


@pytest.fixture(scope="session")
def merge_gpt2(merge_models: Path) -> Path:
    return make_tiny_gpt2(merge_models / "gpt2", seed=5)


class AdapterCase:
    def __init__(self, name: str, base: Path, adapter: Path) -> None:
        self.name, self.base, self.adapter = name, base, adapter


@pytest.fixture(scope="session")
def adapter_cases() -> dict[str, AdapterCase]:
    """Every adapter, built on first use (a session cache keyed by name)."""
    return {}


@pytest.fixture
def build_case(request: pytest.FixtureRequest, merge_models: Path,
               adapter_cases: dict[str, AdapterCase]):
    def build(name: str) -> AdapterCase:
        if name not in adapter_cases:
            base_fixture, config = _configs()[name]
            base = request.getfixturevalue(base_fixture)
            adapter = make_adapter(base, merge_models / f"adapter-{name}", config, seed=7)
            adapter_cases[name] = AdapterCase(name, base, adapter)
        return adapter_cases[name]

    return build


@pytest.fixture(scope="session")
def prompt_adapter(merge_models: Path, merge_base: Path) -> Path:
    from peft import PromptTuningConfig

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    return make_adapter(merge_base, merge_models / "adapter-prompt", config)
