"""`adapt compose` and `adapt diff` over registered versions: resolve, check out, record."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import UsageError
from registry.ops.compose import compose_lora
from registry.ops.diff import DiffReport, diff_adapters
from registry.ops.options import ComposeOptions
from registry.peft_dir import read_adapter_dir

if TYPE_CHECKING:
    from registry.registry import AddResult, Registry


def compose_versions(
    reg: Registry,
    inputs: Sequence[tuple[str, float]],
    options: ComposeOptions,
    *,
    name: str,
    on_progress: Callable[[int, int | None], None] | None = None,
    convert: bool = False,
) -> AddResult:
    """Compose registered versions and register the result with its lineage and recipe.

    inputs: (reference, weight) pairs.
    convert: turn non-LoRA inputs (LoHa, LoKr, VeRA, AdaLoRA, ...) into LoRAs first
        (`adapt convert`'s exact path where the delta has one), recording each conversion's
        error in the recipe and lineage.
    Raises UsageError when inputs were recorded against different base models.
    """
    from registry import __version__
    from registry.registry import ParentLink

    infos = [reg.resolve(ref) for ref, _ in inputs]
    fps = {i.base_fingerprint for i in infos if i.base_fingerprint}
    if len(fps) > 1:
        raise UsageError(
            "inputs were recorded against different base models: "
            + ", ".join(f"{i.ref}={(i.base_fingerprint or '?')[:12]}" for i in infos),
            "compose adapters of the same base",
        )
    weights = [float(w) for _, w in inputs]
    with tempfile.TemporaryDirectory(prefix="adapt-compose-") as tmp:
        adapters = [read_adapter_dir(reg.checkout(i)) for i in infos]
        conversions: list[dict[str, object] | None] = [None] * len(adapters)
        if convert:
            from registry.flows.extract import _base_shapes
            from registry.ops.convert import ConvertOptions, convert_to_lora

            for k, (info, adapter) in enumerate(zip(infos, adapters, strict=True)):
                if adapter.method == "LORA":
                    continue
                converted = convert_to_lora(adapter, Path(tmp) / f"converted-{k}",
                                            ConvertOptions(),
                                            base_shapes=_base_shapes(reg, info))
                adapters[k] = read_adapter_dir(converted.out_dir)
                conversions[k] = {"from": info.method, "exact": converted.exact,
                                  "max_rel_error": converted.max_rel_error}
        out = Path(tmp) / name
        compose_lora(adapters, weights, options, out_dir=out, on_progress=on_progress)
        recipe = {
            "method": options.method,
            "inputs": [{"ref": i.ref, "weight": w, "digest": i.digest,
                        **({"converted": c} if c else {})}
                       for i, w, c in zip(infos, weights, conversions, strict=True)],
            "rank": options.rank,
            "density": options.density,
            "seed": options.recorded_seed,
            "adapt_version": __version__,
        }
        parents = [ParentLink(i.ref, w, role="compose-input",
                              params={"digest": i.digest, **({"converted": c} if c else {})})
                   for i, w, c in zip(infos, weights, conversions, strict=True)]
        return reg.add(out, name=name, parents=parents, recipe=recipe,
                       base_fingerprint=fps.pop() if fps else None,
                       source=f"compose:{options.method}")


def diff_versions(reg: Registry, ref_a: str, ref_b: str) -> DiffReport:
    """Compare two registered versions (checked out, verified)."""
    ia, ib = reg.resolve(ref_a), reg.resolve(ref_b)
    result = diff_adapters(read_adapter_dir(reg.checkout(ia)), read_adapter_dir(reg.checkout(ib)))
    return DiffReport(ia.ref, ib.ref, result["modules"], result["summary"])
