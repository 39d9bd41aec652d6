"""A validation run: the registered checks in order, then gates, roll-up and the stored run.

`run_validation(reg, ref, options)` is what `Registry.validate` delegates to. It uses only the
facade's public methods and the Recorder (which writes through registry.catalog.runs); it never
opens a database session itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from registry.checkpoint import open_checkpoint
from registry.errors import (
    AdaptError,
    IncompatibleBase,
    IntegrityError,
    NonFiniteTensor,
    NotFound,
)

# these modules register the checks (@register_check) when imported
from registry.validation import checks as _header_checks  # noqa: F401
from registry.validation import model_checks as _model_checks  # noqa: F401
from registry.validation.context import ValidationContext, registered_checks
from registry.validation.evaldata import load_texts
from registry.validation.forward import resolve_device
from registry.validation.options import ValidationOptions
from registry.validation.recorder import Recorder
from registry.validation.results import CheckResult, ValidationReport
from registry.validation.rollup import (
    build_report,
    evaluate_gate,
    fail_gated_checks,
    overall_status,
)

if TYPE_CHECKING:
    from registry.registry import Registry, VersionInfo

Progress = Callable[[int, "int | None"], None]
# A failed check of these kinds is a failed validation, reported with the error's own exit code.
CHECK_FAILURES = (IntegrityError, IncompatibleBase, NonFiniteTensor)


def run_validation(reg: Registry, ref: str | VersionInfo, options: ValidationOptions,
                   on_progress: Progress | None = None) -> ValidationReport:
    """Run every check on version `ref`, evaluate the gates, store the run with its scores.

    A failed check or gate does not raise here: call `report.raise_for_status()`. Bad inputs
    (an unknown version, missing directories or data, no CUDA device) raise before anything is
    stored.
    """
    if options.device != "auto":
        # an impossible device is a usage error before any run starts; "auto" needs no check
        resolve_device(options.device)
    info = reg.resolve(ref)
    if not options.base.is_dir():
        raise NotFound("base model directory", str(options.base))
    for label, path in (("merged model directory", options.merged),
                        ("quantized model directory", options.quantized)):
        if path is not None and not path.is_dir():
            raise NotFound(label, str(path))
    texts = load_texts(options.data, options.max_samples)  # bad data is a usage error, early
    ctx = ValidationContext(reg, info, options, open_checkpoint(options.base), texts)

    recorder = Recorder(reg.catalog, info.id)
    run_id = recorder.start()
    started = datetime.now(UTC)
    progress: Progress = on_progress or _no_progress
    steps = registered_checks()
    error: AdaptError | None = None
    stop_reason: str | None = None
    for done, (name, check) in enumerate(steps):
        progress(done, len(steps))
        if stop_reason is not None:
            recorder.add(CheckResult(name, "skipped", f"skipped: {stop_reason}"))
            continue
        t0 = time.perf_counter()
        try:
            result = check(ctx)
        except AdaptError as exc:
            error = exc
            status = "failed" if isinstance(exc, CHECK_FAILURES) else "error"
            result = CheckResult(name, status, str(exc), {"error": type(exc).__name__})
            stop_reason = f"{name} {status}"
        except BaseException as exc:
            # a bug or an interrupt: record the run as an error, then let it propagate
            recorder.add(CheckResult(name, "error", f"{type(exc).__name__}: {exc}"))
            ctx.release()
            recorder.finish(build_report(ctx, run_id, recorder.checks, [], started, "error",
                                         None))
            raise
        result.seconds = time.perf_counter() - t0
        recorder.add(result)
    ctx.release()
    progress(len(steps), len(steps))

    checks = recorder.checks
    gates = [evaluate_gate(g, ctx.figures) for g in options.parsed_gates]
    fail_gated_checks(checks, gates)
    report = build_report(ctx, run_id, checks, gates, started, overall_status(checks, gates),
                          error)
    recorder.finish(report)
    return report


def _no_progress(done: int, total: int | None) -> None:
    pass
