"""Every benchmark runs at quick sizes and returns well-formed rows (no timing asserted)."""

from __future__ import annotations

import importlib
import math

import pytest

from benchmarks.__main__ import discover, render
from benchmarks.common import Row


@pytest.mark.parametrize("name", discover())
def test_benchmark_runs_quick_and_writes_well_formed_rows(name: str, tmp_path) -> None:
    rows = importlib.import_module(f"benchmarks.{name}").run(True)
    assert rows and all(isinstance(r, Row) for r in rows)
    for r in rows:
        assert r.benchmark and r.metric and r.unit
        assert r.adapt is None or math.isfinite(r.adapt)
        if r.ratio is not None:
            assert r.ratio_note, "a ratio says which way it is taken"
    text = render({name: rows}, {}, "python -m benchmarks --quick", 1.0)
    assert text.count("\n| ") >= len(rows) + 1
