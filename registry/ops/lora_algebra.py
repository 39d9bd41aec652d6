"""Factored LoRA math: read per-module factors, sum them exactly, re-rank without m x n matrices.

A LoRA delta is `scale * B @ A` with B (out, r) and A (r, in). A weighted sum of such deltas is
itself a product of concatenated factors, so every operation here works on thin matrices:

- concatenation: sum_i w_i s_i B_i A_i = [w_1 s_1 B_1, ...] @ [A_1; ...]  (exact, rank sum r_i)
- re-ranking: QR of the stacked B and of the stacked A^T, then the SVD of the small k x k core
  R_B R_A^T gives the exact singular values of the sum; truncating them is the best rank-R
  approximation (Eckart-Young), in O((m + n) k^2) instead of O(m n min(m, n)).
- inner products: <B1 A1, B2 A2>_F = tr((B1^T B2)(A2 A1^T)), from r x r products.

Deltas are in (out, in) orientation (B @ A) whatever the base layout; fan_in_fan_out only
transposes the base weight, which composition never touches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.errors import UnsupportedMethod
from registry.peft_dir import AdapterDir

if TYPE_CHECKING:
    import torch

# Numerical rank: singular values below this fraction of the largest count as zero. float32
# factors carry about 1e-7 relative noise, so exact dependencies land far below it.
RANK_RTOL = 1e-5


@dataclass
class LoraFactors:
    """One module's LoRA factors with PEFT's scale: delta = scale * B @ A, shaped (out, in).

    embedding: the factors came from lora_embedding_A/B (written back under those names).
    """

    module: str
    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float
    embedding: bool = False

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.b.shape[0]), int(self.a.shape[1])


def read_lora_factors(
    adapter: AdapterDir, tensors: Mapping[str, torch.Tensor], operation: str = "composed"
) -> dict[str, LoraFactors]:
    """Every module's float32 LoRA factors and scale (rank_pattern, alpha_pattern and rsLoRA).

    tensors: the adapter's tensors by saved key (peft_dir.load_tensors).
    operation: the verb for refusals ("composed", "compared").
    Raises UnsupportedMethod for anything that is not a plain LoRA on Linear/Embedding layers.
    """
    check_plain_lora(adapter, operation)
    out: dict[str, LoraFactors] = {}
    for module, mod in adapter.modules.items():
        parts = mod.parts
        embedding = "lora_embedding_A" in parts
        a_info = parts["lora_embedding_A" if embedding else "lora_A"]
        b_info = parts["lora_embedding_B" if embedding else "lora_B"]
        if "lora_B.bias" in parts:
            raise UnsupportedMethod(
                "LORA (lora_bias)", operation,
                f"module {module} has a trained bias; adapt composes weight deltas only",
            )
        if len(a_info.shape) != 2 or len(b_info.shape) != 2:
            raise UnsupportedMethod(
                "LORA", operation, f"module {module} is a convolution; adapt composes Linear and "
                "Embedding LoRA only",
            )
        out[module] = LoraFactors(
            module=module,
            a=tensors[a_info.name].float(),
            b=tensors[b_info.name].float(),
            scale=adapter.lora_scale(module),
            embedding=embedding,
        )
    return out


def check_plain_lora(adapter: AdapterDir, operation: str) -> None:
    """Refuse what has no well-defined factored delta, naming why in one line."""
    method = adapter.method
    if method == "DORA":
        raise UnsupportedMethod(
            "DORA", operation,
            "each DoRA layer rescales W + dW by its own trained magnitude vector, and magnitudes "
            "of different adapters cannot be summed; merge it first or use a plain LoRA",
        )
    if method in {"LOHA", "LOKR"}:
        raise UnsupportedMethod(
            method, operation,
            "its delta is a Hadamard/Kronecker product, not B @ A; adapt composes LoRA only",
        )
    if method == "IA3":
        raise UnsupportedMethod(method, operation,
                                "it scales activations; its effect is not an additive delta")
    if method == "ADALORA":
        raise UnsupportedMethod(method, operation,
                                "its SVD-form factors are not plain B @ A")
    if method != "LORA":
        raise UnsupportedMethod(method, operation, "adapt composes LoRA adapters only")
    # Variants whose forward is not W + scale * B @ A (checked by the merge code the same way).
    from registry.ops.deltas import check_mergeable

    try:
        check_mergeable(adapter)
    except UnsupportedMethod as error:
        raise UnsupportedMethod(error.method, operation, error.reason) from None


# -- factored products --------------------------------------------------------------------
def concat_factors(
    terms: list[tuple[torch.Tensor, torch.Tensor, float]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact sum of coef_i * B_i @ A_i as one (B, A) pair; the coefficient goes into B.

    terms: (B_i (out, r_i), A_i (r_i, in), coef_i) with coef = weight * scale.
    """
    import torch

    b = torch.cat([b_i * coef for b_i, _, coef in terms], dim=1)
    a = torch.cat([a_i for _, a_i, _ in terms], dim=0)
    return b, a


@dataclass
class FactoredSVD:
    """The thin SVD of B @ A: U (out, k), S (k,), Vh (k, in), in float64."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor


def factored_svd(b: torch.Tensor, a: torch.Tensor) -> FactoredSVD:
    """Thin SVD of B @ A from QR of B and A^T and the SVD of the small core (never m x n)."""
    import torch

    b64, a64 = b.double(), a.double()
    qb, rb = torch.linalg.qr(b64)  # (m, p), (p, k)
    qa, ra = torch.linalg.qr(a64.T)  # (n, q), (q, k)
    core = rb @ ra.T  # (p, q), p, q <= k
    uc, s, vhc = torch.linalg.svd(core, full_matrices=False)
    return FactoredSVD(u=qb @ uc, s=s, vh=vhc @ qa.T)


def singular_values(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Singular values of B @ A (float64, descending) from the small core alone."""
    import torch

    _, rb = torch.linalg.qr(b.double())
    _, ra = torch.linalg.qr(a.double().T)
    return torch.linalg.svdvals(rb @ ra.T)


def numerical_rank(s: torch.Tensor, rtol: float = RANK_RTOL) -> int:
    """How many singular values exceed rtol times the largest (at least 1)."""
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 1
    return max(1, int((s > s[0] * rtol).sum()))


def truncate(svd: FactoredSVD, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-`rank` factors (B, A) of the SVD and the relative Frobenius error.

    The singular values are split evenly (B = U sqrt(S), A = sqrt(S) Vh) so both factors have
    the same scale, which is kinder to further training than U S, Vh.
    Pads with zero columns when the SVD has fewer than `rank` values.
    """
    import torch

    k = svd.s.numel()
    r = min(rank, k)
    root = svd.s[:r].sqrt()
    b = svd.u[:, :r] * root
    a = root[:, None] * svd.vh[:r]
    if r < rank:
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - r)], dim=1)
        a = torch.cat([a, a.new_zeros(rank - r, a.shape[1])], dim=0)
    total = float((svd.s**2).sum())
    dropped = float((svd.s[r:] ** 2).sum())
    err = math.sqrt(dropped / total) if total > 0 else 0.0
    return b.float(), a.float(), err


def factored_inner(b1: torch.Tensor, a1: torch.Tensor, b2: torch.Tensor, a2: torch.Tensor) -> float:
    """<B1 A1, B2 A2>_F = tr((B1^T B2)(A2 A1^T)), with r x r products only."""
    return float(((b1.double().T @ b2.double()) * (a1.double() @ a2.double().T)).sum())


def factored_norm(b: torch.Tensor, a: torch.Tensor) -> float:
    """||B A||_F without forming B A."""
    return math.sqrt(max(factored_inner(b, a, b, a), 0.0))


def entropy_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values."""
    total = float(s.sum())
    if total <= 0:
        return 0.0
    p = s.double() / total
    p = p[p > 0]
    return float(math.exp(float(-(p * p.log()).sum())))


def energy_rank(s: torch.Tensor, energy: float = 0.99) -> int:
    """The fewest singular values that hold `energy` of the squared Frobenius norm."""
    import torch

    sq = s.double() ** 2
    total = float(sq.sum())
    if total <= 0:
        return 0
    cum = torch.cumsum(sq, 0) / total
    return int((cum < energy - 1e-12).sum()) + 1


# -- dense matrices to factors --------------------------------------------------------------
# Below this many elements the exact dense SVD is cheap; above, a randomized range finder.
EXACT_SVD_ELEMENTS = 1 << 21


def dense_to_factors(
    m: torch.Tensor, rank: int, generator: torch.Generator | None = None, power_iters: int = 6
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Rank-`rank` factors (B, A) of a dense (out, in) matrix and their relative error.

    Small matrices take the exact SVD. Large ones take a randomized range finder (Halko et al.)
    with `rank + 16` probes and power iterations, drawing from `generator` (never the global
    RNG); the error reported is exact either way: ||M||^2 - ||U^T M||^2 for the kept basis U.
    """
    import torch

    m = m.float()
    if m.numel() <= EXACT_SVD_ELEMENTS or min(m.shape) <= rank + 16:
        u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
        return truncate(FactoredSVD(u, s, vh), rank)
    probes = rank + 16
    omega = torch.randn(m.shape[1], probes, generator=generator, dtype=torch.float32)
    q, _ = torch.linalg.qr(m @ omega)
    for _ in range(power_iters):
        z, _ = torch.linalg.qr(m.T @ q)
        q, _ = torch.linalg.qr(m @ z)
    small = q.T @ m  # (probes, in)
    uc, s, vh = torch.linalg.svd(small.double(), full_matrices=False)
    u = q.double() @ uc
    b, a, _ = truncate(FactoredSVD(u, s, vh), rank)
    total = float((m.double() ** 2).sum())
    kept = float((s[: min(rank, s.numel())] ** 2).sum())
    err = math.sqrt(max(total - kept, 0.0) / total) if total > 0 else 0.0
    return b, a, err
