"""The Recorder: a run's trace in the catalog, from `running` to its outcome and scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from registry.catalog import runs
from registry.validation.figures import FIGURES
from registry.validation.results import CheckResult, ValidationReport

if TYPE_CHECKING:
    from registry.catalog import Catalog


class Recorder:
    """Collects a run's check results and persists the run through registry.catalog.runs.

    `start` inserts the run as running (a killed run leaves that trace); `finish` writes the
    report, the per-check results and the figures kept as scores in one transaction.
    """

    def __init__(self, catalog: Catalog, version_id: int) -> None:
        self.catalog = catalog
        self.version_id = version_id
        self.run_id: int | None = None
        self.checks: list[CheckResult] = []

    def start(self) -> int:
        self.run_id = runs.start_run(self.catalog, self.version_id)
        return self.run_id

    def add(self, result: CheckResult) -> None:
        self.checks.append(result)

    def finish(self, report: ValidationReport) -> None:
        assert self.run_id is not None, "start() first"
        runs.finish_run(self.catalog, self.run_id, outcome(report))


def outcome(report: ValidationReport) -> runs.FinishedRun:
    """What the catalog stores for a report: its columns and the figures kept as EvalScores."""
    data = report.to_dict()
    device = report.device
    dataset = report.data["source"]
    dataset = Path(dataset).name if "/" in dataset else dataset
    scores = tuple(
        runs.RunScore(f"validate.{name}", float(value),
                      dataset if FIGURES[name].check == "quality" else None)
        for name, value in report.figures.items()
        if value is not None and FIGURES[name].score
    )
    return runs.FinishedRun(
        status=report.status,
        device=(f"{device['type']}:{device['name']}" if device["name"] != "not used"
                else device["type"]),
        base_fingerprint=report.base["fingerprint"],
        checks={c["name"]: {k: v for k, v in c.items() if k != "name"} for c in data["checks"]},
        figures=data["figures"],
        gates=data["gates"],
        report=data,
        finished_at=report.finished_at,
        scores=scores,
    )
