"""Merge: `adapt merge` (streaming) vs the PEFT path (load + merge_and_unload + save_pretrained).

Both sides run as whole processes on the same synthetic bf16 Llama-shaped checkpoint and the
same rank-16 all-linear LoRA, one after the other: wall time and peak RSS of each, and their
ratio. The checkpoint is written with safetensors directly (random tensors, no model built).

    python -m benchmarks.bench_merge            # full size: ~1.5 GB bf16
    python -m benchmarks.bench_merge --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Row, llama_shapes, machine, numel, plan_shards, run_process

ROOT = Path(__file__).resolve().parent.parent
# ~750M parameters: 1.5 GB in bf16
FULL = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=12,
            num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048)
QUICK = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
RANK = 16
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SHARD_BYTES = 500_000_000

PEFT_SIDE = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base, lora, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
merged = PeftModel.from_pretrained(model, lora).merge_and_unload()
merged.save_pretrained(out, safe_serialization=True)
"""



def build(out: Path, cfg: dict[str, int]) -> tuple[Path, Path]:
    """Write a random bf16 Llama checkpoint (sharded, with index) and a LoRA for it."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    base, lora = out / "base", out / "lora"
    base.mkdir(parents=True)
    lora.mkdir()
    shapes = llama_shapes(cfg)
    shards = plan_shards(shapes, SHARD_BYTES)
    weight_map = {}
    for k, names in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16)
                   for n in names}
        save_file(tensors, str(base / file), metadata={"format": "pt"})
        del tensors
        weight_map.update(dict.fromkeys(names, file))
    total = sum(2 * numel(s) for s in shapes.values())
    (base / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16",
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu", **cfg}
    (base / "config.json").write_text(json.dumps(config, indent=2))

    factors = {}
    for name, shape in shapes.items():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] not in TARGETS:
            continue
        key = f"base_model.model.{module}"
        factors[f"{key}.lora_A.weight"] = torch.randn(RANK, shape[1], generator=gen) * 0.01
        factors[f"{key}.lora_B.weight"] = torch.randn(shape[0], RANK, generator=gen) * 0.01
    save_file(factors, str(lora / "adapter_model.safetensors"))
    (lora / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 2 * RANK,
        "target_modules": list(TARGETS), "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "base_model_name_or_path": str(base),
    }, indent=2))
    return base, lora




def _agreement(ours: Path, peft_out: Path) -> float:
    """Largest relative difference on one merged projection (both outputs are bf16)."""
    from safetensors import safe_open

    name = "model.layers.0.self_attn.q_proj.weight"

    def read(d: Path) -> Any:
        index = d / "model.safetensors.index.json"
        file = (d / json.loads(index.read_text())["weight_map"][name] if index.exists()
                else d / "model.safetensors")
        with safe_open(str(file), framework="pt") as f:
            return f.get_tensor(name).float()

    a, b = read(ours), read(peft_out)
    return float((a - b).abs().max() / b.abs().max())


def run(quick: bool) -> list[Row]:
    cfg = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp_name:
        tmp = Path(tmp_name)
        base, lora = build(tmp, cfg)
        base_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))
        env = {"ADAPT_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cli = [sys.executable, "-m", "registry.cli"]
        # registering the adapter is not part of a merge (done here, untimed); the base stays
        # unfingerprinted, so adapt's time includes hashing the base and the output for the
        # registry record
        from registry import Registry

        with Registry(home=tmp / "home") as reg:
            reg.add(lora, name="bench-lora")
        ours = run_process([*cli, "merge", "bench-lora", "--base", str(base), "--out",
                            str(tmp / "adapt-out"), "--json"], env=env, cwd=ROOT)
        peft = run_process([sys.executable, "-c", PEFT_SIDE, str(base), str(lora),
                            str(tmp / "peft-out")], env=env, cwd=ROOT)
        agreement = _agreement(tmp / "adapt-out", tmp / "peft-out")
    size = (f"{base_bytes / 1e9:.2f} GB bf16 Llama-shaped ({cfg['num_hidden_layers']} layers, "
            f"hidden {cfg['hidden_size']}), rank-{RANK} all-linear LoRA")
    notes = (f"same outputs to {agreement:.1e} relative (PEFT adds a bf16-rounded delta to bf16 W; "
             "adapt rounds W + delta once)")
    common: dict[str, Any] = dict(benchmark="merge", peer_name="transformers load + PEFT "
                                  "merge_and_unload + save_pretrained", size=size, notes=notes,
                                  ratio_note="adapt / PEFT, whole processes")
    return [
        Row(metric="wall time", adapt=round(ours.wall_s, 2), peer=round(peft.wall_s, 2),
            unit="s", ratio=round(ours.wall_s / peft.wall_s, 3), goal="<= 0.5x", **common),
        Row(metric="peak RSS", adapt=round(ours.peak_rss_mb), peer=round(peft.peak_rss_mb),
            unit="MB", ratio=round(ours.peak_rss_mb / peft.peak_rss_mb, 3), goal="<= 0.25x",
            **common),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    for row in run(args.quick):
        print(json.dumps(row.to_dict()))


if __name__ == "__main__":
    main()
