"""Compose: adapt's factored `svd` vs PEFT's add_weighted_adapter(combination_type="svd").

Three LoRAs of ranks 16, 16 and 8 on a 4096x4096 and a 4096x11008 Linear (quick: 512x512 and
512x1376) are combined with weights 1, 0.5, -0.7 to rank 16, side by side in one process on
the same adapters. Reported: each side's time (adapt includes reading the three adapter
directories and writing the result; PEFT's is the add_weighted_adapter call alone), their
ratio, and each side's relative Frobenius error against the exact truncated SVD of the true
weighted sum (a dense float64 SVD).

    python -m benchmarks.bench_compose            # full size
    python -m benchmarks.bench_compose --quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, machine

RANKS = (16, 16, 8)
WEIGHTS = (1.0, 0.5, -0.7)
TARGET_RANK = 16


def _model(hidden: int, inter: int) -> Any:
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = torch.nn.Linear(hidden, hidden, bias=False)
            self.up_proj = torch.nn.Linear(hidden, inter, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.up_proj(self.q_proj(x))

    return Block()


def _best(full: Any, rank: int) -> Any:
    import torch

    u, s, vh = torch.linalg.svd(full, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def run(quick: bool) -> list[Row]:
    import torch
    from peft import LoraConfig, get_peft_model

    from registry.ops.compose import compose_lora
    from registry.ops.options import ComposeOptions
    from registry.peft_dir import load_tensors, read_adapter_dir

    hidden, inter = (512, 1376) if quick else (4096, 11008)
    size = f"{hidden}x{hidden} + {hidden}x{inter}, ranks {RANKS} -> {TARGET_RANK}"
    torch.manual_seed(0)
    model = _model(hidden, inter)
    names = [f"a{i}" for i in range(len(RANKS))]
    for i, (name, r) in enumerate(zip(names, RANKS, strict=True)):
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "up_proj"],
                         init_lora_weights=False)
        if i == 0:
            model = get_peft_model(model, cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.02)
    with tempfile.TemporaryDirectory(prefix="bench-compose-") as tmp:
        root = Path(tmp)
        model.save_pretrained(root / "saved", selected_adapters=names)
        dirs = [root / "saved" / n for n in names]  # non-default names go to subfolders
        adapters = [read_adapter_dir(d) for d in dirs]

        started = time.perf_counter()
        compose_lora(adapters, WEIGHTS, ComposeOptions("svd", rank=TARGET_RANK),
                     out_dir=root / "adapt")
        adapt_s = time.perf_counter() - started

        started = time.perf_counter()
        model.add_weighted_adapter(names, list(WEIGHTS), "peft_svd",
                                   combination_type="svd", svd_rank=TARGET_RANK)
        peft_s = time.perf_counter() - started

        out = read_adapter_dir(root / "adapt")
        ours = load_tensors(out)
        errs_adapt, errs_peft = [], []
        torch.set_grad_enabled(False)
        for mod_name in ("q_proj", "up_proj"):
            layer = getattr(model.base_model.model, mod_name)
            exact = sum(w * layer.get_delta_weight(n).double()
                        for n, w in zip(names, WEIGHTS, strict=True))
            best = _best(exact, TARGET_RANK)
            key = f"base_model.model.{mod_name}"
            mine = (ours[f"{key}.lora_B.weight"].double() @ ours[f"{key}.lora_A.weight"].double()
                    * out.lora_scale(mod_name))
            theirs = layer.get_delta_weight("peft_svd").double()
            errs_adapt.append(float((mine - best).norm() / best.norm()))
            errs_peft.append(float((theirs - best).norm() / best.norm()))
        torch.set_grad_enabled(True)
    notes = machine()
    return [
        Row("compose", "svd compose time", adapt_s, peft_s, "peft add_weighted_adapter(svd)",
            unit="s", ratio=peft_s / adapt_s, ratio_note="peer / adapt (speedup)",
            goal=">= 1000x", size=size, notes=notes),
        Row("compose", "svd relative error vs exact truncated SVD (max over modules)",
            max(errs_adapt), max(errs_peft), "peft add_weighted_adapter(svd)", unit="relative",
            size=size, notes=notes),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run(args.quick):
        print(json.dumps(row.to_dict()))


if __name__ == "__main__":
    main()
