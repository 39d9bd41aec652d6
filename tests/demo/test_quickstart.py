"""`adapt demo --fast` end to end through the real entry point, on a tiny random Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_demo(out: Path, home: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "ADAPT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "registry.cli", "demo", "--fast", "--steps", "3",
         "--out", str(out), *extra],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the fast demo twice into the same out dir and registry; keep both results."""
    root = tmp_path_factory.mktemp("demo")
    home, out = root / "home", root / "out"
    first, first_s = run_demo(out, home)
    assert first.returncode == 0, first.stderr[-2000:]
    versions_after_first = _versions(home)
    second, second_s = run_demo(out, home, "--json")
    assert second.returncode == 0, second.stderr[-2000:]
    return {"home": home, "out": out, "first": first, "first_s": first_s,
            "second": second, "second_s": second_s,
            "versions_after_first": versions_after_first}


def _versions(home: Path) -> list[tuple[str, int, str]]:
    from registry import Registry

    reg = Registry(home=home)
    try:
        rows = reg.list_versions(all_versions=True)
    finally:
        reg.close()
    return sorted((r["name"], r["version"], r["digest"]) for r in rows)


def test_demo_registers_base_and_both_trained_adapters_with_scores(two_runs: dict) -> None:
    from registry import Registry

    reg = Registry(home=two_runs["home"])
    try:
        base = reg.find_base("tiny-llama-demo")
        assert base is not None
        for name, dataset in (("support-lora", "support-eval"), ("sql-lora", "sql-eval")):
            shown = reg.show(f"{name}@1")
            assert shown["base_fingerprint"] == base.fingerprint
            assert shown["rank"] == 8 and shown["target_modules"] == ["q_proj", "v_proj"]
            scores = [s for s in shown["scores"] if s["metric"] == "ppl"]
            # recorded once, though the demo ran twice
            assert [s["dataset"] for s in scores] == [dataset]
            info = json.loads((two_runs["out"] / "adapters"
                               / f"{name}.adapt-demo-train.json").read_text())
            assert scores[0]["value"] == pytest.approx(info["eval_ppl_after"], rel=1e-6)
    finally:
        reg.close()


def test_demo_prints_each_step_as_a_copyable_adapt_command(two_runs: dict) -> None:
    out = two_runs["first"].stdout
    assert "$ adapt base add " in out
    assert "--name support-lora" in out and "--name sql-lora" in out
    assert "$ adapt score support-lora@1 --metric ppl" in out
    assert "adapt tui" in out and "adapt push" in out
    # the second run ran the same commands (less the score it already had)
    summary = json.loads(two_runs["second"].stdout)
    printed = [line[2:] for line in out.splitlines() if line.startswith("$ adapt ")]
    assert set(summary["commands"]) <= set(printed)


def test_second_run_reuses_everything_and_creates_no_versions(two_runs: dict) -> None:
    summary = json.loads(two_runs["second"].stdout)  # --json: stdout is only the summary
    assert summary["base"]["reused"] is True
    assert [a["created"] for a in summary["adapters"]] == [False, False]
    assert _versions(two_runs["home"]) == two_runs["versions_after_first"]
    assert two_runs["second_s"] < two_runs["first_s"]


def test_demo_validates_with_gates_when_validate_exists(two_runs: dict) -> None:
    summary = json.loads(two_runs["second"].stdout)
    validation = summary["validation"]
    assert validation is not None
    assert validation["passed"] is True
    assert {g["expr"] for g in validation["gates"]} >= {"ppl <= 1.05 * base_ppl",
                                                        "parity_max_abs < 1e-3"}
    assert all(g["status"] == "passed" for g in validation["gates"])


def test_demo_runs_every_step_that_this_build_has(two_runs: dict) -> None:
    """Steps whose command exists ran; the others are listed as skipped, not silently lost."""
    summary = json.loads(two_runs["second"].stdout)
    skipped = {s["step"] for s in summary["skipped"]}
    for step, key in (("compose", "composed"), ("merge", "merged"),
                      ("requantize", "quantized")):
        assert (step in skipped) == (summary.get(key) is None), step
    if summary.get("merged"):
        assert (Path(summary["merged"]) / "config.json").is_file()
