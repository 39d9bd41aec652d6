"""Real-world layouts merge to PEFT's function: headless bases with task heads, tied embeddings,
GPT-2's prefix and Conv1D, T5. PEFT's unmerged forward is the oracle; the merged directory is
loaded with the Auto class the adapter was trained with and must give the same logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from registry.checkpoint import open_checkpoint
from registry.compat import check_compatible
from registry.ops.merge import merge_adapter_into_base
from registry.peft_dir import read_adapter_dir
from tests.layouts.conftest import Layout

# float32: merged x @ (W + dW) vs PEFT's x @ W + x @ A^T B^T differ by summation order only:
# 1e-5, relative to the largest logit when logits exceed 1 (an adapted head makes them ~100)
LOGITS_ATOL = 1e-5


def _peft_logits(layout: Layout) -> Any:
    import torch
    import transformers
    from peft import PeftModel

    cls = getattr(transformers, layout.auto_class)
    torch.manual_seed(0)
    model = cls.from_pretrained(layout.base, dtype=torch.float32, **layout.model_kwargs)
    peft_model = PeftModel.from_pretrained(model, str(layout.adapter)).eval()
    with torch.no_grad():
        return peft_model(**layout.inputs).logits


def _merged_logits(layout: Layout, out: Path) -> Any:
    import torch
    import transformers

    cls = getattr(transformers, layout.auto_class)
    model = cls.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(**layout.inputs).logits


def _assert_parity(layout: Layout, out: Path) -> None:
    import torch

    ref = _peft_logits(layout)
    ours = _merged_logits(layout, out)
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    atol = LOGITS_ATOL * max(1.0, ref.abs().max().item())
    assert torch.allclose(ours, ref, atol=atol, rtol=0), f"max logit difference {diff:.2e}"


def _tensor_names(out: Path) -> set[str]:
    return set(open_checkpoint(out).tensors)


@pytest.mark.parametrize("name", ["bert-seqcls", "roberta-seqcls", "gpt2-lora", "gpt2-ia3",
                                  "t5-lora", "dora-embed", "llava-lora"])
def test_merged_layout_matches_peft_forward(name: str, build_layout, tmp_path: Path) -> None:
    layout = build_layout(name)
    out = tmp_path / "merged"
    result = merge_adapter_into_base(layout.adapter, layout.base, out)
    assert result.merged_modules > 0
    _assert_parity(layout, out)


def test_headless_bert_gets_the_classifier_head_and_its_size(build_layout,
                                                              tmp_path: Path) -> None:
    layout = build_layout("bert-seqcls")
    out = tmp_path / "merged"
    merge_adapter_into_base(layout.adapter, layout.base, out)
    names = _tensor_names(out)
    assert {"classifier.weight", "classifier.bias"} <= names
    # the base's own names are kept: transformers adds `bert.` when it loads them
    assert "encoder.layer.0.attention.self.query.weight" in names
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert len(config["id2label"]) == 3


def test_seqcls_adapter_fits_headless_base_and_names_its_new_head(build_layout) -> None:
    layout = build_layout("bert-seqcls")
    report = check_compatible(read_adapter_dir(layout.adapter), open_checkpoint(layout.base))
    assert report.new_heads == ["classifier"]
    assert report.renamed["bert.encoder.layer.0.attention.self.query"] == (
        "encoder.layer.0.attention.self.query.weight")


def test_gpt2_ia3_on_conv1d_is_compatible(build_layout) -> None:
    layout = build_layout("gpt2-ia3")
    report = check_compatible(read_adapter_dir(layout.adapter), open_checkpoint(layout.base))
    assert report.renamed  # `transformer.h.0...` on a headless `h.0...` checkpoint


@pytest.mark.parametrize("name", ["tied-embed", "tied-head", "tied-saved-head", "tied-ensured",
                                  "tied-head-sharded"])
def test_tied_embedding_adapters_untie_and_match_peft(name: str, build_layout,
                                                      tmp_path: Path) -> None:
    layout = build_layout(name)
    assert "lm_head.weight" not in _tensor_names(layout.base)  # stored once, tied
    out = tmp_path / "merged"
    merge_adapter_into_base(layout.adapter, layout.base, out)
    names = _tensor_names(out)
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= names
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    _assert_parity(layout, out)


def test_adapter_away_from_tied_weights_keeps_the_tied_layout(build_layout,
                                                              tmp_path: Path) -> None:
    layout = build_layout("gpt2-lora")  # GPT-2 ties lm_head to wte; the adapter touches neither
    out = tmp_path / "merged"
    merge_adapter_into_base(layout.adapter, layout.base, out)
    assert _tensor_names(out) == _tensor_names(layout.base)
    config = json.loads((out / "config.json").read_text())
    assert config.get("tie_word_embeddings", True) is True


def test_moe_adapter_on_attention_merges_into_per_expert_checkpoint(build_layout,
                                                                    tmp_path: Path) -> None:
    layout = build_layout("moe-attn")
    out = tmp_path / "merged"
    merge_adapter_into_base(layout.adapter, layout.base, out)
    assert _tensor_names(out) == _tensor_names(layout.base)  # the base's layout is kept
    _assert_parity(layout, out)


def test_lora_on_fused_experts_is_accepted_but_merge_refuses_in_one_line(
        build_layout, tmp_path: Path) -> None:
    from registry.errors import UnsupportedMethod

    layout = build_layout("moe-experts")
    adapter = read_adapter_dir(layout.adapter)
    report = check_compatible(adapter, open_checkpoint(layout.base))
    assert report.fused == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    with pytest.raises(UnsupportedMethod) as caught:
        merge_adapter_into_base(layout.adapter, layout.base, tmp_path / "merged")
    assert "target_parameters" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "merged").exists()


def test_vlm_adapter_maps_through_transformers_conversion_mapping(build_layout) -> None:
    layout = build_layout("llava-lora")
    report = check_compatible(read_adapter_dir(layout.adapter), open_checkpoint(layout.base))
    # transformers v5 loads `language_model.model.*` as `model.language_model.*`
    assert report.renamed["model.language_model.layers.0.self_attn.q_proj"] == (
        "language_model.model.layers.0.self_attn.q_proj.weight")


def test_cli_adds_seqcls_adapter_on_headless_base_and_merges_it(
        build_layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cli import run_adapt

    layout = build_layout("bert-seqcls")
    added = run_adapt(capsys, "add", layout.adapter, "--base", layout.base, "--name", "cls")
    assert added.code == 0, added.err  # was exit 5: "bert.encoder... is not in the base model"
    shown = run_adapt(capsys, "show", "cls", "--json")
    assert json.loads(shown.out)["new_heads"] == ["classifier"]
    assert "new head" in run_adapt(capsys, "show", "cls").out
    out = tmp_path / "merged"
    merged = run_adapt(capsys, "merge", "cls", "--base", layout.base, "--out", out)
    assert merged.code == 0, merged.err
    _assert_parity(layout, out)


def test_on_the_fly_merge_refuses_what_needs_config_changes(build_layout) -> None:
    from registry.errors import UnsupportedMethod
    from registry.ops.merge import iter_merged_tensors

    layout = build_layout("tied-embed")
    # requantize and validation consume bare tensors: untied embeddings would be tied again
    with pytest.raises(UnsupportedMethod, match="tie_word_embeddings"):
        iter_merged_tensors(layout.adapter, layout.base)


def test_encoder_decoder_tied_head_change_is_refused_in_one_line(build_layout,
                                                                 tmp_path: Path) -> None:
    from registry.errors import UnsupportedMethod

    layout = build_layout("t5-saved-head")
    # T5 scales its decoder output only while tied: untying would change the function
    with pytest.raises(UnsupportedMethod, match="encoder-decoder") as caught:
        merge_adapter_into_base(layout.adapter, layout.base, tmp_path / "merged")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "merged").exists()


def test_untied_head_joins_the_sharded_index(build_layout, tmp_path: Path) -> None:
    layout = build_layout("tied-head-sharded")
    assert open_checkpoint(layout.base).index_file is not None
    out = tmp_path / "merged"
    merge_adapter_into_base(layout.adapter, layout.base, out)
    index = json.loads(next(out.glob("*.safetensors.index.json")).read_text())
    assert "lm_head.weight" in index["weight_map"]
    assert set(index["weight_map"]) == _tensor_names(out)
