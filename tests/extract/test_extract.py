"""Extraction from full fine-tunes: known deltas come back, ranks match a dense SVD, PEFT agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import IncompatibleBase, UsageError
from registry.ops.extract import ExtractOptions, extract_lora, low_rank_factors
from tests.extract.conftest import KNOWN_SPECTRA, known_factors

# float32: W_tuned - W_base is rounded once per entry (|W| ~ |delta| here), so a recovered
# delta agrees with the stored one to ~1e-6 of its norm
RECOVERY_RTOL = 5e-6


def _suffix_rank(module: str) -> int:
    return next(len(s) for k, s in KNOWN_SPECTRA.items() if module.endswith(k))


def _stored_deltas(base: Path, tuned: Path) -> dict:
    from safetensors.torch import load_file

    b, t = load_file(str(base / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    return {k.removesuffix(".weight"): t[k] - b[k] for k in b}


def _rel(x, y) -> float:
    import torch

    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))


def test_extract_recovers_known_low_rank_deltas(llama_base, llama_tuned, tmp_path) -> None:
    from safetensors.torch import load_file

    tuned, known = llama_tuned
    res = extract_lora(llama_base, tuned, tmp_path / "out", ExtractOptions(rank=6))
    assert {m.module for m in res.modules} == set(known)
    stored = _stored_deltas(llama_base, tuned)
    factors = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    for m in res.modules:
        key = f"base_model.model.{m.module}"
        got = factors[f"{key}.lora_B.weight"] @ factors[f"{key}.lora_A.weight"]
        assert _rel(got, stored[m.module]) <= RECOVERY_RTOL, m.module
        assert _rel(got, known[m.module]) <= RECOVERY_RTOL, m.module
        assert m.rel_error <= RECOVERY_RTOL and m.energy == pytest.approx(1.0, abs=1e-6)
    # every other linear module is unchanged: skipped, not given a zero adapter
    assert "model.layers.0.self_attn.k_proj" in res.zero_modules
    assert [c.name for c in res.changed] == ["model.norm.weight"]
    assert not res.changed[0].saved


def test_energy_threshold_recovers_the_exact_ranks(llama_base, llama_tuned, tmp_path) -> None:
    import json

    tuned, known = llama_tuned
    res = extract_lora(llama_base, tuned, tmp_path / "out", ExtractOptions(energy=0.9999))
    assert {m.module: m.rank for m in res.modules} == {m: _suffix_rank(m) for m in known}
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == res.rank and config["lora_alpha"] == res.rank
    for module, r in config["rank_pattern"].items():
        assert config["alpha_pattern"][module] == r  # scale 1 everywhere
    assert {m.module for m in res.modules if m.rank != res.rank} == set(config["rank_pattern"])


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_energy_threshold_picks_the_dense_svd_rank(energy: float) -> None:
    import torch

    from registry.ops.lora_algebra import energy_rank

    # a full-rank 256 x 512 delta with a geometric spectrum: the sketch (32, doubling) is
    # smaller than the matrix, so the randomized path decides
    spectrum = [0.8**i for i in range(256)]
    b, a = known_factors((256, 512), spectrum, seed=5)
    delta = b @ a
    low = low_rank_factors(delta, energy=energy, seed=1)
    s_dense = torch.linalg.svdvals(delta.double())
    assert low.rank == energy_rank(s_dense, energy)
    assert low.energy >= energy
    # the truncation is as good as the dense one of the same rank
    exact = float((s_dense[low.rank:] ** 2).sum().sqrt() / s_dense.square().sum().sqrt())
    assert abs(low.rel_error - exact) <= 1e-4


def test_randomized_error_is_within_1e_3_of_truncated_svd() -> None:
    import torch

    # rank-16 signal plus small full-rank noise, the benchmark's shape of problem
    b, a = known_factors((384, 640), [float(16 - i) for i in range(16)], seed=2)
    noise = torch.randn(384, 640, generator=torch.Generator().manual_seed(3)) * 0.01
    delta = b @ a + noise
    low = low_rank_factors(delta, rank=16, seed=0)
    s = torch.linalg.svdvals(delta.double())
    exact = float((s[16:] ** 2).sum().sqrt() / s.square().sum().sqrt())
    assert low.rank == 16
    assert abs(low.rel_error - exact) <= 1e-3
    # the reported error is measured against the matrix, not estimated
    measured = float(torch.linalg.norm(delta - low.b @ low.a) / torch.linalg.norm(delta))
    assert low.rel_error == pytest.approx(measured, rel=1e-4)


def test_fixed_seed_gives_identical_factors() -> None:
    import torch

    b, a = known_factors((200, 300), [float(30 - i) for i in range(30)], seed=4)
    delta = b @ a + 0.01 * torch.randn(200, 300, generator=torch.Generator().manual_seed(0))
    one, two = low_rank_factors(delta, rank=8, seed=3), low_rank_factors(delta, rank=8, seed=3)
    assert torch.equal(one.a, two.a) and torch.equal(one.b, two.b)


def test_peft_merge_of_extracted_lora_rebuilds_the_tuned_model(
    llama_base, llama_tuned, tmp_path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tuned, _ = llama_tuned
    out = tmp_path / "out"
    res = extract_lora(llama_base, tuned, out, ExtractOptions(energy=0.9999, save_changed=True))
    assert res.changed[0].saved
    model = AutoModelForCausalLM.from_pretrained(llama_base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(out)).merge_and_unload().state_dict()
    target = load_file(str(tuned / "model.safetensors"))
    for name, value in target.items():
        scale = value.abs().max().clamp_min(1e-12)
        assert float((merged[name] - value).abs().max() / scale) <= 1e-5, name


def test_gpt2_conv1d_extraction_matches_peft(gpt2_base, gpt2_tuned, tmp_path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tuned, known = gpt2_tuned
    out = tmp_path / "out"
    res = extract_lora(gpt2_base, tuned, out, ExtractOptions(energy=0.99999))
    assert {m.module: m.rank for m in res.modules} == {
        m: (2 if m.endswith("c_attn") else 3) for m in known}
    model = AutoModelForCausalLM.from_pretrained(gpt2_base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(out)).merge_and_unload().state_dict()
    target = load_file(str(tuned / "model.safetensors"))
    for name, value in target.items():
        if name in merged:
            scale = value.abs().max().clamp_min(1e-12)
            assert float((merged[name] - value).abs().max() / scale) <= 1e-5, name


def test_modules_pattern_limits_extraction(llama_base, llama_tuned, tmp_path) -> None:
    tuned, _ = llama_tuned
    res = extract_lora(llama_base, tuned, tmp_path / "out",
                       ExtractOptions(rank=2, modules=r"layers\.0\..*q_proj"))
    assert [m.module for m in res.modules] == ["model.layers.0.self_attn.q_proj"]
    with pytest.raises(UsageError, match="matches no linear module"):
        extract_lora(llama_base, tuned, tmp_path / "out2", ExtractOptions(rank=2, modules="nope"))


def test_refusals(llama_base, tmp_path) -> None:
    from tests.factories import make_tiny_llama

    with pytest.raises(UsageError, match="exactly one"):
        ExtractOptions(rank=4, energy=0.9)
    with pytest.raises(UsageError, match="energy"):
        ExtractOptions(energy=1.5)
    with pytest.raises(UsageError, match="no linear module differs"):
        extract_lora(llama_base, llama_base, tmp_path / "same", ExtractOptions(rank=2))
    wide = make_tiny_llama(tmp_path / "wide", hidden_size=96, intermediate_size=160)
    with pytest.raises(IncompatibleBase):
        extract_lora(llama_base, wide, tmp_path / "wide-out", ExtractOptions(rank=2))
