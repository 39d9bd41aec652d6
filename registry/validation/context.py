"""What every check receives (`ValidationContext`) and the checks registered by name.

A check is a function `run(ctx) -> CheckResult` registered with `@register_check(name)`; a run
calls them in the order of `figures.CHECKS`. A check records what it measured in `ctx.figures`,
and what later checks need (the checked-out adapter, the loaded model) on the context. It raises
an AdaptError for a failed check (IntegrityError, IncompatibleBase, NonFiniteTensor) or a
problem that stops the run; the run turns that into the check's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.validation.figures import CHECKS, FIGURES

if TYPE_CHECKING:
    from registry.checkpoint import Checkpoint
    from registry.peft_dir import AdapterDir
    from registry.registry import Registry, VersionInfo
    from registry.validation.evaldata import EvalTexts
    from registry.validation.forward import Batch
    from registry.validation.options import ValidationOptions
    from registry.validation.results import CheckResult


@dataclass(frozen=True)
class Device:
    """Where the model checks run: torch device, dtype, and the hardware's name."""

    type: str  # cpu | cuda
    dtype: str
    name: str


@dataclass
class LoadedModel:
    """Base + adapter (PEFT, unmerged) and the eval batches, shared by quality, performance and
    parity; released when the run ends."""

    model: Any
    batches: list[Batch]


@dataclass
class ValidationContext:
    """The inputs of one run and what its checks hand on to each other."""

    reg: Registry
    info: VersionInfo
    options: ValidationOptions
    ckpt: Checkpoint
    texts: EvalTexts
    figures: dict[str, float | None] = field(
        default_factory=lambda: dict.fromkeys(FIGURES))
    adapter_dir: Path | None = None  # the verified checkout (integrity)
    adapter: AdapterDir | None = None  # its parsed files (compatibility)
    fingerprint: str | None = None  # of the base, once compatibility read it
    structure: str | None = None
    device: Device | None = None  # set by the first check that loads a model
    tokenizer: str = "not used (no model loaded)"  # what turned the eval texts into ids
    samples: int = 0  # eval texts of two tokens or more
    loaded: LoadedModel | None = None
    not_loadable: str | None = None  # why the model checks do not apply to this adapter

    @property
    def base(self) -> Path:
        return self.options.base

    def require_adapter(self) -> tuple[Path, AdapterDir]:
        assert self.adapter_dir is not None and self.adapter is not None, (
            "integrity and compatibility run first")
        return self.adapter_dir, self.adapter

    def release(self) -> None:
        """Drop the loaded model and give its memory back."""
        self.loaded = None
        if self.device is not None:
            from registry.validation.forward import release

            release(self.device.type)


CheckFn = Callable[[ValidationContext], "CheckResult"]
_CHECKS: dict[str, CheckFn] = {}


def register_check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register `run(ctx) -> CheckResult` as the check called `name` (one of figures.CHECKS)."""
    if name not in CHECKS:
        raise ValueError(f"{name!r} is not a known check; add it to figures.CHECKS")

    def register(run: CheckFn) -> CheckFn:
        if name in _CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        _CHECKS[name] = run
        return run

    return register


def registered_checks() -> list[tuple[str, CheckFn]]:
    """Every check, in run order (registry.validation.run imports the modules that register)."""
    missing = [n for n in CHECKS if n not in _CHECKS]
    assert not missing, f"checks without an implementation: {missing}"
    return [(name, _CHECKS[name]) for name in CHECKS]
