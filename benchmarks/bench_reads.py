"""Read commands on a large registry: `adapt list`, `show`, `base list`, `runs`, `tag`.

Each command's wall time is measured as a whole process next to a bare interpreter start
(`python -c pass`) in the same run, so the ratio says how much adapt adds to Python itself.
Goal (issue 14): each under 0.3 s with 100,000 versions on SQLite, idle 2 cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_core import _wall, populate
from benchmarks.common import Row

COMMANDS: list[tuple[str, list[str]]] = [
    ("adapt list", ["list"]),
    ("adapt show", ["show", "adapter-000042@7"]),
    ("adapt base list", ["base", "list"]),
    ("adapt runs", ["runs", "adapter-000042@7"]),
    ("adapt tag", ["tag", "adapter-000042@7", "bench"]),
]


def _decorate(home: Path, versions: int) -> None:
    """A base row, scores and a validation run, so show/runs/base list have work to do."""
    from sqlalchemy import insert

    from registry import Registry
    from registry.db.models import BaseModel, EvalScore, ValidationRun, utcnow

    reg = Registry(home=home)
    now = utcnow()
    with reg.engine.begin() as conn:
        conn.execute(insert(BaseModel), [
            {"fingerprint": f"fp1:{i:064x}", "structure": "st1:0", "name": f"base-{i}",
             "path": f"/models/base-{i}", "kind": "base", "params": 10**9, "created_at": now}
            for i in range(50)])
        conn.execute(insert(EvalScore), [
            {"version_id": v, "metric": "accuracy", "value": v / 1e5, "created_at": now}
            for v in range(1, min(versions, 20_000) + 1)])
        conn.execute(insert(ValidationRun), [
            {"version_id": 427, "status": "passed", "device": "cpu", "started_at": now,
             "figures": {"loss": 1.0}, "gates": [], "checks": {}}
            for _ in range(5)])
    reg.close()


def bench_reads(versions: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        populate(home, versions)
        _decorate(home, versions)
        env = {**os.environ, "ADAPT_HOME": str(home)}
        adapt = [sys.executable, "-m", "registry.cli"]
        python = _wall([sys.executable, "-c", "pass"], env)
        size = f"{versions:,} versions"
        for label, argv in COMMANDS:
            wall = _wall([*adapt, *argv], env)
            rows.append(Row("reads", f"{label} wall", round(wall, 3), round(python, 3),
                            "python -c pass", "s", round(wall / python, 1),
                            "adapt / bare interpreter", "< 0.3 s", size))
    return rows


def run(quick: bool) -> list[Row]:
    return bench_reads(2_000 if quick else 100_000)
