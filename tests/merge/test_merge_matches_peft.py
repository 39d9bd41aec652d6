"""Oracle tests: adapt's streaming merge equals PEFT's merge_and_unload, method by method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.ops.merge import iter_merged_tensors, merge_adapter_into_base
from registry.ops.options import MergeOptions
from tests.merge.conftest import ADAPTERS

# float32 throughout: the merge formulas are the same as PEFT's, so only summation order can
# differ; 1e-6 of the tensor's largest value bounds that.
STATE_RTOL = 1e-6
# merged x @ (W + dW) vs PEFT's unmerged x @ W + x @ A^T B^T re-associates sums through two
# layers: logits of the tiny models (|logit| ~ 1) agree to 1e-4.
LOGITS_ATOL = 1e-4
QLORA_LOGITS_ATOL = 5e-3


def _auto_class(base: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def _peft_reference(base: Path, adapter: Path, ids):
    """PEFT's unmerged logits and its merge_and_unload state dict (float32)."""
    import torch
    from peft import PeftModel

    model = _auto_class(base).from_pretrained(base, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    peft_model.eval()
    with torch.no_grad():
        logits = peft_model(ids).logits
    state = {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}
    return logits, state


def _load_dir(out: Path) -> dict:
    from safetensors.torch import load_file

    tensors: dict = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def _assert_state_close(ours: dict, ref: dict, *, complete: bool = True) -> None:
    assert set(ours) <= set(ref)
    if complete:
        # tied weights (GPT-2's lm_head) live in the state dict but not in the checkpoint
        assert set(ref) - set(ours) <= {"lm_head.weight"}
    for name, value in ours.items():
        expected = ref[name].float()
        scale = expected.abs().max().clamp_min(1e-12)
        err = (value.float() - expected).abs().max() / scale
        assert err <= STATE_RTOL, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_merge_matches_peft_merge_and_unload(name: str, build_case, tmp_path: Path) -> None:
    import torch

    case = build_case(name)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    ref_logits, ref_state = _peft_reference(case.base, case.adapter, ids)

    out = tmp_path / "merged"
    result = merge_adapter_into_base(case.adapter, case.base, out)
    ours = _load_dir(out)
    _assert_state_close(ours, ref_state)
    assert result.merged_modules > 0

    merged = _auto_class(out).from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        logits = merged(ids).logits
    assert torch.allclose(logits, ref_logits, atol=LOGITS_ATOL, rtol=0), (
        f"max logit difference {(logits - ref_logits).abs().max():.2e}"
    )


def test_sharded_base_keeps_its_sharding(build_case, tmp_path: Path) -> None:
    case = build_case("sharded-lora")
    out = merge_adapter_into_base(case.adapter, case.base, tmp_path / "merged").out_dir
    base_index = json.loads((case.base / "model.safetensors.index.json").read_text())
    out_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert out_index["weight_map"] == base_index["weight_map"]
    assert out_index["metadata"]["total_size"] == sum(
        f.stat().st_size for f in out.glob("*.safetensors")
    ) - sum(_header_len(f) for f in out.glob("*.safetensors"))


def _header_len(f: Path) -> int:
    import struct

    with open(f, "rb") as fh:
        return 8 + struct.unpack("<Q", fh.read(8))[0]


def test_reshards_to_shard_size_and_casts_dtype(build_case, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    case = build_case("lora")
    out = tmp_path / "merged"
    result = merge_adapter_into_base(case.adapter, case.base, out,
                                     MergeOptions(dtype="bf16", shard_size=60_000))
    assert len(result.files) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == sorted(result.files)
    full = dict(iter_merged_tensors(case.adapter, case.base))
    ours = _load_dir(out)
    for name, value in ours.items():
        assert value.dtype == torch.bfloat16
        # cast once from the float32 merge: exactly what rounding the float32 result gives
        assert torch.equal(value, full[name].to(torch.bfloat16)), name
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_iter_merged_tensors_yields_float32_in_checkpoint_order(build_case) -> None:
    import torch

    from registry.checkpoint import open_checkpoint

    case = build_case("sharded-lora")
    ckpt = open_checkpoint(case.base)
    expected = [
        t.name for f in ckpt.files
        for t in sorted(ckpt.headers[f].tensors.values(), key=lambda t: t.start)
    ]
    seen = []
    for name, tensor in iter_merged_tensors(case.adapter, case.base):
        assert tensor.dtype == torch.float32
        seen.append(name)
    assert seen == expected


def test_qlora_merges_into_dequantized_nf4_weights(build_case, tmp_path: Path) -> None:
    """--base-quantization nf4 equals PEFT on a bitsandbytes 4-bit base: dequant(W4) + dW."""
    import bitsandbytes.functional as bnbf
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    case = build_case("qlora")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(case.base, quantization_config=quant,
                                                 dtype=torch.float32, device_map="cpu")
    peft_model = PeftModel.from_pretrained(model, str(case.adapter)).eval()
    # read the packed 4-bit weight before any forward: bitsandbytes may repack it for CPU
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    w4 = layer.base_layer.weight
    expected = bnbf.dequantize_4bit(w4.data, w4.quant_state).float() + layer.get_delta_weight(
        "default").float()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_logits = peft_model(ids).logits

    out = tmp_path / "merged"
    merge_adapter_into_base(case.adapter, case.base, out, MergeOptions(base_quantization="nf4"))
    ours = _load_dir(out)
    got = ours["model.layers.0.self_attn.q_proj.weight"]
    assert (got - expected).abs().max() <= STATE_RTOL * expected.abs().max()

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        logits = merged(ids).logits
    # bitsandbytes' CPU 4-bit matmul is not float32-exact (about 4e-3 relative per layer
    # against x @ dequant(W4).T), so PEFT's own 4-bit forward is the looser side here
    qlora_err = (logits - ref_logits).abs().max()
    assert qlora_err <= QLORA_LOGITS_ATOL
    # and the plain merge (into W16) is measurably further from what the adapter was trained on
    plain = tmp_path / "plain"
    merge_adapter_into_base(case.adapter, case.base, plain)
    plain_model = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32)
    with torch.no_grad():
        plain_logits = plain_model(ids).logits
    assert (plain_logits - ref_logits).abs().max() > 10 * qlora_err


def test_ia3_on_conv1d_weights_and_biases_match_peft(build_case) -> None:
    """IA3 on GPT-2 (Conv1D, fan_in_fan_out): rows/columns and the bias as PEFT merges them."""
    import torch
    from safetensors.torch import load_file

    from registry.ops.deltas import merged_bias, merged_weight, module_factors
    from registry.peft_dir import load_tensors, read_adapter_dir

    case = build_case("gpt2-ia3")
    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(0))
    _, ref = _peft_reference(case.base, case.adapter, ids)
    adapter = read_adapter_dir(case.adapter)
    factors = module_factors(adapter, load_tensors(adapter))
    base = load_file(str(case.base / "model.safetensors"))
    changed_biases = 0
    for module, parts in factors.items():
        ours = {f"{module}.weight": merged_weight(adapter, module, parts, base[f"{module}.weight"])}
        bias = merged_bias(adapter, module, parts, base[f"{module}.bias"])
        if bias is not None:
            ours[f"{module}.bias"] = bias
            changed_biases += 1
        else:  # feed-forward IA3 leaves the bias alone
            assert torch.equal(ref[f"{module}.bias"], base[f"{module}.bias"])
        _assert_state_close(ours, ref, complete=False)
    assert changed_biases == 2  # the two c_attn layers; mlp.c_proj is feed-forward
