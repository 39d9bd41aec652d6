"""`convert --to lora`: LoHa/LoKr exactly (factored, no dense matrices), the rest truncated, with
PEFT's get_delta_weight as the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import UnsupportedMethod, UsageError
from registry.ops.convert import ConvertOptions, convert_to_lora
from registry.peft_dir import read_adapter_dir
from tests.extract.conftest import peft_deltas

# float32 products summed in another order (and the float64 SVD cast back): 1e-5 of the norm
EXACT_RTOL = 1e-5
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _configs():
    from peft import AdaLoraConfig, LoHaConfig, LoKrConfig

    return {
        "loha": LoHaConfig(r=4, alpha=8, target_modules=TARGETS, init_weights=False),
        "lokr": LoKrConfig(r=4, alpha=6, target_modules=TARGETS, init_weights=False),
        "lokr-lowrank": LoKrConfig(r=2, alpha=6, decompose_both=True, target_modules=TARGETS,
                                   init_weights=False),
        "adalora": AdaLoraConfig(init_r=6, target_r=4, total_step=10, lora_alpha=8,
                                 target_modules=TARGETS),
    }


def _lora_deltas(out: Path) -> dict:
    from safetensors.torch import load_file

    t = load_file(str(out / "adapter_model.safetensors"))
    mods = {k.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            for k in t if k.endswith("lora_A.weight")}
    return {m: t[f"base_model.model.{m}.lora_B.weight"] @ t[f"base_model.model.{m}.lora_A.weight"]
            for m in mods}


def _rel(x, y) -> float:
    import torch

    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))


@pytest.mark.parametrize("name", ["loha", "lokr", "lokr-lowrank", "adalora"])
def test_exact_conversion_equals_peft_delta(name, method_adapters, llama_base, tmp_path) -> None:
    adapter_dir = method_adapters(name, _configs()[name])
    res = convert_to_lora(read_adapter_dir(adapter_dir), tmp_path / "out", ConvertOptions())
    assert res.exact
    ref = peft_deltas(llama_base, adapter_dir)
    ours = _lora_deltas(tmp_path / "out")
    assert set(ours) == set(ref)
    for module, delta in ref.items():
        assert _rel(ours[module], delta) <= EXACT_RTOL, module
    bounds = {"loha": 16, "lokr-lowrank": 4, "adalora": 6}  # adalora: init_r
    if name in bounds:  # the rank bound from the factor ranks holds, and is what is kept
        assert max(m.rank for m in res.modules) <= bounds[name]


@pytest.mark.parametrize("name", ["loha", "lokr"])
def test_truncated_conversion_reports_its_true_error(
    name, method_adapters, llama_base, tmp_path
) -> None:
    import torch

    adapter_dir = method_adapters(name, _configs()[name])
    res = convert_to_lora(read_adapter_dir(adapter_dir), tmp_path / "out", ConvertOptions(rank=3))
    ref = peft_deltas(llama_base, adapter_dir)
    ours = _lora_deltas(tmp_path / "out")
    for m in res.modules:
        assert m.rank == 3
        assert _rel(ours[m.module], ref[m.module]) == pytest.approx(m.rel_error, rel=1e-3,
                                                                    abs=1e-6)
        # and it is the best rank-3 error (Eckart-Young), from a dense SVD of PEFT's delta
        s = torch.linalg.svdvals(ref[m.module].double())
        best = float((s[3:] ** 2).sum().sqrt() / s.square().sum().sqrt())
        assert m.rel_error == pytest.approx(best, rel=1e-4, abs=1e-6)


def test_peft_merge_of_converted_lora_equals_merge_of_source(
    method_adapters, llama_base, tmp_path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = method_adapters("loha", _configs()["loha"])
    convert_to_lora(read_adapter_dir(adapter_dir), tmp_path / "out", ConvertOptions())

    def merged(path: Path) -> dict:
        model = AutoModelForCausalLM.from_pretrained(llama_base, dtype=torch.float32)
        return PeftModel.from_pretrained(model, str(path)).merge_and_unload().state_dict()

    ours, ref = merged(tmp_path / "out"), merged(adapter_dir)
    for name, value in ref.items():
        err = (ours[name] - value).abs().max() / value.abs().max().clamp_min(1e-12)
        assert float(err) <= 1e-6, name


def test_multiplicative_and_lora_sources_are_refused(llama_base, tmp_path) -> None:
    from tests.factories import make_lora

    dora = make_lora(llama_base, tmp_path / "dora", use_dora=True)
    with pytest.raises(UnsupportedMethod, match="adapt merge"):
        convert_to_lora(read_adapter_dir(dora), tmp_path / "o1", ConvertOptions())
    lora = make_lora(llama_base, tmp_path / "lora")
    with pytest.raises(UsageError, match="already a LoRA"):
        convert_to_lora(read_adapter_dir(lora), tmp_path / "o2", ConvertOptions())
    with pytest.raises(UsageError, match="at most one"):
        ConvertOptions(rank=2, energy=0.9)
