"""Models the validation tests share: exact and deliberately wrong merges, an NF4 model, and
adapters with an outlier module or NaN, all built once per session from the tiny Llama."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.factories import make_tiny_llama


def _peft_merge(base_dir: Path, adapter_dir: Path, out: Path) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    return out


def _edit_adapter(src: Path, out: Path, *, config: dict | None = None,
                  tensor_edit=None) -> Path:
    """Copy an adapter dir, changing config keys and/or tensors (tensor_edit(dict) in place)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    if config:
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg.update(config)
        (out / "adapter_config.json").write_text(json.dumps(cfg))
    if tensor_edit is not None:
        tensors = load_file(str(out / "adapter_model.safetensors"))
        tensor_edit(tensors)
        save_file(tensors, str(out / "adapter_model.safetensors"))
    return out


@pytest.fixture(scope="session")
def merged_exact(models_dir: Path, tiny_base: Path, tiny_lora: Path) -> Path:
    return _peft_merge(tiny_base, tiny_lora, models_dir / "merged-exact")


@pytest.fixture(scope="session")
def merged_wrong_scale(models_dir: Path, tiny_base: Path, tiny_lora: Path) -> Path:
    """Merged as if alpha were doubled: the kind of bug a scale mix-up (alpha/r) causes."""
    cfg = json.loads((tiny_lora / "adapter_config.json").read_text())
    wrong = _edit_adapter(tiny_lora, models_dir / "lora-wrong-alpha",
                          config={"lora_alpha": cfg["lora_alpha"] * 2})
    return _peft_merge(tiny_base, wrong, models_dir / "merged-wrong-scale")


@pytest.fixture(scope="session")
def quantized_nf4(models_dir: Path, merged_exact: Path) -> Path:
    """The exact merge requantized to bitsandbytes NF4 (works on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(merged_exact, quantization_config=config,
                                                 device_map={"": "cpu"})
    out = models_dir / "merged-nf4"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_outlier(models_dir: Path, tiny_lora: Path) -> Path:
    """One module's lora_B scaled 100x: its delta norm stands out from the others."""
    def scale(tensors: dict) -> None:
        key = next(k for k in sorted(tensors) if "layers.1.self_attn.v_proj.lora_B" in k)
        tensors[key] = tensors[key] * 100

    return _edit_adapter(tiny_lora, models_dir / "lora-outlier", tensor_edit=scale)


@pytest.fixture(scope="session")
def lora_nan(models_dir: Path, tiny_lora: Path) -> Path:
    def poison(tensors: dict) -> None:
        key = next(k for k in sorted(tensors) if "lora_A" in k)
        tensors[key][0, 0] = float("nan")

    return _edit_adapter(tiny_lora, models_dir / "lora-nan", tensor_edit=poison)


@pytest.fixture(scope="session")
def retrained_base(models_dir: Path) -> Path:
    """Same architecture and shapes as tiny_base, different weights."""
    return make_tiny_llama(models_dir / "tiny-llama-seed7", seed=7)


@pytest.fixture(scope="session")
def prompt_adapter(models_dir: Path, tiny_base: Path) -> Path:
    from peft import PromptTuningConfig

    from tests.factories import make_adapter

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    return make_adapter(tiny_base, models_dir / "prompt-tuning", config)


@pytest.fixture(scope="session")
def base_with_tokenizer(models_dir: Path, tiny_base: Path) -> Path:
    """tiny_base plus a word-level tokenizer trained here on the default eval set (ids < 256)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from registry.validation.evaldata import load_texts

    out = models_dir / "tiny-llama-tokenizer"
    shutil.copytree(tiny_base, out)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(load_texts(None).texts,
                            trainers.WordLevelTrainer(vocab_size=250, special_tokens=["[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def method_adapters(models_dir: Path, tiny_base: Path) -> dict[str, Path]:
    """A DoRA, a LoHa and an IA3 adapter on tiny_base (random, non-zero deltas)."""
    from peft import IA3Config, LoHaConfig

    from tests.factories import make_adapter, make_lora

    return {
        "dora": make_lora(tiny_base, models_dir / "dora", r=4, alpha=8, use_dora=True),
        "loha": make_adapter(tiny_base, models_dir / "loha",
                             LoHaConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"],
                                        init_weights=False)),
        "ia3": make_adapter(tiny_base, models_dir / "ia3",
                            IA3Config(target_modules=["k_proj", "down_proj"],
                                      feedforward_modules=["down_proj"],
                                      init_ia3_weights=False)),
    }
