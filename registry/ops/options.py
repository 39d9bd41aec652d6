"""Frozen options of the model ops, each validated once when it is made.

A CLI command (or a library caller) builds one of these, and it travels unchanged through the
facade, the flow and the op: no layer re-checks it, and no op takes a long keyword list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from registry.errors import UsageError

# -- merge -----------------------------------------------------------------------------------
MERGE_DTYPES = ("bf16", "fp16", "fp32")
# --base-quantization values: bitsandbytes 4-bit type, and whether absmax is double-quantized
BASE_QUANTIZATIONS: dict[str, tuple[str, bool]] = {
    "nf4": ("nf4", False), "fp4": ("fp4", False), "nf4-dq": ("nf4", True), "fp4-dq": ("fp4", True),
}

# -- requantize ------------------------------------------------------------------------------
QUANT_TYPES = ("nf4", "fp4", "int8")
COMPUTE_DTYPES: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_SHARD_SIZE = 5 * 10**9

# -- compose ---------------------------------------------------------------------------------
FACTORED_METHODS = ("cat", "svd", "linear")
DENSE_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
COMPOSE_METHODS = FACTORED_METHODS + DENSE_METHODS


def check_base_quantization(base_quantization: str | None) -> None:
    if base_quantization is not None and base_quantization not in BASE_QUANTIZATIONS:
        raise UsageError(f"unknown base quantization {base_quantization!r}",
                         f"use one of {', '.join(BASE_QUANTIZATIONS)}")


def _check_shard_size(shard_size: int | None) -> None:
    if shard_size is not None and (isinstance(shard_size, bool) or shard_size <= 0):
        raise UsageError(f"invalid shard size {shard_size!r}", "the shard size must be positive")


@dataclass(frozen=True)
class MergeOptions:
    """How `merge` writes: dtype ("bf16"/"fp16"/"fp32", None keeps the base's), shard size in
    bytes (None keeps the base's sharding), base_quantization ("nf4"/"fp4", "-dq": merge into
    dequant(quant(W)) for QLoRA adapters), force (replace a non-empty output)."""

    dtype: str | None = None
    shard_size: int | None = None
    base_quantization: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in MERGE_DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}",
                             f"use one of {', '.join(MERGE_DTYPES)}")
        check_base_quantization(self.base_quantization)
        _check_shard_size(self.shard_size)


@dataclass(frozen=True)
class QuantizeOptions:
    """How `requantize` quantizes and writes.

    to: "nf4", "fp4" or "int8". double_quant: also quantize the 4-bit absmax statistics.
    compute_dtype: "bf16", "fp16" or "fp32" for the 4-bit layers' matmuls.
    blocksize: 4-bit block size. skip_modules: module name patterns kept unquantized.
    compensate_rank: fit a rank-R LoRA to each layer's residual (saved as OUT/compensation).
    shard_size: bytes per output shard. force: replace a non-empty output.
    """

    to: str
    double_quant: bool = False
    compute_dtype: str = "bf16"
    blocksize: int = 64
    skip_modules: tuple[str, ...] = ("lm_head",)
    compensate_rank: int | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    force: bool = False

    def __post_init__(self) -> None:
        if self.to not in QUANT_TYPES:
            raise UsageError(f"unsupported --to {self.to!r}",
                             f"use one of {', '.join(QUANT_TYPES)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise UsageError(f"unknown compute dtype {self.compute_dtype!r}",
                             f"use one of {', '.join(COMPUTE_DTYPES)}")
        if self.blocksize not in BLOCKSIZES:
            raise UsageError(f"unsupported blocksize {self.blocksize}",
                             f"use one of {', '.join(map(str, BLOCKSIZES))}")
        if self.compensate_rank is not None and self.compensate_rank < 1:
            raise UsageError(f"--compensate-rank must be at least 1, got {self.compensate_rank}")
        _check_shard_size(self.shard_size)
        if isinstance(self.skip_modules, str) or not isinstance(self.skip_modules, Sequence):
            raise UsageError(f"skip_modules must be a list of patterns, got {self.skip_modules!r}")
        # a list given by a caller becomes a tuple, so the options stay hashable and frozen
        object.__setattr__(self, "skip_modules", tuple(self.skip_modules))


@dataclass(frozen=True)
class ComposeOptions:
    """How `compose` combines: method (cat, svd, linear, ties, dare_linear, dare_ties,
    magnitude_prune), output rank (not for cat), density (the dense methods' kept fraction),
    seed (DARE's mask seed; None means 0)."""

    method: str
    rank: int | None = None
    density: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        method, rank, density = self.method, self.rank, self.density
        if method not in COMPOSE_METHODS:
            raise UsageError(f"unknown compose method {method!r}",
                             f"use one of {', '.join(COMPOSE_METHODS)}")
        if rank is not None and not 1 <= rank <= 65536:  # 1e20 would reach torch's allocator
            raise UsageError(f"--rank must be in [1, 65536], got {rank}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed must be in [0, 2**63), got {self.seed}")
        if method == "cat" and rank is not None:
            raise UsageError("cat is exact and keeps every rank", "drop --rank or use --method svd")
        if density is not None and not (math.isfinite(density) and 0 < density <= 1):
            raise UsageError(f"--density must be in (0, 1], got {density}")
        if method in DENSE_METHODS and density is None:
            raise UsageError(f"{method} needs --density", "e.g. --density 0.5")

    @property
    def recorded_seed(self) -> int | None:
        """The seed a recipe records: DARE's masks always come from one (0 by default)."""
        return self.seed if self.seed is not None or not self.method.startswith("dare") else 0


def check_rank_budget(rank: int | None, energy: float | None, max_rank: int | None) -> None:
    """The rank choices extraction and conversion share: a rank, an energy fraction, a cap."""
    import math

    if rank is not None and not (isinstance(rank, int) and 1 <= rank <= 65536):
        raise UsageError(f"--rank must be an integer in [1, 65536], got {rank!r}")
    if energy is not None and not (
        isinstance(energy, int | float) and math.isfinite(energy) and 0 < energy <= 1
    ):
        raise UsageError(f"--energy must be in (0, 1], got {energy!r}")
    if max_rank is not None and not (isinstance(max_rank, int) and 1 <= max_rank <= 65536):
        raise UsageError(f"--max-rank must be in [1, 65536], got {max_rank!r}")
