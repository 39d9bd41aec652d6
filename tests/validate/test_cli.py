"""`adapt validate` and `adapt runs` through the real entry point: tables, JSON, exit codes."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import pytest

from registry.schemas import validate as validate_schema

DEVICE = os.environ.get("ADAPT_TEST_DEVICE", "cpu")


@dataclass
class Result:
    code: int
    out: str
    err: str


def adapt(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """Run `adapt ARGS` in-process via registry.cli.app.main (its error-to-exit-code mapping)."""
    from registry.cli.app import main

    capsys.readouterr()
    argv = [*map(str, args)]
    if argv[0] == "validate" and "--device" not in argv:
        argv += ["--device", DEVICE, "--dtype", "float32"]
    old, sys.argv = sys.argv, ["adapt", *argv]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@pytest.fixture
def lora_ref(registry, tiny_base, tiny_lora) -> str:
    return registry.add(tiny_lora, name="support", base=tiny_base).version.ref


def test_passing_gate_exits_0(capsys, tiny_base, lora_ref):
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base, "--max-samples", 4,
              "--gate", "ppl <= 1.5 * base_ppl", "--gate", "parity_max_abs < 1e-3")
    assert r.code == 0, r.err
    for check in ("integrity", "compatibility", "health", "quality", "performance", "parity"):
        assert check in r.out
    assert "failed" not in r.out
    assert "byte-level fallback" in r.out  # the tiny model has no tokenizer: said so


def test_failing_gate_exits_1_and_the_run_is_stored_as_failed(capsys, registry, tiny_base,
                                                               lora_ref):
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base, "--max-samples", 3,
              "--gate", "ppl < 0.5 * base_ppl")
    assert r.code == 1
    assert "quality" in r.out and "failed" in r.out  # the table is printed first
    assert r.err.strip().startswith("error: gate failed: ppl < 0.5 * base_ppl (ppl=")
    runs = adapt(capsys, "runs", lora_ref, "--json")
    assert runs.code == 0
    stored = json.loads(runs.out)
    assert [run["status"] for run in stored] == ["failed"]
    assert stored[0]["gates"] == [{"expr": "ppl < 0.5 * base_ppl", "status": "failed"}]


def test_json_report_validates_and_failed_gate_still_exits_1(capsys, tiny_base, lora_ref):
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base, "--max-samples", 3,
              "--gate", "tokens_per_s < 1", "--json")
    assert r.code == 1
    report = json.loads(r.out)  # stdout holds only the JSON
    validate_schema(report, "validation-report")
    assert report["status"] == "failed"
    assert report["gates"][0]["status"] == "failed"


def test_wrong_base_exits_5(capsys, other_base, lora_ref):
    r = adapt(capsys, "validate", lora_ref, "--base", other_base)
    assert r.code == 5
    assert "incompatible base" in r.err
    assert "compatibility" in r.out and "skipped" in r.out


def test_corrupted_blob_exits_4(capsys, registry, tiny_base, lora_ref):
    info = registry.resolve(lora_ref)
    blob = registry.store.path(info.files[-1].sha256)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base)
    assert r.code == 4
    assert "integrity check failed" in r.err


def test_unknown_figure_exits_2_naming_known_figures(capsys, tiny_base, lora_ref):
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base, "--gate", "perplexity < 3")
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1
    assert "unknown figure 'perplexity'" in r.err and "base_ppl" in r.err


def test_unsafe_gate_exits_2(capsys, tiny_base, lora_ref):
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base,
              "--gate", "__import__('os').getcwd() == 0")
    assert r.code == 2
    assert "not allowed" in r.err


def test_runs_table_lists_past_runs(capsys, tiny_base, lora_ref):
    assert adapt(capsys, "runs", lora_ref).err.startswith("no validation runs")
    adapt(capsys, "validate", lora_ref, "--base", tiny_base, "--max-samples", 2)
    r = adapt(capsys, "runs", lora_ref)
    assert r.code == 0
    assert "passed" in r.out and "RUN" in r.out


def test_cuda_without_a_gpu_is_a_usage_error(capsys, tiny_base, lora_ref):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = adapt(capsys, "validate", lora_ref, "--base", tiny_base, "--device", "cuda")
    assert r.code == 2
    assert "no CUDA device" in r.err
    assert json.loads(adapt(capsys, "runs", lora_ref, "--json").out) == []  # refused up front
