"""Merging PEFT's other methods (VeRA, FourierFT, OFT, BOFT, HRA): adapt's streaming merge equals
PEFT's merge_and_unload within 1e-6 (float32), and add reads their configs and tensors."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.ops.merge_stream import iter_merged_tensors

# the formulas are PEFT's, step for step in float32: only summation order may differ
STATE_RTOL = 1e-6
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _configs() -> dict:
    from peft import (
        BOFTConfig,
        C3AConfig,
        FourierFTConfig,
        HRAConfig,
        LNTuningConfig,
        MissConfig,
        OFTConfig,
        RandLoraConfig,
        ShiraConfig,
        VBLoRAConfig,
        VeraConfig,
    )

    return {
        "vera": VeraConfig(r=4, target_modules=TARGETS),
        "fourierft": FourierFTConfig(n_frequency=40, scaling=10.0, random_loc_seed=123,
                                     target_modules=TARGETS),
        "oft": OFTConfig(r=0, oft_block_size=16, target_modules=TARGETS),
        "oft-cayley-exact": OFTConfig(r=0, oft_block_size=8, use_cayley_neumann=False,
                                      target_modules=TARGETS),
        "oft-coft": OFTConfig(r=0, oft_block_size=16, coft=True, eps=1e-3,
                              target_modules=TARGETS),
        "boft": BOFTConfig(boft_block_size=8, target_modules=TARGETS),
        "boft-butterfly": BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=2,
                                     target_modules=TARGETS),
        "hra": HRAConfig(r=4, target_modules=TARGETS),
        "hra-gs": HRAConfig(r=4, apply_GS=True, target_modules=TARGETS),
        "shira": ShiraConfig(r=2, target_modules=TARGETS),
        "ln-tuning": LNTuningConfig(target_modules=["input_layernorm", "model.norm"]),
        "miss": MissConfig(r=4, target_modules=TARGETS),
        "miss-mini": MissConfig(r=4, init_weights="mini", mini_r=4, target_modules=TARGETS),
        "c3a": C3AConfig(block_size=16, target_modules=TARGETS),
        "randlora": RandLoraConfig(r=8, randlora_alpha=32, target_modules=TARGETS),
        "vblora": VBLoRAConfig(r=4, vector_length=16, num_vectors=32, topk=2,
                               target_modules=TARGETS),
    }


def _peft_merged(base: Path, adapter: Path) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


@pytest.mark.parametrize("name", list(_configs()))
def test_merge_matches_peft_merge_and_unload(name, method_adapters, llama_base) -> None:
    adapter = method_adapters(name, _configs()[name])
    ref = _peft_merged(llama_base, adapter)
    from registry.peft_dir import read_adapter_dir

    adapted = {f"{m}.weight" for m in read_adapter_dir(adapter).modules}
    assert len(adapted) == (3 if name == "ln-tuning" else 2 * len(TARGETS))
    changed = 0
    for tensor_name, value in iter_merged_tensors(adapter, llama_base):
        expected = ref[tensor_name].float()
        scale = expected.abs().max().clamp_min(1e-12)
        err = float((value - expected).abs().max() / scale)
        assert err <= STATE_RTOL, f"{tensor_name}: relative error {err:.2e}"
        changed += tensor_name in adapted
    assert changed == len(adapted)


@pytest.mark.parametrize("name", ["vera", "fourierft", "oft", "hra"])
def test_add_reads_method_config_and_tensors(name, method_adapters, registry, llama_base) -> None:
    adapter = method_adapters(name, _configs()[name])
    version = registry.add(adapter, name=f"m-{name}", base=llama_base).version
    assert version.peft_type == name.upper()
    assert set(version.target_modules) == set(TARGETS)


def test_vera_converts_exactly_and_fourierft_truncated(
    method_adapters, llama_base, tmp_path
) -> None:
    import torch

    from registry.checkpoint import open_checkpoint
    from registry.ops.convert import ConvertOptions, convert_to_lora
    from registry.peft_dir import read_adapter_dir
    from tests.extract.conftest import peft_deltas

    shapes = {n.removesuffix(".weight"): t.shape
              for n, t in open_checkpoint(llama_base).tensors.items()}
    vera = method_adapters("vera", _configs()["vera"])
    res = convert_to_lora(read_adapter_dir(vera), tmp_path / "vera", ConvertOptions(),
                          base_shapes=shapes)
    assert res.exact and max(m.rank for m in res.modules) <= 4
    ref = peft_deltas(llama_base, vera)
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "vera" / "adapter_model.safetensors"))
    for module, delta in ref.items():
        k = f"base_model.model.{module}"
        got = t[f"{k}.lora_B.weight"] @ t[f"{k}.lora_A.weight"]
        assert float(torch.linalg.norm(got - delta) / torch.linalg.norm(delta)) <= 1e-5

    fourier = method_adapters("fourierft", _configs()["fourierft"])
    res = convert_to_lora(read_adapter_dir(fourier), tmp_path / "ft",
                          ConvertOptions(energy=0.9), base_shapes=shapes)
    ref = peft_deltas(llama_base, fourier)
    t = load_file(str(tmp_path / "ft" / "adapter_model.safetensors"))
    for m in res.modules:
        k = f"base_model.model.{m.module}"
        got = t[f"{k}.lora_B.weight"] @ t[f"{k}.lora_A.weight"]
        err = float(torch.linalg.norm(got - ref[m.module]) / torch.linalg.norm(ref[m.module]))
        assert err == pytest.approx(m.rel_error, rel=1e-3, abs=1e-6)
        assert m.energy >= 0.9 and m.exact_rank is None


def test_multiplicative_methods_refuse_conversion(method_adapters) -> None:
    from registry.errors import UnsupportedMethod
    from registry.ops.convert import ConvertOptions, convert_to_lora
    from registry.peft_dir import read_adapter_dir

    oft = method_adapters("oft", _configs()["oft"])
    with pytest.raises(UnsupportedMethod, match="rotates the base weight"):
        convert_to_lora(read_adapter_dir(oft), Path("/nonexistent-out"), ConvertOptions())


# FourierFT is left out: its n frequencies fit any weight of at least n entries, and PEFT
# itself loads it onto another shape (the locations are redrawn for that shape)
@pytest.mark.parametrize("name", ["vera", "oft", "boft", "hra"])
def test_base_of_other_shapes_is_refused(name, method_adapters, extract_models) -> None:
    from registry.checkpoint import open_checkpoint
    from registry.compat import check_compatible
    from registry.errors import IncompatibleBase
    from registry.peft_dir import read_adapter_dir
    from tests.factories import make_tiny_llama

    wide = extract_models / "llama-wide"
    if not wide.exists():
        make_tiny_llama(wide, hidden_size=96, intermediate_size=160)
    adapter = read_adapter_dir(method_adapters(name, _configs()[name]))
    with pytest.raises(IncompatibleBase):
        check_compatible(adapter, open_checkpoint(wide))


@pytest.mark.parametrize(("peft_type", "reason"), [
    ("XLORA", "mixes its LoRA experts per token"),
    ("POLY", "routes each task"),
    ("CARTRIDGE", "virtual tokens"),
    ("PREFIX_TUNING", "virtual tokens"),
    ("HIRA", "merges"),
])
def test_unmergeable_methods_are_refused_by_name(peft_type, reason, tmp_path) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    from registry.errors import UnsupportedMethod
    from registry.ops.deltas import check_mergeable
    from registry.peft_dir import read_adapter_dir

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type}))
    save_file({"base_model.model.some.weight": torch.ones(2)},
              str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(UnsupportedMethod, match=reason):
        check_mergeable(read_adapter_dir(tmp_path))


def test_vblora_converts_exactly(method_adapters, llama_base, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from registry.ops.convert import ConvertOptions, convert_to_lora
    from registry.peft_dir import read_adapter_dir
    from tests.extract.conftest import peft_deltas

    adapter = method_adapters("vblora", _configs()["vblora"])
    res = convert_to_lora(read_adapter_dir(adapter), tmp_path / "out", ConvertOptions())
    assert res.exact and max(m.rank for m in res.modules) <= 4  # r: exact without the base
    t = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    for module, delta in peft_deltas(llama_base, adapter).items():
        k = f"base_model.model.{module}"
        got = t[f"{k}.lora_B.weight"] @ t[f"{k}.lora_A.weight"]
        assert float(torch.linalg.norm(got - delta) / torch.linalg.norm(delta)) <= 1e-5
