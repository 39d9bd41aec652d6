"""Validation runs and pre-deploy gates.

`Registry.validate(ref, ValidationOptions(base=...))` runs the registered checks on a version
(integrity, compatibility, health, quality, performance, parity; see `context.register_check`),
evaluates gates over the figures, and stores the run through `registry.catalog.runs`.
Importing this package loads no torch: that happens when a run loads a model.
"""

from __future__ import annotations

from registry.validation.context import ValidationContext, register_check, registered_checks
from registry.validation.figures import FIGURES, Figure
from registry.validation.gates import Gate, parse_gate
from registry.validation.options import NamedGate, ValidationOptions
from registry.validation.recorder import Recorder
from registry.validation.results import CheckResult, GateResult, ValidationReport
from registry.validation.run import Progress, run_validation
from registry.validation.spec import (
    REPORT_SCHEMA,
    SPEC_SCHEMA,
    GateSpec,
    PerfSettings,
    ValidationSpec,
    load_spec,
)

__all__ = [
    "FIGURES",
    "REPORT_SCHEMA",
    "SPEC_SCHEMA",
    "CheckResult",
    "Figure",
    "Gate",
    "GateResult",
    "GateSpec",
    "NamedGate",
    "PerfSettings",
    "Progress",
    "Recorder",
    "ValidationContext",
    "ValidationOptions",
    "ValidationReport",
    "ValidationSpec",
    "load_spec",
    "parse_gate",
    "register_check",
    "registered_checks",
    "run_validation",
]
