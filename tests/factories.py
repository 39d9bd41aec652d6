"""Tiny real models and PEFT adapters for tests. Everything is built locally from configs.

Use these from fixtures (session-scoped where possible): they are the shared way to get a base
model directory and adapters made by PEFT itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_LLAMA = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)


def make_tiny_llama(
    out: Path, *, seed: int = 0, max_shard_size: str | None = None, **overrides: Any
) -> Path:
    """Save a random tiny LlamaForCausalLM (float32 safetensors) to `out` and return it.

    max_shard_size: e.g. "100KB" to get a sharded checkpoint with an index file.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**{**TINY_LLAMA, **overrides})
    model = LlamaForCausalLM(config)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out, **kwargs)
    return Path(out)


def make_tiny_gpt2(out: Path, *, seed: int = 0) -> Path:
    """A tiny GPT-2 (Conv1D layers: LoRA needs fan_in_fan_out=True on it)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(out, safe_serialization=True)
    return Path(out)


def make_adapter(base_dir: Path, out: Path, peft_config: Any, *, seed: int = 1) -> Path:
    """Wrap the model at `base_dir` with `peft_config` (random, non-zero init), save to `out`.

    Pass a config with init_lora_weights=False / init_weights=False / init_ia3_weights=False so
    the adapter's delta is not zero. Adapters are saved in float32.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    model = get_peft_model(base, peft_config)
    with torch.no_grad():
        # PEFT zero-inits some parts even with init off (e.g. DoRA magnitude = norm, exact);
        # give every adapter tensor some random signal so deltas are clearly non-zero.
        for name, p in model.named_parameters():
            if p.requires_grad and "magnitude" not in name:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    return Path(out)


def make_lora(base_dir: Path, out: Path, *, r: int = 4, alpha: float = 8, seed: int = 1,
              targets: list[str] | None = None, **kwargs: Any) -> Path:
    """A LoRA (or DoRA with use_dora=True) on the tiny Llama, saved to `out`."""
    from peft import LoraConfig

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets or ["q_proj", "v_proj"],
        init_lora_weights=False,
        **kwargs,
    )
    return make_adapter(base_dir, out, config, seed=seed)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2))
