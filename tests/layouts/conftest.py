"""Real-world layouts: tiny models saved by transformers, adapters saved by PEFT on them.

Each layout is a (base directory, adapter directory, Auto class name) triple built once per
session. The base is saved the way users usually have it (a headless checkpoint, tied
embeddings stored once, GPT-2's `transformer.` prefix); the adapter is trained on the model
class the task needs, as PEFT users load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Layout:
    name: str
    base: Path
    adapter: Path
    auto_class: str  # transformers Auto class that loads the adapter's model
    model_kwargs: dict[str, Any]  # what the user passed to from_pretrained (num_labels=...)
    inputs: dict[str, Any]


def _randomize(model: Any) -> None:
    """Give every trainable adapter tensor random signal so deltas are clearly non-zero."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and "magnitude" not in name:
                p.add_(torch.randn_like(p) * 0.05)


def save_adapter(base_dir: Path, out: Path, auto_class: str, peft_config: Any,
                 model_kwargs: dict[str, Any] | None = None, seed: int = 1) -> Path:
    """Load the base with `auto_class`, wrap it with PEFT, randomize, save (float32)."""
    import torch
    import transformers
    from peft import get_peft_model

    cls = getattr(transformers, auto_class)
    torch.manual_seed(seed)
    base = cls.from_pretrained(base_dir, dtype=torch.float32, **(model_kwargs or {}))
    torch.manual_seed(seed + 1)
    model = get_peft_model(base, peft_config)
    _randomize(model)
    model.save_pretrained(out)
    return out


def _ids(vocab: int, seed: int = 0) -> Any:
    import torch

    return torch.randint(3, vocab, (2, 10), generator=torch.Generator().manual_seed(seed))


def _lora(**kwargs: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(init_lora_weights=False, **kwargs)


def build_bert_seqcls(root: Path) -> Layout:
    """Headless BertModel checkpoint (no `bert.` prefix, no head); SeqCls LoRA + classifier."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(11)
    base = root / "bert-base"
    BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64),
              add_pooling_layer=True).save_pretrained(base)
    kwargs = {"num_labels": 3}
    adapter = save_adapter(base, root / "bert-seqcls", "AutoModelForSequenceClassification",
                           _lora(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                 target_modules=["query", "value"]), kwargs)
    return Layout("bert-seqcls", base, adapter, "AutoModelForSequenceClassification", kwargs,
                  {"input_ids": _ids(128)})


def build_roberta_seqcls(root: Path) -> Layout:
    """RobertaForMaskedLM checkpoint (`roberta.` + lm_head); SeqCls adapter, 2-layer head."""
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(12)
    base = root / "roberta-base"
    RobertaForMaskedLM(RobertaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=40)).save_pretrained(base)
    kwargs = {"num_labels": 2}
    adapter = save_adapter(base, root / "roberta-seqcls", "AutoModelForSequenceClassification",
                           _lora(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                 target_modules=["query", "key", "value", "dense"]), kwargs)
    return Layout("roberta-seqcls", base, adapter, "AutoModelForSequenceClassification",
                  kwargs, {"input_ids": _ids(128)})


def _tied_llama(root: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(13)
    base = root / "llama-tied"
    if not base.exists():
        LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=64,
                                     tie_word_embeddings=True)).save_pretrained(base)
    return base


def build_tied_head_sharded(root: Path) -> Layout:
    """Tied-embedding Llama saved in shards with an index; LoRA on lm_head."""
    import torch
    from transformers import LlamaForCausalLM

    base = root / "llama-tied-sharded"
    if not base.exists():
        torch.manual_seed(13)
        model = LlamaForCausalLM.from_pretrained(_tied_llama(root), dtype=torch.float32)
        model.save_pretrained(base, max_shard_size="40KB")
    adapter = save_adapter(base, root / "tied-head-sharded", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                 target_modules=["lm_head", "q_proj"]))
    return Layout("tied-head-sharded", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_tied_embed(root: Path) -> Layout:
    """Tied-embedding Llama (checkpoint stores embed_tokens only); LoRA on embed_tokens."""
    base = _tied_llama(root)
    adapter = save_adapter(base, root / "tied-embed", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                 target_modules=["embed_tokens", "q_proj"]))
    return Layout("tied-embed", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_tied_ensured(root: Path) -> Layout:
    """Tied-embedding Llama; LoRA on embed_tokens with PEFT's ensure_weight_tying."""
    base = _tied_llama(root)
    adapter = save_adapter(base, root / "tied-ensured", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                 target_modules=["embed_tokens", "q_proj"],
                                 ensure_weight_tying=True))
    return Layout("tied-ensured", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_tied_head(root: Path) -> Layout:
    """Tied-embedding Llama; LoRA on lm_head, which the checkpoint does not store."""
    base = _tied_llama(root)
    adapter = save_adapter(base, root / "tied-head", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                 target_modules=["lm_head", "v_proj"]))
    return Layout("tied-head", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_tied_saved_head(root: Path) -> Layout:
    """Tied-embedding Llama; lm_head in modules_to_save (a trained copy of the tied head)."""
    base = _tied_llama(root)
    adapter = save_adapter(base, root / "tied-saved-head", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                 target_modules=["q_proj"], modules_to_save=["lm_head"]))
    return Layout("tied-saved-head", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def _gpt2_headless(root: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(14)
    base = root / "gpt2-headless"
    if not base.exists():
        GPT2Model(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                             n_positions=64)).save_pretrained(base)
    return base


def build_gpt2_lora(root: Path) -> Layout:
    """Headless GPT2Model checkpoint (no `transformer.` prefix); CAUSAL_LM LoRA on Conv1D."""
    base = _gpt2_headless(root)
    adapter = save_adapter(base, root / "gpt2-lora", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8, fan_in_fan_out=True,
                                 target_modules=["c_attn", "c_proj", "c_fc"]))
    return Layout("gpt2-lora", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_gpt2_ia3(root: Path) -> Layout:
    """Headless GPT-2 with IA3 on Conv1D (attention rows and feed-forward input columns)."""
    from peft import IA3Config

    base = _gpt2_headless(root)
    adapter = save_adapter(base, root / "gpt2-ia3", "AutoModelForCausalLM",
                           IA3Config(task_type="CAUSAL_LM", target_modules=["c_attn", "mlp.c_proj"],
                                     feedforward_modules=["mlp.c_proj"], fan_in_fan_out=True,
                                     init_ia3_weights=False))
    return Layout("gpt2-ia3", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_t5(root: Path) -> Layout:
    """T5 (shared embeddings tied into encoder and decoder); LoRA on attention and FFN."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(15)
    base = root / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64,
                                        num_layers=2, num_heads=4,
                                        decoder_start_token_id=0)).save_pretrained(base)
    adapter = save_adapter(base, root / "t5-lora", "AutoModelForSeq2SeqLM",
                           _lora(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8,
                                 target_modules=["q", "v", "wi", "wo"]))
    return Layout("t5-lora", base, adapter, "AutoModelForSeq2SeqLM", {},
                  {"input_ids": _ids(128), "decoder_input_ids": _ids(128, seed=1)})


def build_t5_saved_head(root: Path) -> Layout:
    """T5 with lm_head in modules_to_save: lm_head is tied to `shared` in the checkpoint."""
    base = root / "t5"
    if not base.exists():
        build_t5(root)
    adapter = save_adapter(base, root / "t5-saved-head", "AutoModelForSeq2SeqLM",
                           _lora(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8,
                                 target_modules=["q", "v"], modules_to_save=["lm_head"]))
    return Layout("t5-saved-head", base, adapter, "AutoModelForSeq2SeqLM", {},
                  {"input_ids": _ids(128), "decoder_input_ids": _ids(128, seed=1)})


def build_dora_embedding(root: Path) -> Layout:
    """DoRA on an (untied) embedding: the magnitude vector is per embedding dimension."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(16)
    base = root / "llama-untied"
    if not base.exists():
        LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=1, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=64,
                                     tie_word_embeddings=False)).save_pretrained(base)
    adapter = save_adapter(base, root / "dora-embed", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8, use_dora=True,
                                 target_modules=["embed_tokens", "q_proj"]))
    return Layout("dora-embed", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def _mixtral(root: Path) -> Path:
    """A tiny Mixtral: transformers v5 fuses experts in the model but saves them per expert."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(17)
    base = root / "mixtral"
    if not base.exists():
        MixtralForCausalLM(MixtralConfig(
            vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
            num_experts_per_tok=2, max_position_embeddings=64, tie_word_embeddings=False,
        )).save_pretrained(base)
    return base


def build_moe_attention(root: Path) -> Layout:
    """MoE base in the per-expert checkpoint layout; LoRA on attention."""
    base = _mixtral(root)
    adapter = save_adapter(base, root / "moe-attn", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                 target_modules=["q_proj", "v_proj", "o_proj"]))
    return Layout("moe-attn", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_moe_experts(root: Path) -> Layout:
    """LoRA on the fused expert parameters (`target_parameters`), which the checkpoint stores
    per expert."""
    base = _mixtral(root)
    adapter = save_adapter(base, root / "moe-experts", "AutoModelForCausalLM",
                           _lora(task_type="CAUSAL_LM", r=2, lora_alpha=4,
                                 target_modules=["q_proj"],
                                 target_parameters=["mlp.experts.gate_up_proj"]))
    return Layout("moe-experts", base, adapter, "AutoModelForCausalLM", {},
                  {"input_ids": _ids(128)})


def build_vlm(root: Path) -> Layout:
    """A tiny Llava (Llama text + CLIP vision). transformers v5 names the text model
    `model.language_model.*`; the checkpoint is saved in the older layout it converts from."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(18)
    base = root / "llava"
    text = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=4, image_size=32, patch_size=16)
    LlavaForConditionalGeneration(LlavaConfig(text_config=text, vision_config=vision,
                                              image_token_index=127)).save_pretrained(base)
    adapter = save_adapter(base, root / "llava-lora", "AutoModelForImageTextToText",
                           _lora(r=4, lora_alpha=8,
                                 target_modules=r".*language_model.*\.(q_proj|v_proj|up_proj)"))
    return Layout("llava-lora", base, adapter, "AutoModelForImageTextToText", {},
                  {"input_ids": _ids(120)})


BUILDERS = {
    "llava-lora": build_vlm,
    "moe-attn": build_moe_attention,
    "moe-experts": build_moe_experts,
    "bert-seqcls": build_bert_seqcls,
    "roberta-seqcls": build_roberta_seqcls,
    "tied-embed": build_tied_embed,
    "tied-head": build_tied_head,
    "tied-ensured": build_tied_ensured,
    "tied-head-sharded": build_tied_head_sharded,
    "tied-saved-head": build_tied_saved_head,
    "gpt2-lora": build_gpt2_lora,
    "gpt2-ia3": build_gpt2_ia3,
    "t5-lora": build_t5,
    "t5-saved-head": build_t5_saved_head,
    "dora-embed": build_dora_embedding,
}


@pytest.fixture(scope="session")
def layouts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layouts")


@pytest.fixture(scope="session")
def layout_cache() -> dict[str, Layout]:
    return {}


@pytest.fixture
def build_layout(layouts_root: Path, layout_cache: dict[str, Layout]):
    def build(name: str) -> Layout:
        if name not in layout_cache:
            layout_cache[name] = BUILDERS[name](layouts_root)
        return layout_cache[name]

    return build
