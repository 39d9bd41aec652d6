"""`adapt add` and the commands around it, through the real entry point."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from registry.cli.exit_codes import ExitCode
from tests.cli import run_adapt
from tests.factories import make_adapter


def registry_state(home: Path) -> tuple[list[str], int]:
    """What a failed command must leave unchanged: versions and blob count."""
    from registry import Registry

    with Registry(home=home) as reg:
        refs = [r["ref"] for r in reg.list_versions(all_versions=True)]
        blobs = len(list(reg.store))
    return refs, blobs


def test_add_list_show_round_trip(capsys, tiny_lora: Path, tiny_base: Path) -> None:
    r = run_adapt(capsys, "add", tiny_lora, "--base", tiny_base, "--name", "support",
                  "--tag", "prod", "--json")
    assert r.code == 0, r.err
    added = json.loads(r.out)
    assert added["created"] is True and added["ref"] == "support@1"
    assert added["method"] == "LORA" and added["rank"] == 4 and added["alpha"] == 8
    assert added["base_fingerprint"].startswith("fp1:")

    listed = json.loads(run_adapt(capsys, "list", "--json").out)
    assert [(x["name"], x["version"], x["method"], x["rank"], x["tags"]) for x in listed] == [
        ("support", 1, "LORA", 4, ["prod"])]
    assert listed[0]["base_model"] is not None

    shown = json.loads(run_adapt(capsys, "show", "support:prod", "--json").out)
    for key in ("name", "version", "ref", "method", "rank", "alpha", "use_rslora", "rank_pattern",
                "alpha_pattern", "target_modules", "task_type", "base_model", "base_fingerprint",
                "params", "size_bytes", "dtype", "tags", "files", "parents", "scores",
                "created_at"):
        assert key in shown, key
    assert sorted(f["path"] for f in shown["files"]) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert shown["target_modules"] == ["q_proj", "v_proj"]
    assert shown["params"] == sum(t.numel() for t in load_file(
        str(tiny_lora / "adapter_model.safetensors")).values())


def test_adding_identical_content_creates_no_new_version(capsys, tiny_lora: Path) -> None:
    assert run_adapt(capsys, "add", tiny_lora, "-n", "a").code == 0
    r = run_adapt(capsys, "add", tiny_lora, "-n", "a")
    assert r.code == 0 and "already registered as a@1" in r.out
    assert [x["ref"] for x in json.loads(run_adapt(capsys, "list", "--all", "--json").out)] == [
        "a@1"]


def test_versions_tags_scores_and_removal(capsys, tiny_lora: Path, tiny_lora_r8: Path,
                                          adapt_home: Path) -> None:
    run_adapt(capsys, "add", tiny_lora, "-n", "x")
    run_adapt(capsys, "add", tiny_lora_r8, "-n", "x")
    assert json.loads(run_adapt(capsys, "show", "x", "--json").out)["version"] == 2
    assert run_adapt(capsys, "tag", "x@1", "prod").code == 0
    assert json.loads(run_adapt(capsys, "show", "x:prod", "--json").out)["version"] == 1
    assert run_adapt(capsys, "tag", "x@2", "prod").code == 0  # tags move
    assert json.loads(run_adapt(capsys, "show", "x:prod", "--json").out)["version"] == 2
    r = run_adapt(capsys, "score", "x@2", "--metric", "ppl", "--value", "7.5", "--dataset", "d")
    assert r.code == 0
    scores = json.loads(run_adapt(capsys, "show", "x@2", "--json").out)["scores"]
    assert [(s["metric"], s["value"], s["dataset"]) for s in scores] == [("ppl", 7.5, "d")]
    assert run_adapt(capsys, "untag", "x", "prod").code == 0
    assert run_adapt(capsys, "show", "x:prod").code == ExitCode.NOT_FOUND
    digest = json.loads(run_adapt(capsys, "show", "x@1", "--json").out)["digest"]
    assert json.loads(run_adapt(capsys, "show", digest[:14], "--json").out)["ref"] == "x@1"
    assert run_adapt(capsys, "rm", "x@1", "--yes").code == 0
    assert run_adapt(capsys, "show", "x@1").code == ExitCode.NOT_FOUND
    gc = json.loads(run_adapt(capsys, "gc", "--json").out)
    assert len(gc["removed_blobs"]) == 2  # x@1's config and weights; x@2 keeps its own
    assert run_adapt(capsys, "fsck").code == 0


def test_export_loads_in_peft_with_identical_outputs(capsys, tiny_lora: Path, tiny_base: Path,
                                                      tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_adapt(capsys, "add", tiny_lora, "-n", "e")
    assert run_adapt(capsys, "export", "e", tmp_path / "out").code == 0
    ids = torch.arange(12).view(1, -1)
    outs = []
    for d in (tiny_lora, tmp_path / "out"):
        base = AutoModelForCausalLM.from_pretrained(tiny_base)
        model = PeftModel.from_pretrained(base, d).eval()
        with torch.no_grad():
            outs.append(model(ids).logits)
    assert torch.equal(outs[0], outs[1])
    assert run_adapt(capsys, "export", "e", tmp_path / "out").code == ExitCode.CONFLICT


def test_incompatible_base_names_module_and_both_shapes(capsys, tiny_lora: Path,
                                                        other_base: Path, adapt_home: Path) -> None:
    r = run_adapt(capsys, "add", tiny_lora, "--base", other_base)
    assert r.code == ExitCode.INCOMPATIBLE
    assert "model.layers.0.self_attn.q_proj" in r.err
    assert "64x64" in r.err and "96x96" in r.err
    assert registry_state(adapt_home) == ([], 0)


def test_fsck_finds_a_tampered_blob(capsys, tiny_lora: Path, adapt_home: Path) -> None:
    run_adapt(capsys, "add", tiny_lora, "-n", "t")
    shown = json.loads(run_adapt(capsys, "show", "t", "--json").out)
    sha = next(f["sha256"] for f in shown["files"] if f["path"].endswith(".safetensors"))
    blob = adapt_home / "blobs" / sha[:2] / sha[2:]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = run_adapt(capsys, "fsck")
    assert r.code == ExitCode.FAILED and "its bytes changed" in r.out
    assert run_adapt(capsys, "export", "t", adapt_home.parent / "x").code == ExitCode.INTEGRITY


# -- bad input: one-line error, documented exit code, registry unchanged --------------------------

def _corrupt(kind: str, d: Path) -> None:
    cfg = d / "adapter_config.json"
    weights = d / "adapter_model.safetensors"
    if kind == "no-config":
        cfg.unlink()
    elif kind == "invalid-json":
        cfg.write_text("{not json")
    elif kind == "unknown-peft-type":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "peft_type": "WIZARD"}))
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif kind == "lying-header":
        raw = weights.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        key = next(k for k in header if k != "__metadata__")
        header[key]["data_offsets"][1] += 4000
        blob = json.dumps(header).encode()
        weights.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    elif kind == "rank-mismatch":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "r": 16}))
    elif kind == "missing-factor":
        tensors = load_file(str(weights))
        del tensors[next(k for k in sorted(tensors) if k.endswith("lora_B.weight"))]
        save_file(tensors, str(weights))
    elif kind == "nan":
        tensors = load_file(str(weights))
        key = next(k for k in sorted(tensors) if "lora_A" in k)
        tensors[key][0, 0] = float("nan")
        save_file(tensors, str(weights))
    elif kind == "not-a-dir":
        shutil.rmtree(d)
        d.write_text("hello")
    elif kind == "missing":
        shutil.rmtree(d)


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [
        ("missing", ExitCode.INVALID_INPUT, "no such directory"),
        ("not-a-dir", ExitCode.INVALID_INPUT, "not a directory"),
        ("no-config", ExitCode.INVALID_INPUT, "no adapter_config.json"),
        ("invalid-json", ExitCode.INVALID_INPUT, "not valid JSON"),
        ("unknown-peft-type", ExitCode.INVALID_INPUT, "unknown peft_type"),
        ("truncated", ExitCode.INVALID_INPUT, "outside"),
        ("lying-header", ExitCode.INVALID_INPUT, "bytes for F32"),
        ("rank-mismatch", ExitCode.INVALID_INPUT, "r=16"),
        ("missing-factor", ExitCode.INVALID_INPUT, "only one of lora_A / lora_B"),
        ("nan", ExitCode.INVALID_INPUT, "--allow-nonfinite"),
    ],
)
def test_bad_adapter_is_refused_with_one_line(capsys, lora_copy: Path, tiny_lora: Path,
                                              adapt_home: Path, kind: str, code: int,
                                              words: str) -> None:
    assert run_adapt(capsys, "add", tiny_lora, "-n", "good").code == 0
    before = registry_state(adapt_home)
    _corrupt(kind, lora_copy)
    r = run_adapt(capsys, "add", lora_copy, "-n", "bad")
    assert r.code == code, r.err
    assert words in r.err
    assert r.err.strip().count("\n") == 0 and r.err.startswith("error: ")
    assert "Traceback" not in r.err
    assert registry_state(adapt_home) == before


def test_nonfinite_is_accepted_when_allowed(capsys, lora_copy: Path) -> None:
    _corrupt("nan", lora_copy)
    assert run_adapt(capsys, "add", lora_copy, "--allow-nonfinite").code == 0


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "has space", "UPPER"])
def test_bad_names_are_refused(capsys, tiny_lora: Path, adapt_home: Path, name: str) -> None:
    r = run_adapt(capsys, "add", tiny_lora, "--name", name)
    assert r.code == ExitCode.USAGE and "invalid name" in r.err
    assert registry_state(adapt_home) == ([], 0)


class _Payload:
    """Unpickling this would run code: it must never happen."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/adapt-pwned",))


def test_pickle_is_refused_by_default_and_never_unpickled(capsys, lora_copy: Path,
                                                           adapt_home: Path) -> None:
    tensors = load_file(str(lora_copy / "adapter_model.safetensors"))
    (lora_copy / "adapter_model.safetensors").unlink()
    torch.save(tensors, lora_copy / "adapter_model.bin")
    r = run_adapt(capsys, "add", lora_copy)
    assert r.code == ExitCode.INVALID_INPUT and "pickle" in r.err and "--convert-pickle" in r.err
    assert registry_state(adapt_home) == ([], 0)

    r = run_adapt(capsys, "add", lora_copy, "--convert-pickle", "-n", "conv", "--json")
    assert r.code == 0, r.err
    assert [f["path"] for f in json.loads(r.out)["files"]] == [
        "adapter_config.json", "adapter_model.safetensors"]

    # a malicious pickle: weights_only refuses it and nothing runs
    if os.path.exists("/tmp/adapt-pwned"):
        os.unlink("/tmp/adapt-pwned")
    (lora_copy / "adapter_model.bin").write_bytes(pickle.dumps({"x": _Payload()}))
    r = run_adapt(capsys, "add", lora_copy, "--convert-pickle", "-n", "evil")
    assert r.code == ExitCode.INVALID_INPUT
    assert not os.path.exists("/tmp/adapt-pwned")


def test_other_methods_are_detected(capsys, tiny_base: Path, tmp_path: Path) -> None:
    from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, PromptTuningConfig

    cases = {
        "DORA": LoraConfig(r=2, target_modules=["q_proj"], use_dora=True, init_lora_weights=False),
        "LOHA": LoHaConfig(r=2, target_modules=["q_proj"], init_weights=False),
        "LOKR": LoKrConfig(r=2, target_modules=["q_proj"], init_weights=False),
        "IA3": IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"],
                         init_ia3_weights=False),
        "PROMPT_TUNING": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
        "RSLORA": LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj"],
                             init_lora_weights=False),
        "PATTERN": LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                              rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 3}),
    }
    for label, cfg in cases.items():
        d = make_adapter(tiny_base, tmp_path / label.lower(), cfg)
        r = run_adapt(capsys, "add", d, "--base", tiny_base, "--json")
        assert r.code == 0, (label, r.err)
        shown = json.loads(r.out)
        expected = {"RSLORA": "LORA", "PATTERN": "LORA"}.get(label, label)
        assert shown["method"] == expected, label
        if label == "RSLORA":
            assert shown["use_rslora"] is True
        if label == "PATTERN":
            assert shown["rank_pattern"] == {"v_proj": 2}
            assert shown["alpha_pattern"] == {"v_proj": 3}
