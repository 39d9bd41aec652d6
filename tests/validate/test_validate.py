"""Validation runs on tiny real models (CPU): checks, figures, stored runs and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from registry.db.models import EvalScore, ValidationRun
from registry.errors import (
    GateFailed,
    IncompatibleBase,
    IntegrityError,
    NonFiniteTensor,
    UsageError,
)
from registry.schemas import validate as validate_schema
from registry.validation import PerfSettings, ValidationOptions
from registry.validation.evaldata import DEFAULT_DATA, load_texts

# a small forward pass keeps each run well under a second on the tiny model
FAST = PerfSettings(batch=2, length=32, repeats=1)
ROOT = Path(__file__).resolve().parents[2]
# ADAPT_TEST_DEVICE=cuda runs the same suite on a GPU; float32 keeps the tolerances meaningful
DEVICE = os.environ.get("ADAPT_TEST_DEVICE", "cpu")


def validate(reg, ref: str, base: Path, **kwargs):
    """Registry.validate on the test device, in float32, with the small forward pass.

    kwargs: ValidationOptions.build's (merged, quantized, data, gates, spec, max_samples, perf).
    """
    kwargs.setdefault("perf", FAST)
    options = ValidationOptions.build(base, device=DEVICE, dtype="float32", **kwargs)
    return reg.validate(ref, options)


def _add(reg, path: Path, base: Path, name: str = "lora", **kwargs) -> str:
    return reg.add(path, name=name, base=base, **kwargs).version.ref


def test_clean_run_passes_every_check_and_measures_every_figure(registry, tiny_base, tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base,
                              gates=["ppl <= 1.5 * base_ppl", "parity_max_abs < 1e-3"])
    assert report.status == "passed"
    assert {c.name: c.status for c in report.checks} == dict.fromkeys(
        ("integrity", "compatibility", "health", "quality", "performance", "parity"), "passed")
    f = report.figures
    assert f["files_checked"] == 2 and f["files_bad"] == 0
    assert f["fingerprint_match"] == 1 and f["nonfinite"] == 0
    assert f["eval_samples"] == len(load_texts(None).texts)
    assert f["loss"] > 0 and f["ppl"] == pytest.approx(2.718281828 ** f["loss"])
    assert f["ppl"] != f["base_ppl"]  # the adapter changes the model
    assert f["tokens_per_s"] > 0 and f["peak_mem_mb"] > 0
    assert f["kl_quant"] is None  # no --quantized
    assert "byte-level fallback" in report.data["tokenizer"]
    report.raise_for_status()


def test_quality_matches_a_plain_peft_forward(registry, tiny_base, tiny_lora):
    """Oracle: mean next-token loss from transformers' own labels= loss, text by text."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, max_samples=5)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32), str(tiny_lora))
    total = count = 0.0
    with torch.no_grad():
        for text in load_texts(None, 5).texts:
            ids = torch.tensor([[b % 256 for b in text.encode()][:128]])
            n = ids.shape[1] - 1
            total += float(model(input_ids=ids, labels=ids).loss) * n
            count += n
    assert report.figures["eval_tokens"] == count
    assert report.figures["loss"] == pytest.approx(total / count, rel=1e-5)


def test_parity_is_near_zero_for_an_exact_merge(registry, tiny_base, tiny_lora, merged_exact):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, merged=merged_exact,
                              gates=["parity_max_abs < 1e-4"])
    assert report.figures["parity_max_abs"] < 1e-4  # float32 rounding only
    assert report.status == "passed"


def test_parity_is_clearly_nonzero_for_a_wrong_merge(registry, tiny_base, tiny_lora,
                                                     merged_wrong_scale):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, merged=merged_wrong_scale,
                              gates=["parity_max_abs < 1e-3"])
    assert report.figures["parity_max_abs"] > 0.05
    assert report.figures["parity_mean_abs"] > 1e-3
    assert report.status == "failed"
    assert report.check("parity").status == "failed"
    with pytest.raises(GateFailed, match="parity_max_abs"):
        report.raise_for_status()


def test_on_the_fly_merge_matches_unmerged(registry, tiny_base, tiny_lora_r8):
    ref = _add(registry, tiny_lora_r8, tiny_base)
    report = validate(registry, ref, tiny_base, max_samples=4)
    assert report.figures["parity_max_abs"] < 1e-4
    assert report.check("parity").details["merged_with"].startswith("adapt merge")


def test_quantized_model_kl_divergence_is_measured(registry, tiny_base, tiny_lora, merged_exact,
                                                   quantized_nf4):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, merged=merged_exact,
                              quantized=quantized_nf4, max_samples=4,
                              gates=["kl_quant < 1.0", "quant_top1_agree > 0.3"])
    kl = report.figures["kl_quant"]
    assert kl is not None and 0 < kl < 1.0  # NF4 loses a little, not everything
    assert report.status == "passed"


def test_gate_on_quantized_figure_without_quantized_model_is_usage_error(
        registry, tiny_base, tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    with pytest.raises(UsageError, match="--quantized"):
        validate(registry, ref, tiny_base, gates=["kl_quant < 0.05"])
    with registry.catalog.read() as s:
        assert s.execute(select(ValidationRun)).first() is None  # refused before any run


def test_failed_gate_is_stored_as_failed_run_with_scores(registry, tiny_base, tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, max_samples=4,
                              gates=["ppl < 0.5 * base_ppl"])
    assert report.status == "failed" and report.check("quality").status == "failed"
    with registry.catalog.read() as s:
        stored = s.get(ValidationRun, report.run_id)
        scores = s.execute(select(EvalScore).where(EvalScore.run_id == report.run_id)
                           ).scalars().all()
    assert stored.status == "failed" and stored.finished_at is not None
    assert stored.gates[0]["status"] == "failed"
    assert stored.report["run_id"] == report.run_id
    by_metric = {sc.metric: sc for sc in scores}
    assert by_metric["validate.ppl"].value == pytest.approx(report.figures["ppl"])
    assert by_metric["validate.ppl"].dataset == "adapt-default-eval"
    assert "validate.tokens_per_s" in by_metric
    runs = registry.runs(ref)
    assert [r.status for r in runs] == ["failed"]
    assert [(g.expr, g.status, g.values["ppl"]) for g in runs[0].gates] == [
        ("ppl < 0.5 * base_ppl", "failed", pytest.approx(report.figures["ppl"]))]


def test_corrupted_blob_fails_integrity(registry, tiny_base, tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    weights = next(f for f in registry.resolve(ref).files if f.path.endswith(".safetensors"))
    blob = registry.store.path(weights.sha256)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    report = validate(registry, ref, tiny_base)
    assert report.check("integrity").status == "failed"
    assert report.figures["files_bad"] == 1
    assert report.status == "failed"
    assert {c.name: c.status for c in report.checks}["quality"] == "skipped"
    with pytest.raises(IntegrityError, match="adapter_model.safetensors"):
        report.raise_for_status()


def test_wrong_base_fails_compatibility_before_loading_any_weights(tmp_path, tiny_base,
                                                                   other_base, tiny_lora):
    """In a fresh process: the run stops at compatibility and torch was never imported."""
    from registry import Registry

    home = tmp_path / "home"
    with Registry(home=home) as reg:
        ref = _add(reg, tiny_lora, tiny_base)
    code = (
        "import json, sys\n"
        "from registry import Registry\n"
        "from registry.validation import ValidationOptions\n"
        f"r = Registry(home={str(home)!r}).validate({ref!r}, "
        f"ValidationOptions(base={str(other_base)!r}))\n"
        "print(json.dumps({'checks': {c.name: c.status for c in r.checks},\n"
        "  'error': type(r.error).__name__, 'summary': r.check('compatibility').summary,\n"
        "  'loaded': sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "ADAPT_HOME": str(home)}, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["checks"]["compatibility"] == "failed"
    assert out["error"] == IncompatibleBase.__name__
    assert "expects weight shape" in out["summary"]
    assert all(out["checks"][n] == "skipped" for n in ("health", "quality", "parity"))
    assert out["loaded"] == []


def test_different_weights_same_structure_is_a_warning_that_says_so(
        registry, tiny_base, retrained_base, tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, retrained_base, max_samples=2,
                              gates=["fingerprint_match == 1"])
    compat = report.check("compatibility")
    assert report.figures["fingerprint_match"] == 0
    assert report.figures["structure_match"] == 1
    assert "structure signature matches" in compat.summary
    assert compat.status == "failed"  # the gate demanded the recorded base
    assert report.status == "failed"


def test_health_names_the_outlier_module(registry, tiny_base, lora_outlier):
    ref = _add(registry, lora_outlier, tiny_base)
    report = validate(registry, ref, tiny_base, max_samples=2)
    health = report.check("health")
    assert health.status == "warn"
    assert list(health.details["outliers"]) == ["model.layers.1.self_attn.v_proj"]
    assert "model.layers.1.self_attn.v_proj" in health.summary
    assert report.figures["delta_outliers"] == 1
    assert report.status == "passed"  # a warning is not a failure without a gate


def test_delta_norms_match_dense_scale_b_a(registry, tiny_base, tiny_lora):
    from peft import LoraConfig  # noqa: F401  (PEFT's own scale convention is the oracle)
    from safetensors.torch import load_file

    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, max_samples=2)
    cfg = json.loads((tiny_lora / "adapter_config.json").read_text())
    t = load_file(str(tiny_lora / "adapter_model.safetensors"))
    module = "model.layers.0.self_attn.q_proj"
    a = t[f"base_model.model.{module}.lora_A.weight"]
    b = t[f"base_model.model.{module}.lora_B.weight"]
    dense = (cfg["lora_alpha"] / cfg["r"]) * b @ a
    norms = report.check("health").details["delta_norms"]
    assert norms[module] == pytest.approx(float(dense.norm()), rel=1e-5)


def test_nan_in_adapter_fails_health(registry, tiny_base, lora_nan):
    ref = _add(registry, lora_nan, tiny_base, allow_nonfinite=True)
    report = validate(registry, ref, tiny_base)
    assert report.check("health").status == "failed"
    assert report.figures["nonfinite"] == 1
    with pytest.raises(NonFiniteTensor):
        report.raise_for_status()


def test_report_validates_against_its_schema(registry, tiny_base, tiny_lora, merged_exact):
    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, tiny_base, merged=merged_exact,
                              max_samples=3, gates=["ppl < 0.1"])
    data = json.loads(json.dumps(report.to_dict()))
    validate_schema(data, "validation-report")
    assert data["gates"][0]["status"] == "failed"
    broken = {**data, "status": "maybe"}
    with pytest.raises(UsageError):
        validate_schema(broken, "validation-report")


def test_spec_file_supplies_gates_and_options(registry, tmp_path, tiny_base, tiny_lora,
                                              merged_wrong_scale):
    ref = _add(registry, tiny_lora, tiny_base)
    (tmp_path / "eval.txt").write_text("one short line of text\nand a second line here\n")
    spec = tmp_path / "gates.yaml"
    spec.write_text(
        "version: 1\n"
        "data: eval.txt\n"  # relative to the spec file
        f"merged: {merged_wrong_scale}\n"
        "performance: {batch: 1, length: 16, repeats: 1}\n"
        "gates:\n"
        "  - ppl <= 2 * base_ppl\n"
        "  - {expr: 'parity_max_abs < 1e-3', name: merge-exact}\n"
    )
    report = validate(registry, ref, tiny_base, spec=spec, gates=["tokens_per_s > 0"],
                      perf=None)  # the spec's performance settings apply
    assert report.figures["eval_samples"] == 2
    assert report.data["source"].endswith("eval.txt")
    assert [(g.name, g.status) for g in report.gates] == [
        (None, "passed"), ("merge-exact", "failed"), (None, "passed")]
    assert report.check("performance").details["batch"] == 1


def test_invalid_spec_is_refused_with_the_schema_violation(registry, tmp_path, tiny_base,
                                                           tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    spec = tmp_path / "bad.yaml"
    spec.write_text("gates: [ppl < 2]\nmax_sample: 3\n")
    with pytest.raises(UsageError, match="invalid validation-spec"):
        validate(registry, ref, tiny_base, spec=spec)


def test_default_eval_set_ships_as_jsonl_with_text():
    rows = [json.loads(line) for line in DEFAULT_DATA.read_text().splitlines()]
    assert len(rows) >= 30
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)


def test_schema_files_are_generated_from_code():
    from registry.schemas import SCHEMA_DIR, load_schema, render

    for stem in ("validation-spec", "validation-report"):
        assert (SCHEMA_DIR / f"{stem}.schema.json").read_text() == render(load_schema(stem)), (
            "run python -m registry.schemas --write")


def test_prompt_tuning_skips_model_checks_and_a_gate_on_them_fails(registry, tiny_base,
                                                                   prompt_adapter):
    ref = _add(registry, prompt_adapter, tiny_base, name="prompt")
    report = validate(registry, ref, tiny_base)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["integrity"] == statuses["compatibility"] == statuses["health"] == "passed"
    assert statuses["quality"] == statuses["performance"] == statuses["parity"] == "skipped"
    assert "virtual tokens" in report.check("quality").summary
    assert report.status == "passed"
    gated = validate(registry, ref, tiny_base, gates=["ppl < 100"])
    assert gated.status == "failed"
    assert gated.gates[0].status == "error" and "not measured" in gated.gates[0].message
    with pytest.raises(GateFailed):
        gated.raise_for_status()


def test_base_tokenizer_is_used_when_present(registry, tiny_base, base_with_tokenizer, tiny_lora):
    from transformers import AutoTokenizer

    ref = _add(registry, tiny_lora, tiny_base)
    report = validate(registry, ref, base_with_tokenizer, max_samples=3)
    assert report.data["tokenizer"].endswith("from tiny-llama-tokenizer")
    assert "fallback" not in report.data["tokenizer"]
    tok = AutoTokenizer.from_pretrained(base_with_tokenizer)
    expected = sum(len(tok(t)["input_ids"]) - 1 for t in load_texts(None, 3).texts)
    assert report.figures["eval_tokens"] == expected
    assert report.figures["fingerprint_match"] == 1  # same weights, tokenizer files aside


def test_jsonl_without_text_field_is_a_usage_error(registry, tmp_path, tiny_base, tiny_lora):
    ref = _add(registry, tiny_lora, tiny_base)
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "fine"}\n{"prompt": "no text here"}\n')
    with pytest.raises(UsageError, match="eval.jsonl:2: no string `text` field"):
        validate(registry, ref, tiny_base, data=data)


@pytest.mark.parametrize("method", ["dora", "loha", "ia3"])
def test_other_methods_get_delta_norms_and_exact_merge_parity(registry, tiny_base,
                                                              method_adapters, method):
    ref = _add(registry, method_adapters[method], tiny_base, name=method)
    report = validate(registry, ref, tiny_base, max_samples=2)
    assert report.check("health").status == "passed"
    assert report.figures["delta_norm_max"] > 0
    assert report.check("parity").details["merged_with"].startswith("adapt merge")
    assert report.figures["parity_max_abs"] < 1e-4  # adapt's merge == PEFT unmerged forward
