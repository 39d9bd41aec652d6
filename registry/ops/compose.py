"""Compose LoRA adapters on their true deltas and write the result as a PEFT LoRA directory.

PEFT's add_weighted_adapter combines A and B factors separately (adding cross terms B_i A_j)
and needs equal ranks; here every method works on sum_i w_i * scale_i * B_i @ A_i:

- cat: the exact sum as concatenated factors (rank = sum of ranks).
- svd: the best rank-R approximation of the sum, from the factored SVD (never m x n).
- linear: the same sum re-ranked; without a rank it keeps the sum's numerical rank (exact).
- ties, dare_linear, dare_ties, magnitude_prune: PEFT's merge_utils algorithms on the dense
  per-module deltas (one module at a time), then factored back to rank R. DARE's masks come
  from a seeded torch.Generator, never the global RNG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import UnsupportedMethod, UsageError
from registry.ops.lora_algebra import (
    LoraFactors,
    concat_factors,
    dense_to_factors,
    factored_svd,
    numerical_rank,
    read_lora_factors,
    truncate,
)
from registry.ops.options import (
    COMPOSE_METHODS,
    DENSE_METHODS,
    FACTORED_METHODS,
    ComposeOptions,
)
from registry.peft_dir import AdapterDir, load_tensors

if TYPE_CHECKING:
    import torch

__all__ = ["DENSE_METHODS", "FACTORED_METHODS", "METHODS", "RECIPE_SCHEMA", "ComposeOptions",
           "ComposeResult", "combine_dense", "compose_lora"]

METHODS = COMPOSE_METHODS
MAX_COMPOSE_RANK = 65536  # above any layer's width in practice; 1e20 is refused, not allocated

RECIPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "adapt compose recipe",
    "description": "Inputs, weights and method for `adapt compose -f recipe.yaml`.",
    "type": "object",
    "required": ["inputs", "method", "name"],
    "additionalProperties": False,
    "properties": {
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["ref"],
                "additionalProperties": False,
                "properties": {
                    "ref": {"type": "string", "minLength": 1},
                    "weight": {"type": "number", "default": 1.0},
                },
            },
        },
        "method": {"type": "string", "enum": list(METHODS)},
        "rank": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_COMPOSE_RANK},
        "density": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**63 - 1},
        "name": {"type": "string", "minLength": 1},
    },
}


@dataclass
class ComposeResult:
    """What compose_lora wrote: per-module ranks and relative truncation errors."""

    out_dir: Path
    method: str
    ranks: dict[str, int] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir), "max_error": self.max_error}


# -- dense combinations (PEFT merge_utils semantics) ---------------------------------------
def _prune_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    import torch

    if density >= 1:
        return t
    k = int(density * t.numel())
    mask = torch.zeros(t.numel(), dtype=t.dtype)
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True)[1]] = 1
    return t * mask.reshape(t.shape)


def _prune_random(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    import torch

    if density >= 1:
        return t
    mask = torch.bernoulli(torch.full_like(t, density), generator=generator)
    return t * mask / density


def combine_dense(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    method: str,
    density: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One module's combined delta, as peft.utils.merge_utils computes it.

    deltas: the inputs' dense (out, in) deltas (zeros where an input does not target the module).
    generator: DARE's mask source; masks are drawn input by input, in order, like PEFT.
    """
    import torch

    if method not in DENSE_METHODS:
        raise UsageError(f"{method!r} is not a dense method", f"use one of {DENSE_METHODS}")
    if method.startswith("dare"):
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        pruned = [_prune_random(d, density, gen) for d in deltas]
    else:
        pruned = [_prune_magnitude(d, density) for d in deltas]
    stacked = torch.stack(pruned, dim=0)
    w = torch.tensor(list(weights), dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    weighted = stacked * w
    if method in {"magnitude_prune", "dare_linear"}:
        return weighted.sum(dim=0)
    # TIES sign election on the unweighted pruned deltas, then the disjoint mean (as PEFT does)
    majority = torch.where(stacked.sum(dim=0) >= 0, 1, -1)
    mask = stacked.sign() == majority
    kept = (weighted * mask).sum(dim=0)
    return kept / torch.clamp(mask.sum(dim=0), min=1.0)


# -- composition -----------------------------------------------------------------------------
def compose_lora(
    adapters: Sequence[AdapterDir],
    weights: Sequence[float],
    options: ComposeOptions,
    *,
    out_dir: Path,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ComposeResult:
    """Write the weighted composition of LoRA adapters to `out_dir` as a PEFT LoRA directory.

    options: method, rank (svd default: the largest input rank; linear default: the sum's
        numerical rank; dense methods default: the largest input rank; none for cat), density
        (fraction kept by ties / dare_* / magnitude_prune), seed (DARE's mask seed, default 0,
        so a recipe reproduces bit for bit).
    """
    import torch
    from safetensors.torch import save_file

    method, rank, density, seed = options.method, options.rank, options.density, options.seed
    if not adapters:
        raise UsageError("compose needs at least one input adapter")
    if len(weights) != len(adapters):
        raise UsageError(f"{len(adapters)} inputs but {len(weights)} weights")
    factors: list[dict[str, LoraFactors]] = []
    for adapter in adapters:
        f = read_lora_factors(adapter, load_tensors(adapter), "composed")
        for lf in f.values():
            if lf.embedding:
                raise UnsupportedMethod("LORA (embedding)", "composed",
                                        f"module {lf.module} is an Embedding LoRA; adapt "
                                        "composes Linear LoRA modules only")
        factors.append(f)
    modules = sorted({m for f in factors for m in f})
    for module in modules:
        shapes = {f[module].shape for f in factors if module in f}
        if len(shapes) > 1:
            raise UsageError(f"inputs disagree on module {module}'s shape: {sorted(shapes)}",
                             "compose adapters trained on the same base")
    max_rank = max(lf.rank for f in factors for lf in f.values())
    generator = torch.Generator().manual_seed(seed if seed is not None else 0)
    result = ComposeResult(out_dir=Path(out_dir), method=method)
    tensors: dict[str, torch.Tensor] = {}
    for i, module in enumerate(modules):
        present = [(f[module], w) for f, w in zip(factors, weights, strict=True) if module in f]
        err = 0.0
        if method in FACTORED_METHODS:
            b, a = concat_factors([(lf.b, lf.a, w * lf.scale) for lf, w in present])
            if method != "cat":
                svd = factored_svd(b, a)
                r = rank or (numerical_rank(svd.s) if method == "linear" else max_rank)
                b, a, err = truncate(svd, r)
        else:
            shape = present[0][0].shape
            deltas = [
                f[module].scale * (f[module].b @ f[module].a) if module in f else torch.zeros(shape)
                for f in factors
            ]
            assert density is not None
            dense = combine_dense(deltas, weights, method, density, generator)
            b, a, err = dense_to_factors(dense, rank or max_rank, generator)
        key = f"base_model.model.{module}"
        tensors[f"{key}.lora_A.weight"] = a.float().contiguous()
        tensors[f"{key}.lora_B.weight"] = b.float().contiguous()
        result.ranks[module] = int(a.shape[0])
        result.errors[module] = err
        if on_progress:
            on_progress(i + 1, len(modules))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(
        json.dumps(_config(adapters, result.ranks), indent=2, sort_keys=True) + "\n"
    )
    return result


def _config(adapters: Sequence[AdapterDir], ranks: dict[str, int]) -> dict[str, Any]:
    """A PEFT LoraConfig with scale 1 (alpha = r) and rank_pattern where ranks differ."""
    from collections import Counter

    r = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {m: k for m, k in ranks.items() if k != r}
    task_types = {a.task_type for a in adapters if a.task_type}
    return {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": {m: float(k) for m, k in pattern.items()},
        "target_modules": sorted(ranks),
        "base_model_name_or_path": adapters[0].base_model,
        "task_type": task_types.pop() if len(task_types) == 1 else None,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }
