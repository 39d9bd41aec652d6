"""Validation runs and pre-deploy gates.

`validate_version(reg, ref, base_dir, ...)` checks a registered adapter version (integrity,
compatibility, health, quality, performance, parity), evaluates gates over the figures, and
stores a ValidationRun. Importing this package loads no torch: that happens when a run loads
a model.
"""

from __future__ import annotations

from registry.validation.figures import FIGURES, Figure
from registry.validation.gates import Gate, parse_gate
from registry.validation.run import (
    GateResult,
    ValidationReport,
    list_runs,
    validate_version,
)
from registry.validation.spec import (
    REPORT_SCHEMA,
    SPEC_SCHEMA,
    PerfSettings,
    ValidationSpec,
    load_spec,
)

__all__ = [
    "FIGURES",
    "REPORT_SCHEMA",
    "SPEC_SCHEMA",
    "Figure",
    "Gate",
    "GateResult",
    "PerfSettings",
    "ValidationReport",
    "ValidationSpec",
    "list_runs",
    "load_spec",
    "parse_gate",
    "validate_version",
]
