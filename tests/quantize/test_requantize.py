"""Requantization: outputs transformers loads as is, equal to its own bitsandbytes path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.ops.options import QuantizeOptions
from registry.ops.quantize import QUANT_RECORD, requantize_merged, requantize_model

# Same bitsandbytes kernels on the same weights: the logits agree to float rounding. They came
# out bit-identical here; the tolerance leaves room for thread-count reordering in matmuls.
LOGIT_ATOL = 1e-4


def _bnb_config(to: str, double_quant: bool, compute: str = "bf16", skips=None):
    import torch
    from transformers import BitsAndBytesConfig

    if to == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skips)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[compute]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=to,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skips)


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits.float()


def _load(path: Path, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


@pytest.mark.parametrize(("to", "double_quant"),
                         [("nf4", False), ("nf4", True), ("fp4", False), ("int8", False)])
def test_requantized_model_loads_as_is_and_matches_transformers_bnb(
    merged_dir: Path, tmp_path: Path, token_ids, to: str, double_quant: bool
) -> None:
    import bitsandbytes as bnb
    import torch

    out = tmp_path / "q"
    requantize_model(merged_dir, out, QuantizeOptions(to=to, double_quant=double_quant))
    ours = _load(out)  # no arguments: config.json says how
    layer = ours.model.layers[0].mlp.down_proj
    assert isinstance(layer, bnb.nn.Linear8bitLt if to == "int8" else bnb.nn.Linear4bit)
    assert type(ours.lm_head) is torch.nn.Linear
    theirs = _load(merged_dir, quantization_config=_bnb_config(to, double_quant),
                   device_map="cpu")
    torch.testing.assert_close(_logits(ours, token_ids), _logits(theirs, token_ids),
                               atol=LOGIT_ATOL, rtol=0)


def _dequantized(layer) -> torch.Tensor:  # noqa: F821
    import bitsandbytes.functional as bnbf

    weight = layer.weight
    if hasattr(weight, "quant_state"):
        return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
    return bnbf.int8_vectorwise_dequant(weight.data, weight.SCB).float()


@pytest.mark.parametrize("to", ["nf4", "int8"])
def test_reported_layer_errors_equal_an_independent_recomputation(
    tiny_base: Path, all_linear_lora: Path, merged_dir: Path, tmp_path: Path, to: str
) -> None:
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "q"
    result = requantize_merged(all_linear_lora, tiny_base, out, QuantizeOptions(to=to))
    record = json.loads((out / QUANT_RECORD).read_text())
    assert len(record["layers"]) == len(result.layers) == 14  # 7 Linear x 2 layers, no lm_head
    merged = load_file(merged_dir / "model.safetensors")
    base = load_file(tiny_base / "model.safetensors")
    model = _load(out)  # dequantize what transformers loaded, not what we held in memory
    err2 = ref2 = 0.0
    for layer in record["layers"]:
        w = merged[layer["module"] + ".weight"].double()
        dq = _dequantized(model.get_submodule(layer["module"])).double()
        err = (w - dq).norm().item()
        delta = (w - base[layer["module"] + ".weight"].double()).norm().item()
        assert layer["rel_error"] == pytest.approx(err / w.norm().item(), rel=1e-5)
        assert layer["error_vs_delta"] == pytest.approx(err / delta, rel=1e-5)
        err2, ref2 = err2 + err**2, ref2 + w.norm().item() ** 2
    assert record["overall"]["rel_error"] == pytest.approx((err2 / ref2) ** 0.5, rel=1e-5)
    assert torch.isfinite(torch.tensor(record["overall"]["error_vs_delta"]))


def test_one_pass_adapter_requantize_equals_merge_then_requantize(
    tiny_base: Path, all_linear_lora: Path, merged_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    options = QuantizeOptions(to="nf4", double_quant=True)
    one = requantize_merged(all_linear_lora, tiny_base, tmp_path / "one", options)
    two = requantize_model(merged_dir, tmp_path / "two", options)
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
    assert [x.rel_error for x in one.layers] == [x.rel_error for x in two.layers]
    assert all(x.error_vs_delta is not None for x in one.layers)
    assert all(x.error_vs_delta is None for x in two.layers)  # no base given: delta unknown


def test_compensation_adapter_brings_the_quantized_model_closer_to_the_merge(
    tiny_base: Path, all_linear_lora: Path, merged_dir: Path, tmp_path: Path, token_ids
) -> None:
    from peft import PeftModel

    out = tmp_path / "q"
    result = requantize_merged(all_linear_lora, tiny_base, out,
                               QuantizeOptions(to="nf4", compute_dtype="fp32", compensate_rank=8))
    comp = out / "compensation"
    config = json.loads((comp / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 8, "LORA")
    assert len(config["target_modules"]) == 14
    o = result.overall
    assert o["compensated_error_vs_delta"] < o["error_vs_delta"]
    assert o["compensated_error_vs_delta"] <= 0.3  # the goal on the test models
    for layer in result.layers:
        assert layer.compensated_error_norm < layer.error_norm

    reference = _logits(_load(merged_dir), token_ids)
    alone = _logits(_load(out), token_ids)
    # a fresh model for PEFT: after a first CPU forward, bitsandbytes repacks 4-bit weights
    # for its CPU kernel, and PEFT wrapping such a model afterwards gives wrong outputs
    corrected = _logits(PeftModel.from_pretrained(_load(out), comp).eval(), token_ids)
    assert (corrected - reference).norm() < 0.9 * (alone - reference).norm()


def test_sharded_output_with_extra_skipped_modules_loads_like_transformers(
    merged_dir: Path, tmp_path: Path, token_ids
) -> None:
    import torch

    out = tmp_path / "q"
    skips = ["lm_head", "mlp.down_proj"]
    result = requantize_model(merged_dir, out,
                              QuantizeOptions(to="nf4", skip_modules=skips, shard_size=60_000))
    assert len(result.files) > 1 and (out / "model.safetensors.index.json").is_file()
    assert len(result.layers) == 12
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["llm_int8_skip_modules"] == skips
    ours = _load(out)
    assert type(ours.model.layers[1].mlp.down_proj) is torch.nn.Linear
    theirs = _load(merged_dir, quantization_config=_bnb_config("nf4", False, skips=skips),
                   device_map="cpu")
    torch.testing.assert_close(_logits(ours, token_ids), _logits(theirs, token_ids),
                               atol=LOGIT_ATOL, rtol=0)
    assert not list(tmp_path.glob(".*partial*"))
