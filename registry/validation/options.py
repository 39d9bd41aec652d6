"""`ValidationOptions`: everything a run is told, merged from arguments and a spec, checked once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import UsageError
from registry.validation.figures import NEEDS_OPTION
from registry.validation.forward import DTYPES
from registry.validation.gates import Gate, parse_gate
from registry.validation.spec import GateSpec, PerfSettings, ValidationSpec, load_spec

DEVICES = ("auto", "cuda", "cpu")
DEFAULT_MAX_LENGTH = 128
DEFAULT_OUTLIER_FACTOR = 10.0


@dataclass(frozen=True)
class NamedGate:
    """A parsed gate and the name a spec gave it (None for a --gate)."""

    gate: Gate
    name: str | None = None


@dataclass(frozen=True)
class ValidationOptions:
    """How to validate a version, checked when built (UsageError), before anything runs.

    base: the base model directory the adapter is loaded onto.
    merged: a merged model to compare logits with; None merges on the fly.
    quantized: a quantized model; its KL divergence from the merged model is measured.
    data: JSONL with a `text` field or plain text; None uses the default set shipped with adapt.
    gates: expressions such as "ppl <= 1.05 * base_ppl" (see registry.validation.figures), or
        GateSpecs with a name.
    """

    base: Path
    merged: Path | None = None
    quantized: Path | None = None
    data: Path | None = None
    device: str = "auto"
    dtype: str | None = None
    gates: tuple[GateSpec, ...] = ()
    max_samples: int | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    outlier_factor: float = DEFAULT_OUTLIER_FACTOR
    perf: PerfSettings = field(default_factory=PerfSettings)
    parsed_gates: tuple[NamedGate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # accept str paths and plain gate strings; store Paths and GateSpecs
        for name in ("base", "merged", "quantized", "data"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        specs = tuple(g if isinstance(g, GateSpec) else GateSpec(str(g)) for g in self.gates)
        object.__setattr__(self, "gates", specs)
        if self.device not in DEVICES:
            raise UsageError(f"unknown device {self.device!r}", "use auto, cuda or cpu")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}", "use float32, bfloat16 or float16")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"max_samples must be at least 1, not {self.max_samples}")
        if self.max_length < 2:
            raise UsageError(f"max_length must be at least 2, not {self.max_length}")
        if not self.outlier_factor > 1:
            raise UsageError(f"outlier_factor must be over 1, not {self.outlier_factor}")
        p = self.perf
        if min(p.batch, p.length, p.repeats) < 1:
            raise UsageError(f"performance batch, length and repeats must be at least 1, "
                             f"not {p.batch}, {p.length}, {p.repeats}")
        parsed = tuple(NamedGate(parse_gate(g.expr), g.name) for g in specs)
        for named in parsed:
            for figure in named.gate.names:
                if figure in NEEDS_OPTION and self.quantized is None:
                    raise UsageError(f"gate {named.gate.expr!r} uses {figure}, which needs "
                                     f"{NEEDS_OPTION[figure]}")
        object.__setattr__(self, "parsed_gates", parsed)

    @classmethod
    def build(
        cls,
        base: str | Path,
        *,
        merged: str | Path | None = None,
        quantized: str | Path | None = None,
        data: str | Path | None = None,
        device: str = "auto",
        dtype: str | None = None,
        gates: Iterable[str | GateSpec] = (),
        spec: str | Path | Mapping[str, Any] | ValidationSpec | None = None,
        max_samples: int | None = None,
        perf: PerfSettings | None = None,
    ) -> ValidationOptions:
        """Options from command-line style arguments and a spec (file, dict or loaded).

        Arguments win over the spec; gates from both are kept (the spec's first).
        """
        sp = spec if isinstance(spec, ValidationSpec) else (
            load_spec(spec) if spec is not None else ValidationSpec())
        return cls(
            base=Path(base),
            merged=Path(merged) if merged is not None else sp.merged,
            quantized=Path(quantized) if quantized is not None else sp.quantized,
            data=Path(data) if data is not None else sp.data,
            device=device if device != "auto" or sp.device is None else sp.device,
            dtype=dtype if dtype is not None else sp.dtype,
            gates=(*sp.gates, *(g if isinstance(g, GateSpec) else GateSpec(g) for g in gates)),
            max_samples=max_samples if max_samples is not None else sp.max_samples,
            max_length=sp.max_length or DEFAULT_MAX_LENGTH,
            outlier_factor=sp.outlier_factor or DEFAULT_OUTLIER_FACTOR,
            perf=perf or sp.performance or PerfSettings(),
        )
