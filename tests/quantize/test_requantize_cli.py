"""`adapt requantize` through the real entry point: registry records, refusals, exit codes."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest

from registry.cli.exit_codes import ExitCode
from tests.cli import run_adapt


def test_requantize_adapter_in_one_pass_records_a_quantized_model(
    capsys: pytest.CaptureFixture[str], registry, tiny_base: Path, all_linear_lora: Path,
    tmp_path: Path,
) -> None:
    version = registry.add(all_linear_lora, name="ft", base=tiny_base).version
    out = tmp_path / "nf4"
    done = run_adapt(capsys, "requantize", "--adapter", "ft", "--base", tiny_base, "--to", "nf4",
                     "--double-quant", "--compensate-rank", "4", "--out", out, "--json")
    assert done.code == 0, done.err
    data = json.loads(done.out)
    assert data["to"] == "nf4" and data["double_quant"] is True
    assert len(data["layers"]) == 14
    assert data["overall"]["error_vs_delta"] > 0
    assert data["compensation_dir"] == str(out / "compensation")
    record = data["record"]
    assert record["kind"] == "quantized"
    assert record["source_version_id"] == version.id
    assert record["parent_fingerprint"] == registry.fingerprint(tiny_base).fingerprint
    found = registry.find_base(record["fingerprint"])
    assert found is not None and found.kind == "quantized"
    assert found.details["overall"]["rel_error"] == pytest.approx(data["overall"]["rel_error"])
    assert json.loads((out / "adapt-quant.json").read_text())["provenance"]["adapter_ref"] == "ft@1"


def test_requantize_table_shows_the_error_budget(
    capsys: pytest.CaptureFixture[str], merged_dir: Path, tmp_path: Path
) -> None:
    done = run_adapt(capsys, "requantize", merged_dir, "--to", "int8", "--out", tmp_path / "q")
    assert done.code == 0, done.err
    assert "err/|W|" in done.out and "overall" in done.out
    assert "recorded as quantized model" in done.out


def test_unsupported_quantization_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], merged_dir: Path, tmp_path: Path
) -> None:
    done = run_adapt(capsys, "requantize", merged_dir, "--to", "q3_k", "--out", tmp_path / "q")
    assert done.code == ExitCode.USAGE
    assert "unsupported --to 'q3_k'" in done.err and not (tmp_path / "q").exists()


def test_already_quantized_source_is_refused(
    capsys: pytest.CaptureFixture[str], merged_dir: Path, tmp_path: Path
) -> None:
    assert run_adapt(capsys, "requantize", merged_dir, "--to", "nf4",
                     "--out", tmp_path / "q").code == 0
    done = run_adapt(capsys, "requantize", tmp_path / "q", "--to", "nf4",
                     "--out", tmp_path / "qq")
    assert done.code == ExitCode.INVALID_INPUT
    assert "already quantized" in done.err and not (tmp_path / "qq").exists()


def test_non_empty_out_is_refused_without_force(
    capsys: pytest.CaptureFixture[str], merged_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = run_adapt(capsys, "requantize", merged_dir, "--to", "nf4", "--out", out)
    assert done.code == ExitCode.CONFLICT and "--force" in done.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert run_adapt(capsys, "requantize", merged_dir, "--to", "nf4", "--out", out,
                     "--force").code == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_not_enough_disk_is_refused_before_writing(
    capsys: pytest.CaptureFixture[str], merged_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    done = run_adapt(capsys, "requantize", merged_dir, "--to", "nf4", "--out", tmp_path / "q")
    assert done.code == ExitCode.ENVIRONMENT and "not enough free disk" in done.err
    assert not (tmp_path / "q").exists()
    assert not list(tmp_path.glob(".q.*"))


def test_bitsandbytes_that_cannot_quantize_here_is_refused(
    capsys: pytest.CaptureFixture[str], merged_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bitsandbytes.functional as bnbf

    def no_backend(*args: object, **kwargs: object) -> None:
        # what bitsandbytes raises when no kernel is registered for the device
        raise NotImplementedError("no kernel for quantize_4bit on device cpu")

    monkeypatch.setattr(bnbf, "quantize_4bit", no_backend)
    done = run_adapt(capsys, "requantize", merged_dir, "--to", "fp4", "--out", tmp_path / "q")
    assert done.code == ExitCode.ENVIRONMENT
    assert "bitsandbytes cannot quantize to fp4 here" in done.err
    assert not (tmp_path / "q").exists()


def test_adapter_needs_a_base(
    capsys: pytest.CaptureFixture[str], registry, tiny_base: Path, all_linear_lora: Path,
    tmp_path: Path,
) -> None:
    registry.add(all_linear_lora, name="ft", base=tiny_base)
    done = run_adapt(capsys, "requantize", "--adapter", "ft", "--to", "nf4",
                     "--out", tmp_path / "q")
    assert done.code == ExitCode.USAGE and "--adapter needs --base" in done.err


def test_requantize_a_registered_model_by_name_and_name_the_output(
    capsys: pytest.CaptureFixture[str], registry, merged_dir: Path, tmp_path: Path
) -> None:
    registry.add_base(merged_dir, name="merged-ft", kind="merged")
    out = tmp_path / "q"
    done = run_adapt(capsys, "requantize", "merged-ft", "--to", "int8", "--out", out,
                     "--name", "merged-ft-int8", "--json")
    assert done.code == 0, done.err
    record = json.loads(done.out)["record"]
    assert record["name"] == "merged-ft-int8" and record["kind"] == "quantized"
    assert record["parent_fingerprint"] == registry.fingerprint(merged_dir).fingerprint
    found = registry.find_base("merged-ft-int8")
    assert found is not None and found.fingerprint == registry.fingerprint(out).fingerprint
