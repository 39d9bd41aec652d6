"""The checks that need no model loaded: integrity, compatibility (headers only), health.

Each is a pure function over files and figures (`check_integrity`, `check_compatibility`,
`check_health`), registered as a check by a small `run(ctx)` wrapper below.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import Checkpoint
from registry.compat import check_compatible
from registry.errors import IntegrityError, NonFiniteTensor
from registry.hashing import CHUNK
from registry.peft_dir import PROMPT_METHODS, AdapterDir, read_adapter_dir
from registry.validation.context import ValidationContext, register_check
from registry.validation.results import CheckResult

if TYPE_CHECKING:
    import torch

    from registry.registry import FileInfo


@register_check("integrity")
def integrity(ctx: ValidationContext) -> CheckResult:
    """Hash every file of the version, in the store and in the checkout that gets loaded."""
    checkout = None
    try:
        checkout = ctx.reg.checkout(ctx.info)
    except IntegrityError:
        pass  # reported below, file by file
    result = check_integrity(ctx.info.ref, ctx.info.files, ctx.reg.store.path, checkout,
                             ctx.figures)
    ctx.adapter_dir = checkout
    return result


@register_check("compatibility")
def compatibility(ctx: ValidationContext) -> CheckResult:
    """Shapes against the base's headers, then the base fingerprint against the recorded one."""
    assert ctx.adapter_dir is not None, "integrity runs first"
    ctx.adapter = read_adapter_dir(ctx.adapter_dir)

    def fingerprint_base() -> tuple[str, str]:
        fp = ctx.reg.fingerprint(ctx.base)
        ctx.fingerprint, ctx.structure = fp.fingerprint, fp.structure
        return fp.fingerprint, fp.structure

    def recorded_structure(fingerprint: str) -> str | None:
        known = ctx.reg.find_base(fingerprint)
        return known.structure if known is not None else None

    return check_compatibility(ctx.adapter, ctx.ckpt, fingerprint_base,
                               ctx.info.base_fingerprint, recorded_structure, ctx.figures)


@register_check("health")
def health(ctx: ValidationContext) -> CheckResult:
    """NaN/Inf in the adapter's tensors, and the norm of each module's delta weight."""
    _, adapter = ctx.require_adapter()
    return check_health(adapter, ctx.ckpt, ctx.figures, ctx.options.outlier_factor)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_integrity(ref: str, files: Sequence[FileInfo], blob_path: Callable[[str], Path],
                    checkout: Path | None, figures: dict[str, float | None]) -> CheckResult:
    """Every file of version `ref`: its store blob, and the checked-out copy that gets loaded.

    blob_path: sha256 -> the blob's path in the store.
    Raises IntegrityError naming the first bad file, after recording the figures.
    """
    bad: list[dict[str, str | None]] = []
    for f in files:
        blob = blob_path(f.sha256)
        actual = _sha256_file(blob) if blob.is_file() else None
        if actual != f.sha256:
            bad.append({"file": f.path, "where": "store", "expected": f.sha256,
                        "actual": actual or "missing blob"})
        if checkout is not None:
            copy = checkout / f.path
            got = _sha256_file(copy) if copy.is_file() else None
            if got != f.sha256:
                bad.append({"file": f.path, "where": "checkout", "expected": f.sha256,
                            "actual": got or "missing file"})
    figures["files_checked"] = len(files)
    figures["files_bad"] = len({b["file"] for b in bad})
    if bad:
        first = bad[0]
        raise IntegrityError(f"{ref}/{first['file']} ({first['where']})",
                             first["expected"], first["actual"])
    return CheckResult("integrity", "passed",
                       f"{len(files)} files match their recorded sha256",
                       {"files": [{"path": f.path, "sha256": f.sha256} for f in files]})


def check_compatibility(adapter: AdapterDir, ckpt: Checkpoint,
                        fingerprint_base: Callable[[], tuple[str, str]], recorded: str | None,
                        recorded_structure: Callable[[str], str | None],
                        figures: dict[str, float | None]) -> CheckResult:
    """Shapes from safetensors headers (raises IncompatibleBase), then fingerprint agreement.

    fingerprint_base: () -> (fingerprint, structure) of the base; called only once the shapes
        fit, since it reads every byte of the base.
    recorded_structure: fingerprint -> structure signature of a registered base, or None.
    """
    figures["modules_checked"] = len(adapter.modules)
    check_compatible(adapter, ckpt)
    fingerprint, structure = fingerprint_base()
    recorded_struct = recorded_structure(recorded) if recorded is not None else None
    details: dict[str, Any] = {"fingerprint": fingerprint, "recorded_fingerprint": recorded,
                               "structure": structure,
                               "recorded_structure": recorded_struct}
    shapes = f"{len(adapter.modules)} adapted modules fit the base"
    if recorded is None:
        figures["fingerprint_match"] = None
        figures["structure_match"] = None
        return CheckResult("compatibility", "passed",
                           f"{shapes}; the version has no recorded base fingerprint", details)
    if recorded == fingerprint:
        figures["fingerprint_match"] = 1
        figures["structure_match"] = 1
        return CheckResult("compatibility", "passed", f"{shapes}; base fingerprint matches",
                           details)
    figures["fingerprint_match"] = 0
    if recorded_struct is None:
        figures["structure_match"] = None
        why = "the recorded base is not registered, so its structure is unknown"
    elif recorded_struct == structure:
        figures["structure_match"] = 1
        why = "structure signature matches (same architecture and shapes, different weights)"
    else:
        figures["structure_match"] = 0
        why = "structure signature differs too"
    return CheckResult("compatibility", "warn",
                       f"{shapes}; base fingerprint differs from the recorded one: {why}",
                       details)


def check_health(adapter: AdapterDir, ckpt: Checkpoint, figures: dict[str, float | None],
                 outlier_factor: float = 10.0) -> CheckResult:
    """NaN/Inf in any adapter tensor (raises NonFiniteTensor), delta norms with outliers named."""
    import torch

    from registry.peft_dir import load_tensors

    tensors = load_tensors(adapter)
    nonfinite = {k: int((~torch.isfinite(t)).sum()) for k, t in tensors.items()
                 if t.is_floating_point()}
    bad = {k: n for k, n in nonfinite.items() if n}
    figures["nonfinite"] = sum(bad.values())
    if bad:
        key = next(iter(bad))
        raise NonFiniteTensor(adapter.path, key, bad[key])
    norms, rel, unsupported = module_delta_norms(adapter, ckpt, tensors)
    details: dict[str, Any] = {"delta_norms": {m: round(v, 6) for m, v in norms.items()},
                               "outlier_factor": outlier_factor}
    if not norms:
        for name in ("delta_norm_max", "delta_norm_median", "delta_rel_max", "delta_outliers"):
            figures[name] = None
        reason = unsupported or f"{adapter.method} has no weight deltas"
        return CheckResult("health", "passed", f"no NaN/Inf in {len(tensors)} tensors; {reason}",
                           details)
    median = statistics.median(norms.values())
    outliers = sorted(m for m, v in norms.items() if median > 0 and v > outlier_factor * median)
    figures["delta_norm_max"] = max(norms.values())
    figures["delta_norm_median"] = median
    figures["delta_rel_max"] = max(rel.values()) if rel else None
    figures["delta_outliers"] = len(outliers)
    details["outliers"] = {m: round(norms[m], 6) for m in outliers}
    summary = (f"no NaN/Inf in {len(tensors)} tensors; delta norm median {median:.4g}, "
               f"max {max(norms.values()):.4g}")
    if outliers:
        shown = ", ".join(outliers[:3]) + (" ..." if len(outliers) > 3 else "")
        return CheckResult("health", "warn",
                           f"{summary}; {len(outliers)} outlier module(s) over "
                           f"{outlier_factor:g}x the median: {shown}", details)
    return CheckResult("health", "passed", summary, details)


def module_delta_norms(adapter: AdapterDir, ckpt: Checkpoint,
                       tensors: dict[str, torch.Tensor]
                       ) -> tuple[dict[str, float], dict[str, float], str | None]:
    """Per module: ||delta W||_F, and ||delta W|| / ||W|| where the base has the weight.

    Deltas come from registry.ops.deltas.delta_weight (the math merge uses), one module at a
    time with its base weight read alone. Returns (norms, relative norms, why none were
    computed or None).
    """
    from safetensors import safe_open

    from registry.errors import UnsupportedMethod
    from registry.ops.deltas import check_mergeable, delta_weight, module_factors

    if adapter.peft_type in PROMPT_METHODS:
        return {}, {}, f"{adapter.method} has no weight deltas"
    try:
        check_mergeable(adapter)
    except UnsupportedMethod as error:
        return {}, {}, f"no delta norms: {error}"
    factors = module_factors(adapter, tensors)
    files = ckpt.file_of()
    norms: dict[str, float] = {}
    rel: dict[str, float] = {}
    from registry.keymap import key_map, module_tensor_name

    km = key_map(adapter, ckpt)  # the checkpoint may name modules otherwise (prefix, layout)
    for module in adapter.modules:
        key = km.checkpoint_name(module_tensor_name(adapter, module)) or f"{module}.weight"
        base_weight = None
        if key in files:
            with safe_open(str(files[key]), framework="pt") as f:
                base_weight = f.get_tensor(key).float()
        delta = delta_weight(adapter, module, factors[module], base_weight)
        norms[module] = float(delta.double().norm())
        if base_weight is not None:
            base_norm = float(base_weight.double().norm())
            if base_norm > 0:
                rel[module] = norms[module] / base_norm
    return norms, rel, None
