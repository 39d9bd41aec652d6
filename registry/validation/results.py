"""What a validation run produces: check results, gate results, and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry import __version__
from registry.errors import AdaptError, GateFailed
from registry.validation.spec import REPORT_FORMAT


@dataclass
class CheckResult:
    """One check's outcome. status: passed | warn | failed | error | skipped."""

    name: str
    status: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "details": self.details, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class GateResult:
    """A gate evaluated over the run's figures: status passed | failed | error."""

    expr: str
    status: str
    values: dict[str, float | None]  # the figures the gate read, as measured
    name: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"expr": self.expr, "name": self.name, "status": self.status,
                "values": self.values, "message": self.message}

    def describe(self) -> str:
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in self.values.items())
        text = f"{self.expr} ({shown})" if shown else self.expr
        return f"{text}: {self.message}" if self.message else text


@dataclass
class ValidationReport:
    """What a run found. `raise_for_status()` turns a failure into its typed error."""

    run_id: int | None
    ref: str
    digest: str
    status: str  # passed | failed | error
    device: dict[str, str]
    base: dict[str, str | None]
    data: dict[str, Any]
    checks: list[CheckResult]
    figures: dict[str, float | None]
    gates: list[GateResult]
    started_at: datetime
    finished_at: datetime
    merged: str | None = None
    quantized: str | None = None
    error: AdaptError | None = field(default=None, repr=False)

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if g.status != "passed"]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def raise_for_status(self) -> None:
        """Raise the failed check's error, or GateFailed naming every failed gate."""
        if self.error is not None:
            raise self.error
        if self.failed_gates:
            raise GateFailed([g.describe() for g in self.failed_gates])

    def to_dict(self) -> dict[str, Any]:
        """The report JSON (schemas/validation-report.schema.json)."""
        return {
            "format": REPORT_FORMAT,
            "run_id": self.run_id,
            "ref": self.ref,
            "digest": self.digest,
            "status": self.status,
            "error": str(self.error) if self.error is not None else None,
            "device": self.device,
            "base": self.base,
            "merged": self.merged,
            "quantized": self.quantized,
            "data": self.data,
            "checks": [c.to_dict() for c in self.checks],
            "figures": self.figures,
            "gates": [g.to_dict() for g in self.gates],
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": round((self.finished_at - self.started_at).total_seconds(), 3),
            "adapt_version": __version__,
        }


def fmt(value: float | None) -> str:
    """A figure in a summary line: 4 significant digits, '-' when unmeasured."""
    if value is None:
        return "-"
    return f"{value:.4g}"


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")
