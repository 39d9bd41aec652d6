"""From check results and figures to a verdict: gates evaluated, failures rolled up, the report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from registry.errors import AdaptError
from registry.validation.context import ValidationContext
from registry.validation.figures import CHECKS, FIGURES
from registry.validation.gates import MissingFigure
from registry.validation.options import NamedGate
from registry.validation.results import CheckResult, GateResult, ValidationReport


def evaluate_gate(named: NamedGate, figures: Mapping[str, float | None]) -> GateResult:
    """A gate's verdict; `error` when a figure it reads was not measured or it divides by 0."""
    gate = named.gate
    values = {n: figures.get(n) for n in gate.names}
    try:
        ok = gate.evaluate(figures)
    except MissingFigure as missing:
        check = FIGURES[missing.name].check
        return GateResult(gate.expr, "error", values, named.name,
                          f"{missing.name} was not measured (the {check} check did not run)")
    except ZeroDivisionError:
        return GateResult(gate.expr, "error", values, named.name, "division by zero")
    return GateResult(gate.expr, "passed" if ok else "failed", values, named.name)


def fail_gated_checks(checks: Sequence[CheckResult], gates: Sequence[GateResult]) -> None:
    """A check whose figure a gate rejected is failed too, its summary naming the gate."""
    for g in gates:
        if g.status == "passed":
            continue
        for fig in g.values:
            c = next(c for c in checks if c.name == FIGURES[fig].check)
            if c.status in {"passed", "warn"}:
                c.status = "failed"
                c.summary += f"; gate failed: {g.expr}"


def overall_status(checks: Sequence[CheckResult], gates: Sequence[GateResult]) -> str:
    """error if a check errored; failed if a check or gate failed; else passed."""
    if any(c.status == "error" for c in checks):
        return "error"
    if any(c.status == "failed" for c in checks) or any(g.status != "passed" for g in gates):
        return "failed"
    return "passed"


def build_report(ctx: ValidationContext, run_id: int | None, checks: list[CheckResult],
                 gates: list[GateResult], started: datetime, status: str,
                 error: AdaptError | None) -> ValidationReport:
    """The report of a run from its context; checks that never ran are listed as skipped."""
    ran = {c.name for c in checks}
    checks = checks + [CheckResult(n, "skipped", "skipped: the run stopped") for n in CHECKS
                       if n not in ran]
    opts, dev = ctx.options, ctx.device
    return ValidationReport(
        run_id=run_id,
        ref=ctx.info.ref,
        digest=ctx.info.digest,
        status=status,
        device={"type": dev.type if dev else _requested_type(opts.device),
                "name": dev.name if dev else "not used",
                "dtype": dev.dtype if dev else "not used"},
        base={"path": str(opts.base.resolve()), "fingerprint": ctx.fingerprint,
              "structure": ctx.structure, "recorded_fingerprint": ctx.info.base_fingerprint},
        data={"source": ctx.texts.source, "samples": ctx.samples,
              "tokenizer": ctx.tokenizer, "max_length": opts.max_length},
        checks=checks,
        # NaN/Inf is not JSON; such a figure reads as unmeasured, so a gate on it fails
        figures={k: v if v is None or math.isfinite(v) else None
                 for k, v in ctx.figures.items()},
        gates=gates,
        started_at=started,
        finished_at=datetime.now(UTC),
        merged=str(opts.merged) if opts.merged else None,
        quantized=str(opts.quantized) if opts.quantized else None,
        error=error,
    )


def _requested_type(device: str) -> str:
    return "cuda" if device == "cuda" else "cpu"
