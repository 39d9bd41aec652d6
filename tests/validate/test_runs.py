"""The pieces of a validation run: options checked once, checks registered by name, and runs
stored through registry.catalog.runs (a trace while running; outcome and scores in one
transaction; typed records with each gate's status and measured values)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.catalog import runs as run_rows
from registry.db.models import EvalScore, ValidationRun
from registry.errors import UsageError
from registry.validation import PerfSettings, ValidationOptions, register_check
from registry.validation.context import _CHECKS
from registry.validation.figures import CHECKS
from registry.validation.run import registered_checks

ROOT = Path(__file__).resolve().parents[2]
FAST = PerfSettings(batch=1, length=8, repeats=1)


def _ref(reg, tiny_lora: Path, tiny_base: Path) -> str:
    return reg.add(tiny_lora, name="lora", base=tiny_base).version.ref


def test_checks_are_registered_by_name_in_run_order():
    assert [name for name, _ in registered_checks()] == list(CHECKS)
    with pytest.raises(ValueError, match="not a known check"):
        register_check("vibes")
    with pytest.raises(ValueError, match="registered twice"):
        register_check("quality")(lambda ctx: None)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"dtype": "int3"}, "unknown dtype 'int3'"),
        ({"max_samples": 0}, "max_samples must be at least 1"),
        ({"max_length": 1}, "max_length must be at least 2"),
        ({"outlier_factor": 1.0}, "outlier_factor must be over 1"),
        ({"perf": PerfSettings(batch=0)}, "at least 1"),
        ({"gates": ("ppl < 'a'",)}, "only numbers"),
        ({"gates": ("kl_quant < 0.1",)}, "needs --quantized"),
    ],
)
def test_options_are_refused_when_built(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        ValidationOptions(base=tmp_path, **kwargs)


def test_options_build_lets_arguments_win_over_the_spec_and_keeps_both_gate_lists(tmp_path):
    spec = {"device": "cpu", "dtype": "bf16", "max_samples": 5, "max_length": 64,
            "data": "eval.txt", "gates": [{"expr": "ppl < 10", "name": "ppl-cap"}],
            "performance": {"batch": 3}}
    opts = ValidationOptions.build(str(tmp_path), dtype="float32", gates=["files_bad == 0"],
                                   spec=spec)
    assert opts.base == tmp_path and opts.device == "cpu" and opts.dtype == "float32"
    assert (opts.max_samples, opts.max_length, opts.perf.batch) == (5, 64, 3)
    assert opts.data == Path.cwd() / "eval.txt"  # a dict spec resolves against the cwd
    assert [(g.gate.expr, g.name) for g in opts.parsed_gates] == [
        ("ppl < 10", "ppl-cap"), ("files_bad == 0", None)]
    with pytest.raises(FrozenInstanceError):  # options cannot change after they were checked
        opts.device = "cuda"  # type: ignore[misc]


def test_finish_writes_the_run_and_its_scores_in_one_transaction(registry, tiny_base,
                                                                  tiny_lora):
    version_id = registry.resolve(_ref(registry, tiny_lora, tiny_base)).id
    run_id = run_rows.start_run(registry.catalog, version_id)
    [running] = registry.validation_runs(version_id)
    assert (running.id, running.status, running.finished_at) == (run_id, "running", None)

    def outcome(*scores: run_rows.RunScore) -> run_rows.FinishedRun:
        return run_rows.FinishedRun(
            status="passed", device="cpu", base_fingerprint="sha256:ab",
            checks={"integrity": {"status": "passed", "summary": "ok", "details": {},
                                  "seconds": 0.1}},
            figures={"ppl": 3.0, "kl_quant": None},
            gates=[{"expr": "ppl < 4", "name": None, "status": "passed",
                    "values": {"ppl": 3.0}, "message": None}],
            report={"run_id": run_id}, finished_at=datetime.now(UTC), scores=scores)

    # the second score breaks NOT NULL (SQLite stores NaN as NULL): nothing of the finish stays
    with pytest.raises(Exception, match="NOT NULL"):
        run_rows.finish_run(registry.catalog, run_id, outcome(
            run_rows.RunScore("validate.ppl", 3.0, "eval"),
            run_rows.RunScore("validate.loss", float("nan"))))
    [still] = registry.validation_runs(version_id)
    assert still.status == "running" and still.checks == () and still.finished_at is None
    with registry.catalog.read() as s:
        assert s.query(EvalScore).count() == 0

    run_rows.finish_run(registry.catalog, run_id,
                        outcome(run_rows.RunScore("validate.ppl", 3.0, "eval")))
    [done] = registry.validation_runs(version_id)
    assert done.status == "passed" and done.finished_at is not None
    assert done.check("integrity") == run_rows.CheckRecord("integrity", "passed", "ok", 0.1)
    assert done.measured == {"ppl": 3.0}
    [gate] = done.gates
    assert (gate.expr, gate.status, gate.passed, gate.values) == (
        "ppl < 4", "passed", True, {"ppl": 3.0})
    assert run_rows.runs_by_id(registry.catalog, [run_id, 999]) == {run_id: done}
    with registry.catalog.read() as s:
        [score] = s.query(EvalScore).all()
    assert (score.metric, score.value, score.run_id, score.base_fingerprint) == (
        "validate.ppl", 3.0, run_id, "sha256:ab")


def test_runs_written_in_other_shapes_read_as_typed_records(registry, tiny_base, tiny_lora):
    """A run restored from a Hub manifest or an older release: no details, gates with `passed`."""
    ref = _ref(registry, tiny_lora, tiny_base)
    with registry.catalog.write() as s:
        s.add(ValidationRun(version_id=registry.resolve(ref).id, status="failed",
                            checks={"integrity": True, "health": {"status": "warn"}},
                            figures={"ppl": 8.25, "odd": "x"},
                            gates=[{"expr": "ppl < 8", "passed": False}]))
        s.commit()
    [run] = registry.runs(ref)
    assert [(c.name, c.status) for c in run.checks] == [("integrity", "passed"),
                                                        ("health", "warn")]
    assert run.figures == {"ppl": 8.25, "odd": None}
    assert [(g.expr, g.status) for g in run.gates] == [("ppl < 8", "failed")]
    assert run.stored_gates == [{"expr": "ppl < 8", "passed": False}]
    assert run.to_dict()["gates"] == [{"expr": "ppl < 8", "status": "failed"}]
    assert run.ref == ref


def test_an_interrupted_check_stores_the_run_as_error_and_propagates(
        registry, tiny_base, tiny_lora, monkeypatch):
    ref = _ref(registry, tiny_lora, tiny_base)

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(_CHECKS, "health", interrupted)
    with pytest.raises(KeyboardInterrupt):
        registry.validate(ref, ValidationOptions(base=tiny_base, device="cpu", perf=FAST))
    [run] = registry.runs(ref)
    assert run.status == "error" and run.finished_at is not None
    assert {c.name: c.status for c in run.checks} == {
        "integrity": "passed", "compatibility": "passed", "health": "error",
        "quality": "skipped", "performance": "skipped", "parity": "skipped"}
    assert run.report is not None and run.report["run_id"] == run.id


def test_a_killed_run_leaves_a_running_trace(tmp_path, tiny_base, tiny_lora):
    """The process dies inside a check: the run row inserted at the start is still there."""
    from registry import Registry

    home = tmp_path / "home"
    with Registry(home=home) as reg:
        ref = _ref(reg, tiny_lora, tiny_base)
    code = (
        "import os\n"
        "from registry import Registry\n"
        "from registry.validation import ValidationOptions, context, run\n"
        "context._CHECKS['health'] = lambda ctx: os._exit(137)\n"
        f"Registry(home={str(home)!r}).validate({ref!r}, "
        f"ValidationOptions(base={str(tiny_base)!r}, device='cpu'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "ADAPT_HOME": str(home)})
    assert done.returncode == 137, done.stderr
    with Registry(home=home) as reg:
        [run] = reg.runs(ref)
        assert (run.status, run.finished_at, run.checks) == ("running", None, ())
        assert json.loads(json.dumps(run.to_dict(), default=str))["status"] == "running"


def test_validation_code_reaches_the_database_only_through_the_catalog():
    for path in (ROOT / "registry" / "validation").glob("*.py"):
        text = path.read_text()
        for needle in ("session(", "registry.db", "sqlalchemy", "sqlmodel"):
            assert needle not in text, f"{path.name} uses {needle}"
