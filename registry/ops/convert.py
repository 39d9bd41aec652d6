"""Convert an adapter of another PEFT method to a plain LoRA, exactly where the math allows.

Per module, the additive delta is brought to a factored form and re-ranked from its exact SVD:
- LoHa: (B1 A1) * (B2 A2) is exactly (B1 o B2)(A1 o A2) with Khatri-Rao factors (rank <= r^2);
- LoKr: kron(w1, w2) has the SVD kron(U1, U2) kron(S1, S2) kron(V1, V2)^T, so its best
  rank-R truncation picks the R largest products s1_i s2_j (no dense matrix);
- AdaLoRA: B (A * E) with its scale; VeRA: its scaled shared projections (rank <= r, sliced to
  the base's shapes); VB-LoRA: its bank mixtures (rank <= r);
- every other additive method (FourierFT, SHiRA, C3A, MiSS, RandLoRA): the dense delta,
  truncated by the same randomized range finder as extraction, with the error measured.
With neither a rank nor an energy, the numerical rank is kept: exact up to float32 rounding.
Methods that multiply or replace the base weight (DoRA, IA3, OFT, BOFT, HRA, LN tuning) have no
delta without the base and are refused: merging them is exact, converting is not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import AlreadyExists, UnsupportedMethod, UsageError
from registry.ops.deltas import (
    check_mergeable,
    delta_weight,
    lokr_kron_factors,
    lowrank_delta_factors,
    module_factors,
)
from registry.ops.extract import low_rank_factors, write_lora_dir
from registry.ops.lora_algebra import RANK_RTOL, FactoredSVD, energy_rank, factored_svd, truncate
from registry.ops.options import check_rank_budget
from registry.peft_dir import AdapterDir, load_tensors

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int | None], None]

# Methods whose delta depends on the base weight: a LoRA can stand for them only after a merge.
MULTIPLICATIVE = {"IA3": "it scales the base weight", "OFT": "it rotates the base weight",
                  "BOFT": "it rotates the base weight", "HRA": "it reflects the base weight",
                  "LN_TUNING": "it replaces norm layers, which a LoRA does not adapt"}


@dataclass(frozen=True)
class ConvertOptions:
    """rank: the LoRA rank per module; energy: the fraction of ||delta||^2 to keep; neither:
    keep the numerical rank (exact). max_rank caps what energy picks."""

    rank: int | None = None
    energy: float | None = None
    max_rank: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rank is not None and self.energy is not None:
            raise UsageError("give at most one of --rank and --energy")
        check_rank_budget(self.rank, self.energy, self.max_rank)


@dataclass
class ModuleConversion:
    module: str
    rank: int
    exact_rank: int | None  # the delta's rank when its factored form gives it
    energy: float
    rel_error: float
    path: str  # "factored", "kron" or "dense"


@dataclass
class ConvertResult:
    out_dir: Path
    source_method: str
    rank: int
    rank_pattern: dict[str, int]
    modules: list[ModuleConversion]
    options: ConvertOptions
    seconds: float

    @property
    def max_rel_error(self) -> float:
        return max((m.rel_error for m in self.modules), default=0.0)

    @property
    def exact(self) -> bool:
        """Whether every module kept its whole delta (up to float32 rounding)."""
        return all(m.exact_rank is not None and m.rank >= m.exact_rank for m in self.modules)

    def summary(self) -> dict[str, Any]:
        return {
            "source_method": self.source_method,
            "rank": self.rank,
            "exact": self.exact,
            "max_rel_error": self.max_rel_error,
            "modules": {m.module: {"rank": m.rank, "exact_rank": m.exact_rank,
                                   "energy": round(m.energy, 8), "rel_error": round(m.rel_error, 8),
                                   "path": m.path} for m in self.modules},
            "options": asdict(self.options),
        }


def check_convertible(adapter: AdapterDir) -> None:
    """Raise unless `adapter` has an additive delta that a LoRA can carry."""
    method = adapter.method
    if method == "LORA":
        raise UsageError("the adapter is already a LoRA",
                         "re-rank it with `adapt compose REF --method svd --rank R`")
    if method == "DORA":
        raise UnsupportedMethod("DORA", "converted to LoRA",
                                "its magnitude rescales W + dW by the base weight's norms, so a "
                                "LoRA equals it only merged into that base: use `adapt merge`")
    if method in MULTIPLICATIVE:
        raise UnsupportedMethod(method, "converted to LoRA",
                                f"{MULTIPLICATIVE[method]}, so its change depends on the base; "
                                "merging it is exact: use `adapt merge`")
    check_mergeable(adapter)
    if adapter.extra_tensors and any("trainable_tokens" in k for k in adapter.extra_tensors):
        raise UnsupportedMethod(method, "converted to LoRA", "it has trainable token deltas")


def convert_to_lora(
    adapter: AdapterDir,
    out_dir: Path,
    options: ConvertOptions,
    *,
    base_shapes: Mapping[str, tuple[int, ...]] | None = None,
    on_progress: Progress | None = None,
) -> ConvertResult:
    """Write a PEFT LoRA directory at `out_dir` carrying `adapter`'s per-module deltas.

    base_shapes: the base's weight shapes by module, which VeRA and FourierFT need.
    """
    started = time.perf_counter()
    check_convertible(adapter)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise AlreadyExists(str(out_dir), "choose an empty output directory")
    tensors = load_tensors(adapter)
    factors = module_factors(adapter, tensors)
    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    modules: list[ModuleConversion] = []
    for done, (module, parts) in enumerate(factors.items(), 1):
        shape = base_shapes.get(module) if base_shapes is not None else None
        b, a, info = _convert_module(adapter, module, parts, options, shape)
        key = f"base_model.model.{module}"
        out[f"{key}.lora_A.weight"] = a
        out[f"{key}.lora_B.weight"] = b
        ranks[module] = info.rank
        modules.append(info)
        if on_progress is not None:
            on_progress(done, len(factors))
    for key, info_t in adapter.extra_tensors.items():  # modules_to_save travel unchanged
        out[f"base_model.model.{key}"] = tensors[info_t.name]
    rank, rank_pattern = write_lora_dir(
        out_dir, out, ranks, base_model=adapter.base_model, task_type=adapter.task_type,
        fan_in_fan_out=adapter.fan_in_fan_out, modules_to_save=adapter.modules_to_save or None)
    return ConvertResult(out_dir, adapter.method, rank, rank_pattern, modules, options,
                         time.perf_counter() - started)


def _convert_module(
    adapter: AdapterDir,
    module: str,
    parts: dict[str, torch.Tensor],
    options: ConvertOptions,
    shape: tuple[int, ...] | None,
) -> tuple[torch.Tensor, torch.Tensor, ModuleConversion]:
    if adapter.peft_type == "LOKR":
        w1, w2, scale = lokr_kron_factors(adapter, module, parts)
        return _from_kron(module, w1, w2, scale, options)
    pair = lowrank_delta_factors(adapter, module, parts, shape)
    if pair is not None:
        svd = factored_svd(*pair)
        return _from_svd(module, svd, options, "factored")
    if options.rank is None and options.energy is None:
        raise UsageError(f"{adapter.method} has no exact low-rank form (module {module})",
                         "give --rank R or --energy E; the error is reported per module")
    delta = delta_weight(adapter, module, parts, shape=shape)
    if delta.dim() != 2:
        raise UnsupportedMethod(adapter.method, "converted to LoRA",
                                f"module {module} is a convolution")
    if adapter.fan_in_fan_out:  # back from the base's (in, out) layout to B @ A's (out, in)
        delta = delta.T
    low = low_rank_factors(delta, rank=options.rank, energy=options.energy,
                           max_rank=options.max_rank, seed=options.seed)
    return low.b, low.a, ModuleConversion(module, low.rank, None, low.energy, low.rel_error,
                                          "dense")


def _pick_rank(s: torch.Tensor, options: ConvertOptions) -> tuple[int, int]:
    """(rank to keep, numerical rank of the delta) from its exact singular values."""
    exact = int((s > s[0] * RANK_RTOL).sum()) if s.numel() and float(s[0]) > 0 else 1
    if options.rank is not None:
        r = options.rank
    elif options.energy is not None:
        r = energy_rank(s, options.energy)
        if options.max_rank is not None:
            r = min(r, options.max_rank)
    else:
        r = exact
    return max(1, min(r, s.numel())), max(exact, 1)


def _from_svd(module: str, svd: FactoredSVD, options: ConvertOptions, path: str
              ) -> tuple[torch.Tensor, torch.Tensor, ModuleConversion]:
    r, exact = _pick_rank(svd.s, options)
    b, a, err = truncate(svd, r)
    total = float(svd.s.square().sum())
    energy = float(svd.s[:r].square().sum()) / total if total > 0 else 1.0
    return b, a, ModuleConversion(module, r, exact, energy, err, path)


def _from_kron(module: str, w1: torch.Tensor, w2: torch.Tensor, scale: float,
               options: ConvertOptions) -> tuple[torch.Tensor, torch.Tensor, ModuleConversion]:
    """Best rank-R factors of scale * kron(w1, w2) from the SVDs of w1 and w2 alone."""
    import torch

    u1, s1, vh1 = torch.linalg.svd(w1.double() * scale, full_matrices=False)
    u2, s2, vh2 = torch.linalg.svd(w2.double(), full_matrices=False)
    products = torch.outer(s1, s2).reshape(-1)
    s, order = torch.sort(products, descending=True)
    r, exact = _pick_rank(s, options)
    i, j = order[:r] // s2.numel(), order[:r] % s2.numel()
    root = s[:r].sqrt()
    # kron(x, y)[p * len(y) + q] = x[p] y[q], column by column
    b = (u1[:, i][:, None, :] * u2[:, j][None, :, :]).reshape(-1, r) * root
    a = (vh1[i][:, :, None] * vh2[j][:, None, :]).reshape(r, -1) * root[:, None]
    total = float(s.square().sum())
    kept = float(s[:r].square().sum())
    err = math.sqrt(max(total - kept, 0.0) / total) if total > 0 else 0.0
    info = ModuleConversion(module, r, exact, kept / total if total > 0 else 1.0, err, "kron")
    return b.float(), a.float(), info
