"""`adapt extract` and `adapt convert` end to end: registered versions, figures, lineage, exits."""

from __future__ import annotations

import json

from registry.cli.exit_codes import ExitCode
from tests.cli import run_adapt
from tests.extract.conftest import KNOWN_SPECTRA


def test_extract_registers_lora_with_figures_and_lineage(
    capsys, registry, llama_base, llama_tuned
) -> None:
    tuned, known = llama_tuned
    res = run_adapt(capsys, "extract", "--base", llama_base, "--tuned", tuned,
                    "--energy", "0.9999", "--name", "sft-lora", "--json")
    assert res.code == 0, res.err
    shown = json.loads(res.out)
    assert shown["ref"] == "sft-lora@1" and shown["method"] == "LORA" and shown["created"]
    recipe = shown["recipe"]
    base_fp = registry.fingerprint(llama_base).fingerprint
    assert shown["base_fingerprint"] == base_fp == recipe["base_fingerprint"]
    assert recipe["tuned_fingerprint"] == registry.fingerprint(tuned).fingerprint
    assert set(recipe["modules"]) == set(known)
    for module, fig in recipe["modules"].items():
        assert fig["rank"] == next(len(s) for k, s in KNOWN_SPECTRA.items()
                                   if module.endswith(k))
        assert fig["rel_error"] < 1e-5
    assert shown["rank_pattern"]  # three different ranks: r plus a pattern
    tuned_row = registry.find_base(recipe["tuned_fingerprint"])
    assert tuned_row.kind == "tuned" and tuned_row.parent_fingerprint == base_fp
    # the registered files load back through the registry as a plain LoRA
    again = run_adapt(capsys, "extract", "--base", llama_base, "--tuned", tuned,
                      "--energy", "0.9999", "--name", "sft-lora")
    assert again.code == 0 and "already registered as sft-lora@1" in again.out


def test_extract_text_output_and_refusals(capsys, llama_base, llama_tuned, tmp_path) -> None:
    tuned, _ = llama_tuned
    res = run_adapt(capsys, "extract", "-b", llama_base, "-t", tuned, "--rank", "2")
    assert res.code == 0, res.err
    assert "created llama-tuned-lora@1 (LoRA rank 2)" in res.out
    assert "model.norm.weight" in res.out  # the changed norm is reported
    both = run_adapt(capsys, "extract", "-b", llama_base, "-t", tuned, "--rank", "2",
                     "--energy", "0.9")
    assert both.code == ExitCode.USAGE and both.err.count("\n") == 1
    missing = run_adapt(capsys, "extract", "-b", llama_base, "-t", tmp_path / "nope", "-r", "2")
    assert missing.code == ExitCode.NOT_FOUND
    same = run_adapt(capsys, "extract", "-b", llama_base, "-t", llama_base, "-r", "2")
    assert same.code == ExitCode.USAGE


def test_convert_registers_exact_lora_with_source_as_parent(
    capsys, registry, llama_base, method_adapters
) -> None:
    from peft import LoHaConfig

    loha = method_adapters("loha-cli", LoHaConfig(r=3, alpha=6, target_modules=["q_proj"],
                                                  init_weights=False))
    assert run_adapt(capsys, "add", loha, "--name", "my-loha", "--base", llama_base).code == 0
    res = run_adapt(capsys, "convert", "my-loha", "--to", "lora", "--json")
    assert res.code == 0, res.err
    shown = json.loads(res.out)
    assert shown["ref"] == "my-loha-lora@1" and shown["method"] == "LORA"
    assert shown["recipe"]["exact"] and shown["rank"] <= 9
    assert shown["parents"][0]["ref"] == "my-loha@1"
    assert shown["parents"][0]["role"] == "convert-source"
    assert shown["base_fingerprint"] == registry.fingerprint(llama_base).fingerprint
    text = run_adapt(capsys, "convert", "my-loha", "--rank", "2", "--name", "loha-r2")
    assert text.code == 0 and "truncated, largest relative error" in text.out
    lora = run_adapt(capsys, "convert", "my-loha-lora")
    assert lora.code == ExitCode.USAGE and "already a LoRA" in lora.err
    bad = run_adapt(capsys, "convert", "my-loha", "--to", "loha")
    assert bad.code == ExitCode.USAGE


def test_compose_convert_takes_a_loha_through_its_exact_lora(
    capsys, registry, llama_base, method_adapters, tmp_path
) -> None:
    from peft import LoHaConfig, LoraConfig

    from tests.extract.conftest import peft_deltas

    loha = method_adapters("loha-compose", LoHaConfig(r=2, alpha=4, target_modules=["q_proj"],
                                                      init_weights=False))
    lora = method_adapters("lora-compose", LoraConfig(r=2, lora_alpha=4,
                                                      target_modules=["q_proj"],
                                                      init_lora_weights=False))
    for path, name in ((loha, "h"), (lora, "l")):
        assert run_adapt(capsys, "add", path, "--name", name, "--base", llama_base).code == 0
    refused = run_adapt(capsys, "compose", "h", "l", "--method", "cat", "--name", "mix")
    assert refused.code == ExitCode.UNSUPPORTED, refused.err
    res = run_adapt(capsys, "compose", "h", "l*0.5", "--method", "cat", "--name", "mix",
                    "--convert", "--json")
    assert res.code == 0, res.err
    shown = json.loads(res.out)
    converted = shown["recipe"]["inputs"][0]["converted"]
    assert converted["from"] == "LOHA" and converted["exact"]
    assert "converted" not in shown["recipe"]["inputs"][1]
    assert shown["parents"][0]["params"]["converted"]["exact"]
    # the composed LoRA's delta is the LoHa's delta plus half the LoRA's (PEFT as the oracle)
    out = tmp_path / "mix"
    assert run_adapt(capsys, "export", "mix", out).code == 0
    want_h, want_l = peft_deltas(llama_base, loha), peft_deltas(llama_base, lora)
    got = peft_deltas(llama_base, out)
    assert got and set(got) == set(want_h)
    for module, delta in got.items():
        want = want_h[module] + 0.5 * want_l[module]
        assert (delta - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))
