"""Requantization error budget: NF4 rounding vs a rank-16 delta, with and without compensation.

Synthetic layers W' = W + delta, ||delta|| = 0.1 ||W||. Two bases: full precision, and one on
the NF4 grid (a QLoRA base, W = dequant(Q(W0))), where the delta alone decides the rounding.
Peer: bitsandbytes' quantize_4bit alone (no compensation).
"""

from __future__ import annotations

from benchmarks.common import Row


def run(quick: bool) -> list[Row]:
    import torch

    from registry.ops.quantize_layers import low_rank_factors, quantize_weight, torch_norm

    n, layers, rank = (512, 2, 16) if quick else (4096, 4, 16)
    gen = torch.Generator().manual_seed(0)
    rows: list[Row] = []
    for case in ("fp-base", "nf4-grid-base"):
        err = comp = dn = 0.0
        for _ in range(layers):
            w = torch.randn(n, n, generator=gen) * 0.02
            if case == "nf4-grid-base":
                w = quantize_weight(w, "nf4")[1]
            delta = torch.randn(n, rank, generator=gen) @ torch.randn(rank, n, generator=gen)
            delta *= 0.1 * torch_norm(w) / torch_norm(delta)
            wp = w + delta
            dq = quantize_weight(wp, "nf4")[1]
            res = wp - dq
            b, a = low_rank_factors(res, rank)
            err += torch_norm(res) ** 2
            comp += torch_norm(res - b @ a) ** 2
            dn += torch_norm(delta) ** 2
        rows.append(Row("quantize", f"nf4 error / ||delta|| ({case}, compensated r={rank})",
                        comp**0.5 / dn**0.5, err**0.5 / dn**0.5, "bitsandbytes nf4 alone",
                        "x ||delta||", (comp / err) ** 0.5, "adapt / peer",
                        "<= 0.3 x ||delta||", f"{layers} x {n}x{n}"))
    return rows


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row.to_dict())
