"""GGUF LoRA export: equal to llama.cpp's own converter where the converter is right, equal to
PEFT's delta (times llama.cpp's scale) where it is not, and refusals for what GGUF can't say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry.errors import UnsupportedMethod
from registry.ops.gguf_export import GGUFExportOptions, export_lora_gguf
from tests.ship.conftest import lora_on, run_converter


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata key -> value, tensor name -> (type, shape, float32 array))."""
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type, tuple(int(x) for x in t.shape),
                        np.asarray(t.data).astype(np.float32)) for t in reader.tensors}
    return fields, tensors


def llama_cpp_delta(fields: dict[str, Any], tensors: dict[str, Any], name: str) -> np.ndarray:
    """What llama.cpp adds to `name`: scale * B @ A with scale = alpha/rank, or 1 when alpha is 0
    (src/llama-adapter.h, get_scale)."""
    a = tensors[f"{name}.lora_a"][2].astype(np.float64)
    b = tensors[f"{name}.lora_b"][2].astype(np.float64)
    alpha = float(fields["adapter.lora.alpha"])
    scale = alpha / b.shape[1] if alpha else 1.0
    return scale * (b @ a)


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (the q/k row order llama.cpp's RoPE expects)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def peft_deltas(base: Path, adapter: Path) -> dict[str, np.ndarray]:
    """PEFT's own get_delta_weight for every LoRA module, by module path."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                key = name.removeprefix("base_model.model.")
                out[key] = module.get_delta_weight("default").double().numpy()
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "qwen3", "gemma2"])
def test_gguf_equals_llama_cpp_converter(
    arch: str, bases: dict[str, Path], plain_loras: dict[str, Path], llama_cpp_dir: Path,
    tmp_path: Path,
) -> None:
    oracle = run_converter(llama_cpp_dir, plain_loras[arch], bases[arch], tmp_path / "ref.gguf")
    mine = export_lora_gguf(plain_loras[arch], bases[arch], tmp_path / "adapt.gguf",
                            GGUFExportOptions(provenance={"ref": "x@1"}))
    ref_fields, ref_tensors = read_gguf(oracle)
    my_fields, my_tensors = read_gguf(mine.path)

    assert set(my_fields) - set(ref_fields) == {"adapt.ref", "adapt.scale_folded"}
    assert set(ref_fields) <= set(my_fields)
    for key in ("general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"):
        assert my_fields[key] == ref_fields[key], key
    assert my_fields["general.architecture"] == arch
    assert sorted(my_tensors) == sorted(ref_tensors)
    assert len(my_tensors) == 2 * 7 * 2  # 7 modules x 2 layers x (a, b)
    for name, (ttype, shape, data) in ref_tensors.items():
        my_type, my_shape, my_data = my_tensors[name]
        assert (my_type, my_shape) == (ttype, shape), name
        np.testing.assert_allclose(my_data, data, rtol=1e-6, atol=0, err_msg=name)


def test_fused_phi3_projections_equal_the_converter(
    phi3_base: Path, llama_cpp_dir: Path, tmp_path: Path,
) -> None:
    adapter = lora_on(phi3_base, tmp_path / "phi3-lora",
                      targets=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
    oracle = run_converter(llama_cpp_dir, adapter, phi3_base, tmp_path / "ref.gguf")
    mine = export_lora_gguf(adapter, phi3_base, tmp_path / "adapt.gguf")
    ref_fields, ref_tensors = read_gguf(oracle)
    my_fields, my_tensors = read_gguf(mine.path)
    assert my_fields["general.architecture"] == ref_fields["general.architecture"] == "phi3"
    assert sorted(my_tensors) == sorted(ref_tensors)
    assert "blk.0.attn_qkv.weight.lora_b" in my_tensors
    assert my_tensors["blk.0.ffn_up.weight.lora_b"][1] == (4, 256)  # gate and up, fused
    for name, (ttype, shape, data) in ref_tensors.items():
        assert my_tensors[name][:2] == (ttype, shape), name
        np.testing.assert_allclose(my_tensors[name][2], data, rtol=1e-6, atol=0, err_msg=name)


def test_llama_q_and_k_rows_are_permuted_like_the_converter(
    bases: dict[str, Path], plain_loras: dict[str, Path], tmp_path: Path,
) -> None:
    """The q/k lora_b rows differ from PEFT's (the permutation is real), and llama.cpp's delta
    equals PEFT's delta permuted the converter's way."""
    mine = export_lora_gguf(plain_loras["llama"], bases["llama"], tmp_path / "a.gguf")
    fields, tensors = read_gguf(mine.path)
    deltas = peft_deltas(bases["llama"], plain_loras["llama"])
    q_peft = deltas["model.layers.0.self_attn.q_proj"]
    q_gguf = llama_cpp_delta(fields, tensors, "blk.0.attn_q.weight")
    assert not np.allclose(q_gguf, q_peft, atol=1e-6)
    np.testing.assert_allclose(q_gguf, llama_permute(q_peft, 4), rtol=1e-5, atol=1e-7)
    k_gguf = llama_cpp_delta(fields, tensors, "blk.1.attn_k.weight")
    np.testing.assert_allclose(
        k_gguf, llama_permute(deltas["model.layers.1.self_attn.k_proj"], 2),
        rtol=1e-5, atol=1e-7)


def test_rank_pattern_alone_is_written_as_the_converter_writes_it(
    tiny_base: Path, rank_pattern_lora: Path, llama_cpp_dir: Path, tmp_path: Path,
) -> None:
    oracle = run_converter(llama_cpp_dir, rank_pattern_lora, tiny_base, tmp_path / "ref.gguf")
    mine = export_lora_gguf(rank_pattern_lora, tiny_base, tmp_path / "adapt.gguf")
    assert not mine.plan.scale_folded and mine.plan.alpha == 16
    ref_fields, ref_tensors = read_gguf(oracle)
    my_fields, my_tensors = read_gguf(mine.path)
    assert my_fields["adapter.lora.alpha"] == ref_fields["adapter.lora.alpha"]
    for name, (_, shape, data) in ref_tensors.items():
        assert my_tensors[name][1] == shape
        np.testing.assert_allclose(my_tensors[name][2], data, rtol=1e-6, atol=0)
    assert my_tensors["blk.0.attn_v.weight.lora_a"][2].shape == (2, 64)


def test_rslora_and_patterns_fold_peft_scale_where_the_converter_is_wrong(
    tiny_base: Path, patterned_lora: Path, llama_cpp_dir: Path, tmp_path: Path,
) -> None:
    mine = export_lora_gguf(patterned_lora, tiny_base, tmp_path / "adapt.gguf")
    assert mine.plan.scale_folded and mine.plan.alpha == 0.0
    fields, tensors = read_gguf(mine.path)
    assert fields["adapter.lora.alpha"] == 0.0
    deltas = peft_deltas(tiny_base, patterned_lora)
    oracle = run_converter(llama_cpp_dir, patterned_lora, tiny_base, tmp_path / "ref.gguf")
    ref_fields, ref_tensors = read_gguf(oracle)
    names = {"self_attn.q_proj": ("attn_q", 4), "self_attn.k_proj": ("attn_k", 2),
             "self_attn.v_proj": ("attn_v", None), "self_attn.o_proj": ("attn_output", None),
             "mlp.gate_proj": ("ffn_gate", None), "mlp.up_proj": ("ffn_up", None),
             "mlp.down_proj": ("ffn_down", None)}
    converter_wrong = 0
    for layer in range(2):
        for hf, (gg, heads) in names.items():
            expected = deltas[f"model.layers.{layer}.{hf}"]
            if heads is not None:
                expected = llama_permute(expected, heads)
            gname = f"blk.{layer}.{gg}.weight"
            np.testing.assert_allclose(llama_cpp_delta(fields, tensors, gname), expected,
                                       rtol=1e-5, atol=1e-7, err_msg=gname)
            theirs = llama_cpp_delta(ref_fields, ref_tensors, gname)
            converter_wrong += not np.allclose(theirs, expected, rtol=1e-4, atol=1e-6)
    # rsLoRA changes every module's scale; the converter's alpha/rank misses all 14.
    assert converter_wrong == 14


@pytest.mark.parametrize("case", ["dora", "modules_to_save", "lm_head", "loha", "ia3"])
def test_export_refuses_what_gguf_lora_cannot_express(
    case: str, tiny_base: Path, tmp_path: Path,
) -> None:
    from peft import IA3Config, LoHaConfig

    from tests.factories import make_adapter

    adapter = tmp_path / case
    if case == "dora":
        lora_on(tiny_base, adapter, targets=["q_proj"], use_dora=True)
    elif case == "modules_to_save":
        lora_on(tiny_base, adapter, targets=["q_proj"], modules_to_save=["lm_head"])
    elif case == "lm_head":
        lora_on(tiny_base, adapter, targets=["q_proj", "lm_head"])
    elif case == "loha":
        make_adapter(tiny_base, adapter, LoHaConfig(r=4, target_modules=["q_proj"],
                                                    init_weights=False))
    else:
        make_adapter(tiny_base, adapter, IA3Config(target_modules=["k_proj", "down_proj"],
                                                   feedforward_modules=["down_proj"],
                                                   init_ia3_weights=False))
    with pytest.raises(UnsupportedMethod) as error:
        export_lora_gguf(adapter, tiny_base, tmp_path / "out.gguf")
    expected = {"dora": "DoRA magnitude", "modules_to_save": "lm_head",
                "lm_head": "lm_head LoRA", "loha": "LOHA is not LoRA",
                "ia3": "IA3 is not LoRA"}[case]
    assert expected in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out.gguf").exists()


def test_export_refuses_a_base_of_another_shape(
    plain_loras: dict[str, Path], other_base: Path, tmp_path: Path,
) -> None:
    from registry.errors import IncompatibleBase

    with pytest.raises(IncompatibleBase):
        export_lora_gguf(plain_loras["llama"], other_base, tmp_path / "out.gguf")
    assert list(tmp_path.iterdir()) == []


def test_f16_outtype_matches_the_converter(
    bases: dict[str, Path], plain_loras: dict[str, Path], llama_cpp_dir: Path, tmp_path: Path,
) -> None:
    oracle = run_converter(llama_cpp_dir, plain_loras["qwen2"], bases["qwen2"],
                           tmp_path / "ref.gguf", outtype="f16")
    mine = export_lora_gguf(plain_loras["qwen2"], bases["qwen2"], tmp_path / "adapt.gguf",
                            GGUFExportOptions(outtype="f16"))
    _, ref_tensors = read_gguf(oracle)
    _, my_tensors = read_gguf(mine.path)
    for name, (ttype, shape, data) in ref_tensors.items():
        assert my_tensors[name][:2] == (ttype, shape), name
        np.testing.assert_array_equal(my_tensors[name][2], data, err_msg=name)


def test_missing_gguf_package_is_a_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, plain_loras: dict[str, Path], bases: dict[str, Path],
    tmp_path: Path,
) -> None:
    import sys

    from registry.cli.exit_codes import ExitCode, exit_code_for
    from registry.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    with pytest.raises(MissingDependency) as error:
        export_lora_gguf(plain_loras["llama"], bases["llama"], tmp_path / "x.gguf")
    assert exit_code_for(error.value) == ExitCode.ENVIRONMENT
    assert "pip install gguf" in str(error.value)
