"""A validation run: checks in order, figures, gates, and the stored ValidationRun."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import __version__
from registry.checkpoint import open_checkpoint
from registry.db.models import EvalScore, ValidationRun, utcnow
from registry.errors import (
    AdaptError,
    GateFailed,
    IncompatibleBase,
    IntegrityError,
    NonFiniteTensor,
    NotFound,
    UsageError,
)
from registry.peft_dir import PROMPT_METHODS, read_adapter_dir
from registry.validation.checks import (
    CheckResult,
    check_compatibility,
    check_health,
    check_integrity,
)
from registry.validation.evaldata import load_texts
from registry.validation.figures import CHECKS, FIGURES, NEEDS_OPTION
from registry.validation.forward import resolve_device, resolve_dtype
from registry.validation.gates import Gate, MissingFigure, parse_gate
from registry.validation.spec import (
    REPORT_FORMAT,
    GateSpec,
    PerfSettings,
    ValidationSpec,
    load_spec,
)

if TYPE_CHECKING:
    from registry.registry import Registry, VersionInfo

Progress = Callable[[int, "int | None"], None]
# A failed check of these kinds is a failed validation, reported with the error's own exit code.
CHECK_FAILURES = (IntegrityError, IncompatibleBase, NonFiniteTensor)
PARITY_SEQUENCES = 4  # parity and KL compare logits on the first few eval texts
EVAL_BATCH = 8
DEFAULT_MAX_LENGTH = 128


@dataclass
class GateResult:
    expr: str
    status: str  # passed | failed | error
    values: dict[str, float | None]
    name: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"expr": self.expr, "name": self.name, "status": self.status,
                "values": self.values, "message": self.message}

    def describe(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
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


@dataclass
class _Options:
    merged: Path | None
    quantized: Path | None
    data: Path | None
    device: str
    dtype: str | None
    max_samples: int | None
    max_length: int
    outlier_factor: float
    perf: PerfSettings
    gates: list[tuple[Gate, str | None]]


def _options(merged_dir: str | Path | None, quantized_dir: str | Path | None,
             data: str | Path | None, device: str, dtype: str | None, gates: Iterable[str],
             spec: str | Path | Mapping[str, Any] | ValidationSpec | None,
             max_samples: int | None, perf: PerfSettings | None) -> _Options:
    """Arguments win over the spec; gates from both are kept (spec's first)."""
    sp = spec if isinstance(spec, ValidationSpec) else (
        load_spec(spec) if spec is not None else ValidationSpec())
    gate_specs = [*sp.gates, *(GateSpec(g) for g in gates)]
    parsed = [(parse_gate(g.expr), g.name) for g in gate_specs]
    quantized = Path(quantized_dir) if quantized_dir is not None else sp.quantized
    for gate, _ in parsed:
        for name in gate.names:
            if name in NEEDS_OPTION and quantized is None:
                raise UsageError(f"gate {gate.expr!r} uses {name}, which needs "
                                 f"{NEEDS_OPTION[name]}")
    return _Options(
        merged=Path(merged_dir) if merged_dir is not None else sp.merged,
        quantized=quantized,
        data=Path(data) if data is not None else sp.data,
        device=device if device != "auto" or sp.device is None else sp.device,
        dtype=dtype if dtype is not None else sp.dtype,
        max_samples=max_samples if max_samples is not None else sp.max_samples,
        max_length=sp.max_length or DEFAULT_MAX_LENGTH,
        outlier_factor=sp.outlier_factor or 10.0,
        perf=perf or sp.performance or PerfSettings(),
        gates=parsed,
    )


def validate_version(
    reg: Registry,
    ref: str,
    base_dir: str | Path,
    *,
    merged_dir: str | Path | None = None,
    quantized_dir: str | Path | None = None,
    data: str | Path | None = None,
    device: str = "auto",
    dtype: str | None = None,
    gates: Iterable[str] = (),
    spec: str | Path | Mapping[str, Any] | ValidationSpec | None = None,
    max_samples: int | None = None,
    perf: PerfSettings | None = None,
    on_progress: Progress | None = None,
) -> ValidationReport:
    """Run every check on version `ref` against the base at `base_dir`, evaluate the gates,
    store a ValidationRun with its scores, and return the report.

    A failed check or gate does not raise here: call `report.raise_for_status()`. Bad arguments
    (unknown gate figures, missing files) raise before anything is stored.
    merged_dir: a merged model to compare with; None merges on the fly.
    quantized_dir: a quantized model; its KL divergence from the merged model is measured.
    data: JSONL with a `text` field or plain text; None uses the default set shipped with adapt.
    gates: expressions such as "ppl <= 1.05 * base_ppl" (see registry.validation.figures).
    spec: a YAML spec file (or its parsed content) validated against SPEC_SCHEMA.
    """
    opts = _options(merged_dir, quantized_dir, data, device, dtype, gates, spec, max_samples,
                    perf)
    if opts.device != "auto":
        # an impossible device is a usage error before any run starts; "auto" needs no check
        resolve_device(opts.device)
    resolve_dtype(opts.dtype, "cpu")
    info = reg.resolve(ref)
    base = Path(base_dir)
    if not base.is_dir():
        raise NotFound("base model directory", str(base))
    for label, path in (("merged model directory", opts.merged),
                        ("quantized model directory", opts.quantized)):
        if path is not None and not path.is_dir():
            raise NotFound(label, str(path))
    texts = load_texts(opts.data, opts.max_samples)  # bad data is a usage error, found early
    ckpt = open_checkpoint(base)

    run_id = _start_run(reg, info)
    started = utcnow()
    progress: Progress = on_progress or _no_progress
    figures: dict[str, float | None] = {name: None for name in FIGURES}
    checks: list[CheckResult] = []
    state = _RunState(reg, info, base, ckpt, opts, figures, texts)
    steps: list[tuple[str, Callable[[], CheckResult]]] = [
        ("integrity", state.integrity),
        ("compatibility", state.compatibility),
        ("health", state.health),
        ("quality", state.quality),
        ("performance", state.performance),
        ("parity", state.parity),
    ]
    error: AdaptError | None = None
    stop_reason: str | None = None
    for done, (name, step) in enumerate(steps):
        progress(done, len(steps))
        if stop_reason is not None:
            checks.append(CheckResult(name, "skipped", f"skipped: {stop_reason}"))
            continue
        t0 = time.perf_counter()
        try:
            result = step()
        except AdaptError as exc:
            error = exc
            status = "failed" if isinstance(exc, CHECK_FAILURES) else "error"
            result = CheckResult(name, status, str(exc), {"error": type(exc).__name__})
            stop_reason = f"{name} {status}"
        except BaseException as exc:
            # a bug or an interrupt: record the run as an error, then let it propagate
            result = CheckResult(name, "error", f"{type(exc).__name__}: {exc}")
            checks.append(result)
            state.close()
            _finish_run(reg, run_id, _report(state, run_id, checks, [], started, "error",
                                             None))
            raise
        result.seconds = time.perf_counter() - t0
        checks.append(result)
    state.close()
    progress(len(steps), len(steps))

    gate_results = [_evaluate(gate, name, figures) for gate, name in opts.gates]
    for g in gate_results:
        if g.status == "passed":
            continue
        for fig in g.values:
            c = next(c for c in checks if c.name == FIGURES[fig].check)
            if c.status in {"passed", "warn"}:
                c.status = "failed"
                c.summary += f"; gate failed: {g.expr}"
    if any(c.status == "error" for c in checks):
        status = "error"
    elif any(c.status == "failed" for c in checks) or any(
            g.status != "passed" for g in gate_results):
        status = "failed"
    else:
        status = "passed"
    report = _report(state, run_id, checks, gate_results, started, status, error)
    _finish_run(reg, run_id, report)
    return report


@dataclass
class _RunState:
    """What the checks share: the resolved inputs, and the loaded models between steps."""

    reg: Registry
    info: VersionInfo
    base: Path
    ckpt: Any
    opts: _Options
    figures: dict[str, float | None]
    texts: Any
    adapter_dir: Path | None = None
    adapter: Any = None
    fingerprint: str | None = None
    structure: str | None = None
    device: str | None = None
    dtype: str | None = None
    device_label: str | None = None
    tokenizer: str = "not used (no model loaded)"
    samples: int = 0
    model: Any = None  # the PEFT-wrapped model between quality and parity
    not_loadable: str | None = None  # why the model checks are skipped for this adapter
    batches: list[Any] = field(default_factory=list)

    def integrity(self) -> CheckResult:
        checkout = None
        try:
            checkout = self.reg.checkout(self.info)
        except IntegrityError:
            pass  # reported below, file by file
        result = check_integrity(self.reg, self.info, checkout, self.figures)
        self.adapter_dir = checkout
        return result

    def compatibility(self) -> CheckResult:
        assert self.adapter_dir is not None
        self.adapter = read_adapter_dir(self.adapter_dir)

        def fingerprint_base() -> tuple[str, str]:
            fp = self.reg.fingerprint(self.base)
            self.fingerprint, self.structure = fp.fingerprint, fp.structure
            return fp.fingerprint, fp.structure

        def recorded_structure(fingerprint: str) -> str | None:
            known = self.reg.find_base(fingerprint)
            return known.structure if known is not None else None

        return check_compatibility(self.adapter, self.ckpt, fingerprint_base,
                                   self.info.base_fingerprint, recorded_structure, self.figures)

    def health(self) -> CheckResult:
        return check_health(self.adapter, self.ckpt, self.figures, self.opts.outlier_factor)

    def quality(self) -> CheckResult:
        from registry.validation import forward as fw
        from registry.validation.evaldata import tokenize

        self.device = fw.resolve_device(self.opts.device)
        self.dtype = fw.resolve_dtype(self.opts.dtype, self.device)
        self.device_label = fw.device_name(self.device)
        self.not_loadable = _why_not_loaded(self.adapter)
        if self.not_loadable:
            return CheckResult("quality", "skipped", f"skipped: {self.not_loadable}")
        base_model = fw.load_causal_lm(self.base, self.device, self.dtype)
        length = fw.max_positions(base_model, self.opts.max_length)
        tokens = tokenize(self.texts.texts, self.base, fw.vocab_size(base_model), length)
        self.tokenizer = tokens.tokenizer
        self.samples = len(tokens.sequences)
        if not tokens.sequences:
            raise UsageError("no eval text is two tokens or longer")
        self.batches = fw.make_batches(tokens.sequences, EVAL_BATCH, self.device)
        self.model = fw.attach_adapter(base_model, self.adapter_dir)  # type: ignore[arg-type]
        with self.model.disable_adapter():
            base_sum, count = fw.sum_loss(self.model, self.batches)
        adapted_sum, _ = fw.sum_loss(self.model, self.batches)
        base_loss, loss = base_sum / count, adapted_sum / count
        base_ppl, ppl = fw.perplexity(base_loss), fw.perplexity(loss)
        f = self.figures
        f.update(eval_samples=self.samples, eval_tokens=count, base_loss=base_loss, loss=loss,
                 base_ppl=base_ppl, ppl=ppl, ppl_ratio=ppl / base_ppl if base_ppl else None)
        return CheckResult(
            "quality", "passed",
            f"ppl {_fmt(f['ppl'])} with the adapter vs {_fmt(f['base_ppl'])} for the base "
            f"({count} tokens of {self.texts.dataset})",
            {"dataset": self.texts.dataset, "tokenizer": self.tokenizer,
             "max_length": length, "device": self.device, "dtype": self.dtype})

    def performance(self) -> CheckResult:
        from registry.validation import forward as fw

        if self.not_loadable:
            return CheckResult("performance", "skipped", f"skipped: {self.not_loadable}")
        assert self.model is not None and self.device is not None
        p = self.opts.perf
        length = fw.max_positions(self.model, p.length)
        m = fw.measure_forward(self.model, vocab=fw.vocab_size(self.model), batch=p.batch,
                               length=length, device=self.device, repeats=p.repeats)
        self.figures["tokens_per_s"] = m.tokens_per_s
        self.figures["latency_ms"] = m.latency_ms
        self.figures["peak_mem_mb"] = m.peak_mem_mb
        return CheckResult(
            "performance", "passed",
            f"{m.tokens_per_s:,.0f} tokens/s at batch {m.batch} x {m.length} on "
            f"{self.device_label}; peak memory {m.peak_mem_mb:,.0f} MiB ({m.peak_mem_kind})",
            {"batch": m.batch, "length": m.length, "repeats": m.repeats,
             "peak_mem_kind": m.peak_mem_kind, "device": self.device,
             "device_name": self.device_label, "dtype": self.dtype,
             "model": "base + adapter (PEFT, unmerged)"})

    def parity(self) -> CheckResult:
        from registry.validation import forward as fw

        if self.not_loadable:
            return CheckResult("parity", "skipped", f"skipped: {self.not_loadable}")
        assert self.model is not None and self.device is not None and self.dtype is not None
        parity_batches = fw.make_batches(
            [row[mask.bool()].tolist() for ids, mask in self.batches for row, mask in
             zip(ids.cpu(), mask.cpu(), strict=True)][:PARITY_SEQUENCES],
            PARITY_SEQUENCES, self.device)
        unmerged = fw.collect_logits(self.model, parity_batches)
        if self.opts.merged is not None:
            how = f"merged model at {self.opts.merged}"
            self.model = None
            fw.release(self.device)
            merged_model = fw.load_causal_lm(self.opts.merged, self.device, self.dtype)
        else:
            assert self.adapter_dir is not None
            merged_model, how = fw.merge_unmerged(self.model, self.adapter_dir, self.base)
            self.model = None
        merged = fw.collect_logits(merged_model, parity_batches)
        max_abs, mean_abs = fw.logit_difference(unmerged, merged)
        self.figures["parity_max_abs"] = max_abs
        self.figures["parity_mean_abs"] = mean_abs
        details: dict[str, Any] = {"merged_with": how, "positions": int(unmerged.shape[0])}
        summary = (f"unmerged vs merged logits: max |diff| {max_abs:.3g}, mean {mean_abs:.3g} "
                   f"({how})")
        if self.opts.quantized is not None:
            del merged_model
            fw.release(self.device)
            quant_model = fw.load_causal_lm(self.opts.quantized, self.device, self.dtype)
            quant = fw.collect_logits(quant_model, parity_batches)
            del quant_model
            kl, agree = fw.kl_and_top1(merged, quant)
            self.figures["kl_quant"] = kl
            self.figures["quant_top1_agree"] = agree
            details["quantized"] = str(self.opts.quantized)
            summary += f"; merged vs quantized: KL {kl:.3g}, top-1 agreement {agree:.1%}"
        return CheckResult("parity", "passed", summary, details)

    def close(self) -> None:
        self.model = None
        self.batches = []
        if self.device is not None:
            from registry.validation.forward import release

            release(self.device)


def _why_not_loaded(adapter: Any) -> str | None:
    """Why quality, performance and parity do not apply to this adapter, or None."""
    if adapter.peft_type in PROMPT_METHODS:
        return (f"{adapter.method} adds virtual tokens, not weights: quality, performance and "
                "parity compare weight adapters")
    task = adapter.task_type
    if task not in (None, "CAUSAL_LM"):
        return f"task type {task}: perplexity and logit parity need a CAUSAL_LM adapter"
    return None


def _no_progress(done: int, total: int | None) -> None:
    pass


def _evaluate(gate: Gate, name: str | None, figures: Mapping[str, float | None]) -> GateResult:
    values = {n: figures.get(n) for n in gate.names}
    try:
        ok = gate.evaluate(figures)
    except MissingFigure as missing:
        check = FIGURES[missing.name].check
        return GateResult(gate.expr, "error", values, name,
                          f"{missing.name} was not measured (the {check} check did not run)")
    except ZeroDivisionError:
        return GateResult(gate.expr, "error", values, name, "division by zero")
    return GateResult(gate.expr, "passed" if ok else "failed", values, name)


def _report(state: _RunState, run_id: int | None, checks: list[CheckResult],
            gates: list[GateResult], started: datetime, status: str,
            error: AdaptError | None) -> ValidationReport:
    ran = {c.name for c in checks}
    checks = checks + [CheckResult(n, "skipped", "skipped: the run stopped") for n in CHECKS
                       if n not in ran]
    return ValidationReport(
        run_id=run_id,
        ref=state.info.ref,
        digest=state.info.digest,
        status=status,
        device={"type": state.device or _requested_type(state.opts.device),
                "name": state.device_label or "not used",
                "dtype": state.dtype or "not used"},
        base={"path": str(state.base.resolve()), "fingerprint": state.fingerprint,
              "structure": state.structure, "recorded_fingerprint": state.info.base_fingerprint},
        data={"source": state.texts.source, "samples": state.samples,
              "tokenizer": state.tokenizer, "max_length": state.opts.max_length},
        checks=checks,
        # NaN/Inf is not JSON; such a figure reads as unmeasured, so a gate on it fails
        figures={k: v if v is None or math.isfinite(v) else None
                 for k, v in state.figures.items()},
        gates=gates,
        started_at=started,
        finished_at=utcnow(),
        merged=str(state.opts.merged) if state.opts.merged else None,
        quantized=str(state.opts.quantized) if state.opts.quantized else None,
        error=error,
    )


def _requested_type(device: str) -> str:
    return "cuda" if device == "cuda" else "cpu"


def _start_run(reg: Registry, info: VersionInfo) -> int:
    """Insert the run as `running` first, so a killed run still leaves a trace."""
    with reg.session() as s:
        row = ValidationRun(version_id=info.id, base_fingerprint=None, status="running")
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


def _finish_run(reg: Registry, run_id: int, report: ValidationReport) -> None:
    data = report.to_dict()
    with reg.session() as s:
        row = s.get(ValidationRun, run_id)
        assert row is not None
        row.status = report.status
        row.device = (f"{report.device['type']}:{report.device['name']}"
                      if report.device["name"] != "not used" else report.device["type"])
        row.base_fingerprint = report.base["fingerprint"]
        row.checks = {c["name"]: {k: v for k, v in c.items() if k != "name"}
                      for c in data["checks"]}
        row.figures = data["figures"]
        row.gates = data["gates"]
        row.report = data
        row.finished_at = report.finished_at
        s.add(row)
        dataset = report.data["source"]
        dataset = Path(dataset).name if "/" in dataset else dataset
        for name, value in report.figures.items():
            if value is None or not FIGURES[name].score:
                continue
            s.add(EvalScore(version_id=row.version_id, metric=f"validate.{name}",
                            dataset=dataset if FIGURES[name].check == "quality" else None,
                            value=float(value), base_fingerprint=row.base_fingerprint,
                            run_id=run_id))
        s.commit()


def list_runs(reg: Registry, ref: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Past runs of one version, newest first: status, device, times, figures, gates."""
    from sqlalchemy import select

    info = reg.resolve(ref)
    with reg.session() as s:
        q = (select(ValidationRun)
             .where(ValidationRun.version_id == info.id)  # type: ignore[arg-type]
             .order_by(ValidationRun.id.desc()))  # type: ignore[union-attr]
        if limit:
            q = q.limit(limit)
        rows = s.execute(q).scalars().all()
    out = []
    for r in rows:
        gates = r.gates or []
        out.append({
            "run_id": r.id,
            "ref": info.ref,
            "status": r.status,
            "device": r.device,
            "base_fingerprint": r.base_fingerprint,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "checks": {k: v.get("status") for k, v in (r.checks or {}).items()},
            "figures": {k: v for k, v in (r.figures or {}).items() if v is not None},
            "gates": [{"expr": g["expr"], "status": g["status"]} for g in gates],
        })
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")
