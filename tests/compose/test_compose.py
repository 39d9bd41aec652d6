"""Composition oracles: PEFT's get_delta_weight, dense SVD, merge_utils, and merged logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from registry.ops.compose import combine_dense, compose_lora
from registry.ops.options import ComposeOptions
from registry.peft_dir import read_adapter_dir


def peft_deltas(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """Each LoRA module's delta as PEFT computes it, by module name."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter
    )
    out = {}
    for name, mod in model.base_model.model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
            out[name] = mod.get_delta_weight("default").detach()
    return out


@pytest.fixture(scope="module")
def deltas(tiny_base: Path, tiny_lora: Path, tiny_lora_r8: Path):
    return peft_deltas(tiny_base, tiny_lora), peft_deltas(tiny_base, tiny_lora_r8)


def weighted_sum(d1, d2, w1, w2):
    out = {}
    for m in sorted(set(d1) | set(d2)):
        ref = d1.get(m, d2.get(m))
        out[m] = w1 * d1.get(m, torch.zeros_like(ref)) + w2 * d2.get(m, torch.zeros_like(ref))
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_cat_equals_weighted_sum_of_peft_deltas_with_negative_weight(
    tmp_path, tiny_base, tiny_lora, tiny_lora_r8, deltas
):
    adapters = [read_adapter_dir(tiny_lora), read_adapter_dir(tiny_lora_r8)]
    res = compose_lora(adapters, [0.7, -1.3], ComposeOptions("cat"), out_dir=tmp_path / "cat")
    got = peft_deltas(tiny_base, tmp_path / "cat")
    want = weighted_sum(*deltas, 0.7, -1.3)
    assert sorted(got) == sorted(want)
    for m in want:
        assert rel(got[m], want[m]) < 1e-6, m
    # ranks differ per module (q/v: 4 + 8, k/o: 8), so rank_pattern carries them
    assert set(res.ranks.values()) == {12, 8}


def test_svd_equals_dense_truncated_svd_of_the_sum(tmp_path, tiny_base, tiny_lora,
                                                   tiny_lora_r8, deltas):
    adapters = [read_adapter_dir(tiny_lora), read_adapter_dir(tiny_lora_r8)]
    compose_lora(adapters, [1.0, 0.5], ComposeOptions("svd", rank=6), out_dir=tmp_path / "svd")
    got = peft_deltas(tiny_base, tmp_path / "svd")
    for m, full in weighted_sum(*deltas, 1.0, 0.5).items():
        u, s, vh = torch.linalg.svd(full.double(), full_matrices=False)
        best = (u[:, :6] * s[:6]) @ vh[:6]
        assert rel(got[m], best) < 1e-4, m


def test_linear_without_rank_is_exact(tmp_path, tiny_base, tiny_lora, tiny_lora_r8, deltas):
    adapters = [read_adapter_dir(tiny_lora), read_adapter_dir(tiny_lora_r8)]
    compose_lora(adapters, [1.0, 1.0], ComposeOptions("linear"), out_dir=tmp_path / "lin")
    got = peft_deltas(tiny_base, tmp_path / "lin")
    for m, full in weighted_sum(*deltas, 1.0, 1.0).items():
        assert rel(got[m], full) < 1e-5, m


@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties", "magnitude_prune"])
def test_dense_combination_matches_peft_merge_utils(method, deltas):
    from peft.utils import merge_utils

    d1, d2 = deltas
    m = next(iter(d1))
    tensors = [d1[m], d2[m]]
    weights = [0.6, -0.9]
    torch.manual_seed(123)
    want = getattr(merge_utils, method)(tensors, torch.tensor(weights), density=0.4)
    got = combine_dense(tensors, weights, method, 0.4, torch.Generator().manual_seed(123))
    assert rel(got, want) < 1e-6


def test_dare_is_reproducible_from_seed(tmp_path, tiny_lora, tiny_lora_r8):
    from safetensors.torch import load_file

    adapters = [read_adapter_dir(tiny_lora), read_adapter_dir(tiny_lora_r8)]
    for d in ("a", "b"):
        compose_lora(adapters, [1.0, 1.0], ComposeOptions("dare_ties", density=0.5, seed=7),
                     out_dir=tmp_path / d)
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_composed_adapter_merged_logits_match_adapt_merge(tmp_path, tiny_base, tiny_lora,
                                                          tiny_lora_r8):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from registry.ops.merge import merge_adapter_into_base

    adapters = [read_adapter_dir(tiny_lora), read_adapter_dir(tiny_lora_r8)]
    comp = tmp_path / "comp"
    compose_lora(adapters, [1.0, -0.5], ComposeOptions("ties", density=0.6, rank=8),
                 out_dir=comp)
    merge_adapter_into_base(comp, tiny_base, tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32), comp
    )
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    with torch.no_grad():
        want = peft_model(ids).logits
        got = merged(ids).logits
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_cat_handles_rslora_and_rank_alpha_patterns(tmp_path, tiny_base, tiny_lora):
    from tests.factories import make_lora

    rs = make_lora(tiny_base, tmp_path / "rs", r=6, alpha=12, seed=5, use_rslora=True,
                   targets=["q_proj", "v_proj", "up_proj"],
                   rank_pattern={"up_proj": 3}, alpha_pattern={"v_proj": 4})
    compose_lora([read_adapter_dir(tiny_lora), read_adapter_dir(rs)], [1.0, 2.0],
                 ComposeOptions("cat"), out_dir=tmp_path / "cat")
    got = peft_deltas(tiny_base, tmp_path / "cat")
    want = weighted_sum(peft_deltas(tiny_base, tiny_lora), peft_deltas(tiny_base, rs), 1.0, 2.0)
    assert sorted(got) == sorted(want)
    for m in want:
        assert rel(got[m], want[m]) < 1e-6, m


def test_ia3_input_is_refused(tmp_path, tiny_base, tiny_lora):
    from peft import IA3Config

    from registry.errors import UnsupportedMethod
    from tests.factories import make_adapter

    ia3 = make_adapter(tiny_base, tmp_path / "ia3",
                       IA3Config(target_modules=["k_proj", "down_proj"],
                                 feedforward_modules=["down_proj"], init_ia3_weights=False))
    with pytest.raises(UnsupportedMethod, match="IA3"):
        compose_lora([read_adapter_dir(tiny_lora), read_adapter_dir(ia3)], [1, 1],
                     ComposeOptions("cat"), out_dir=tmp_path / "out")
