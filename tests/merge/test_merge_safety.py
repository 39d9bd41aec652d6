"""Refusals, atomic output, provenance and the registry record of `adapt merge`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from registry.errors import (
    AlreadyExists,
    IncompatibleBase,
    InsufficientDisk,
    UnsupportedMethod,
    UsageError,
)
from registry.io.shards import parse_size
from registry.ops.merge import MERGE_RECORD, merge_adapter_into_base
from registry.ops.options import MergeOptions
from tests.cli import run_adapt


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".adapt-" in p.name)


def test_prompt_tuning_cannot_be_merged(prompt_adapter: Path, merge_base: Path,
                                        tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMethod) as caught:
        merge_adapter_into_base(prompt_adapter, merge_base, tmp_path / "out")
    assert "cannot be merged: the method adds virtual tokens, not weights" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_incompatible_base_is_refused_naming_the_module(tiny_lora: Path, other_base: Path,
                                                       tmp_path: Path) -> None:
    with pytest.raises(IncompatibleBase) as caught:
        merge_adapter_into_base(tiny_lora, other_base, tmp_path / "out")
    assert "model.layers.0.self_attn.q_proj" in str(caught.value)
    assert "64x64" in str(caught.value) and "96x96" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_unimplemented_lora_variant_is_refused(tiny_lora: Path, tiny_base: Path,
                                              tmp_path: Path) -> None:
    variant = shutil.copytree(tiny_lora, tmp_path / "pissa")
    config = json.loads((variant / "adapter_config.json").read_text())
    config["init_lora_weights"] = "pissa_niter_4"
    (variant / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedMethod, match="rewritten base"):
        merge_adapter_into_base(variant, tiny_base, tmp_path / "out")


def test_non_empty_out_is_refused_unless_forced(tiny_lora: Path, tiny_base: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(AlreadyExists, match="--force"):
        merge_adapter_into_base(tiny_lora, tiny_base, out)
    assert (out / "keep.txt").read_text() == "mine"
    merge_adapter_into_base(tiny_lora, tiny_base, out, MergeOptions(force=True))
    assert not (out / "keep.txt").exists()
    assert (out / "model.safetensors").is_file() and (out / MERGE_RECORD).is_file()
    assert _leftovers(tmp_path) == []


def test_empty_out_dir_is_used(tiny_lora: Path, tiny_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    merge_adapter_into_base(tiny_lora, tiny_base, out)
    assert (out / "model.safetensors").is_file()


def test_out_dir_cannot_be_the_base(tiny_lora: Path, tiny_base: Path) -> None:
    with pytest.raises(UsageError, match="base model"):
        merge_adapter_into_base(tiny_lora, tiny_base, tiny_base, MergeOptions(force=True))


def test_failed_merge_leaves_no_partial_output(tiny_lora: Path, tiny_base: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"

    def interrupt(done: int, total: int | None) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_adapter_into_base(tiny_lora, tiny_base, out, on_progress=interrupt)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_failed_forced_merge_keeps_the_previous_output(tiny_lora: Path, tiny_base: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    merge_adapter_into_base(tiny_lora, tiny_base, out)
    before = (out / "model.safetensors").read_bytes()

    def fail(done: int, total: int | None) -> None:
        raise OSError("disk went away")

    with pytest.raises(OSError):
        merge_adapter_into_base(tiny_lora, tiny_base, out, MergeOptions(force=True),
                                on_progress=fail)
    assert (out / "model.safetensors").read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_not_enough_disk_is_refused_before_writing(tiny_lora: Path, tiny_base: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage

    def nearly_full(path: str | Path):
        usage = real(path)
        return usage._replace(free=1_000_000)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    with pytest.raises(InsufficientDisk, match="need"):
        merge_adapter_into_base(tiny_lora, tiny_base, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_provenance_in_every_shard_and_merge_record(registry, tiny_lora: Path, tiny_base: Path,
                                                    tmp_path: Path) -> None:
    from safetensors import safe_open

    version = registry.add(tiny_lora, name="prov-lora", base=tiny_base).version
    out = tmp_path / "merged"
    result, _ = registry.merge("prov-lora", tiny_base, out, MergeOptions(shard_size=100_000))
    assert len(result.files) > 1
    base_fp = registry.fingerprint(tiny_base).fingerprint
    for name in result.files:
        with safe_open(str(out / name), framework="pt") as f:
            meta = f.metadata()
        assert meta["format"] == "pt"
        facts = json.loads(meta["adapt_merge"])
        assert facts["adapter_ref"] == "prov-lora@1"
        assert facts["adapter_digest"] == version.digest
        assert facts["base_fingerprint"] == base_fp
        assert facts["method"] == "LORA" and facts["adapt_version"]
    record = json.loads((out / MERGE_RECORD).read_text())
    assert record["adapter_digest"] == version.digest and record["files"] == result.files


def test_merge_is_recorded_with_lineage(registry, tiny_lora: Path, tiny_base: Path,
                                        tmp_path: Path) -> None:
    version = registry.add(tiny_lora, name="rec-lora", base=tiny_base).version
    out = tmp_path / "merged"
    result, info = registry.merge("rec-lora@1", tiny_base, out, MergeOptions(dtype="bf16"))
    assert info.kind == "merged"
    assert info.source_version_id == version.id
    assert info.parent_fingerprint == registry.fingerprint(tiny_base).fingerprint
    assert info.fingerprint == registry.fingerprint(out).fingerprint
    assert info.details and info.details["adapter"] == "rec-lora@1"
    assert info.details["dtype"] == "bf16"
    found = registry.find_base(info.fingerprint)
    assert found is not None and found.kind == "merged"


def test_cli_merge_exit_codes(registry, capsys: pytest.CaptureFixture[str], tiny_lora: Path,
                              tiny_base: Path, other_base: Path, prompt_adapter: Path,
                              tmp_path: Path) -> None:
    registry.add(tiny_lora, name="cli-lora", base=tiny_base)
    registry.add(prompt_adapter, name="cli-prompt")
    out = tmp_path / "merged"

    done = run_adapt(capsys, "merge", "cli-lora", "--base", tiny_base, "--out", out, "--json",
                     "--dtype", "fp16", "--shard-size", "100KB")
    assert done.code == 0, done.err
    data = json.loads(done.out)
    assert data["dtype"] == "fp16" and len(data["files"]) > 1
    assert data["record"]["kind"] == "merged"

    again = run_adapt(capsys, "merge", "cli-lora", "--base", tiny_base, "--out", out)
    assert again.code == 8 and "--force" in again.err

    wrong = run_adapt(capsys, "merge", "cli-lora", "--base", other_base, "--out",
                      tmp_path / "o2")
    assert wrong.code == 5 and "q_proj" in wrong.err

    prompt = run_adapt(capsys, "merge", "cli-prompt", "--base", tiny_base, "--out",
                       tmp_path / "o3")
    assert prompt.code == 7
    assert "cannot be merged: the method adds virtual tokens, not weights" in prompt.err

    missing = run_adapt(capsys, "merge", "no-such", "--base", tiny_base, "--out",
                        tmp_path / "o4")
    assert missing.code == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("5GB", 5_000_000_000), ("2GiB", 2 << 30), ("500MB", 500_000_000), ("100KB", 100_000),
    ("1234", 1234), ("1.5GB", 1_500_000_000),
])
def test_parse_size_reads_transformers_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(UsageError):
        parse_size("big")
