"""Validation forward pass: adapt's measured forward vs a plain transformers + PEFT forward.

Each side runs in its own process (so peak RSS is its own) on the same base + LoRA, same batch,
length and dtype: tokens/s and peak memory (torch.cuda.max_memory_allocated on GPU, peak RSS on
CPU), per device. Full size also times a whole `adapt validate` run.

    python -m benchmarks.bench_validate            # full size, every device torch sees
    python -m benchmarks.bench_validate --quick --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, machine, run_process

ROOT = Path(__file__).resolve().parent.parent
# SmolLM2-135M's shape (random weights: nothing is downloaded)
FULL_MODEL = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                  num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                  max_position_embeddings=2048, tie_word_embeddings=True)
QUICK_MODEL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   tie_word_embeddings=False)


def build(out: Path, model_config: dict[str, Any], rank: int) -> tuple[Path, Path]:
    """A random Llama base and a LoRA (q,k,v,o) on it, both saved as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base_dir, lora_dir = out / "base", out / "lora"
    model = LlamaForCausalLM(LlamaConfig(**model_config))
    model.save_pretrained(base_dir, safe_serialization=True)
    peft_model = get_peft_model(model, LoraConfig(
        r=rank, lora_alpha=2 * rank, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    peft_model.save_pretrained(lora_dir)
    return base_dir, lora_dir


def worker(side: str, base: str, lora: str, device: str, batch: int, length: int,
           repeats: int) -> dict[str, Any]:
    """One side's measurement, in this process; printed as JSON by main()."""
    import resource

    import torch

    dtype = "bfloat16" if device == "cuda" else "float32"
    if side == "adapt":
        from registry.validation.forward import attach_adapter, load_causal_lm, measure_forward

        model = attach_adapter(load_causal_lm(Path(base), device, dtype), Path(lora))
        m = measure_forward(model, vocab=model.get_input_embeddings().weight.shape[0],
                            batch=batch, length=length, device=device, repeats=repeats)
        return {"tokens_per_s": m.tokens_per_s, "peak_mem_mb": m.peak_mem_mb}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)).to(device)
    model = PeftModel.from_pretrained(model, lora).eval()
    ids = torch.randint(0, model.config.vocab_size, (batch, length),
                        generator=torch.Generator().manual_seed(0)).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t = time.perf_counter()
            # no KV cache, as in adapt's pass: scoring a batch never decodes further
            model(input_ids=ids, use_cache=False)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"tokens_per_s": batch * length / statistics.median(times), "peak_mem_mb": peak}


def _side(side: str, base: Path, lora: Path, device: str, batch: int, length: int,
          repeats: int, *, isolated: bool) -> dict[str, Any]:
    """Measure one side; isolated runs it in a fresh process so its peak memory is its own."""
    if not isolated:
        return worker(side, str(base), str(lora), device, batch, length, repeats)
    argv = [sys.executable, "-m", "benchmarks.bench_validate", "--worker", side,
            "--base", str(base), "--lora", str(lora), "--device", device,
            "--batch", str(batch), "--length", str(length), "--repeats", str(repeats)]
    done = run_process(argv, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def devices(requested: str) -> list[str]:
    import torch

    if requested == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [requested]


def run(quick: bool, device: str = "auto") -> list[Row]:
    model_cfg = QUICK_MODEL if quick else FULL_MODEL
    batch, length, repeats = (2, 32, 10) if quick else (4, 256, 5)
    size_name = "tiny Llama (2 layers)" if quick else "SmolLM2-135M-shaped Llama (random)"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        base, lora = build(Path(tmp), model_cfg, rank=16 if not quick else 4)
        for dev in devices(device):
            size = f"{size_name}, LoRA q/k/v/o, batch {batch} x {length}, {dev}"
            # quick: both sides in this process (a smoke test; the memory rows then share one
            # process's peak RSS); full: each side in its own process
            a = _side("adapt", base, lora, dev, batch, length, repeats, isolated=not quick)
            p = _side("peer", base, lora, dev, batch, length, repeats, isolated=not quick)
            mem = "cuda max_memory_allocated" if dev == "cuda" else "process peak RSS"
            if quick and dev == "cpu":
                mem += " (quick: one shared process, so not comparable)"
            rows.append(Row("validate", f"forward tokens/s ({dev})", a["tokens_per_s"],
                            p["tokens_per_s"], "transformers + PEFT forward", "tokens/s",
                            a["tokens_per_s"] / p["tokens_per_s"], "adapt / peer (higher is "
                            "faster)", "~1.0: measuring adds no overhead", size,
                            f"median of {repeats} after 1 warmup; {machine()}"))
            rows.append(Row("validate", f"forward peak memory ({dev})", a["peak_mem_mb"],
                            p["peak_mem_mb"], "transformers + PEFT forward", "MiB",
                            a["peak_mem_mb"] / p["peak_mem_mb"], "adapt / peer (lower is "
                            "smaller)", "~1.0", size, mem))
            if not quick:
                rows.append(_whole_run(Path(tmp), base, lora, dev))
    return rows


def _whole_run(tmp: Path, base: Path, lora: Path, device: str) -> Row:
    """Wall time and peak RSS of a whole `adapt validate` (every check) on the default set."""
    env = {"ADAPT_HOME": str(tmp / f"home-{device}")}
    adapt = [sys.executable, "-m", "registry.cli"]
    subprocess.run([*adapt, "add", str(lora), "--name", "bench", "--base", str(base)],
                   env={**os.environ, **env}, cwd=ROOT, check=True, capture_output=True)
    done = run_process([*adapt, "validate", "bench", "--base", str(base), "--device", device,
                        "--json"], env=env, cwd=ROOT)
    report = json.loads(done.stdout)
    return Row("validate", f"whole adapt validate run ({device})", done.wall_s, None, "", "s",
               size="SmolLM2-135M-shaped Llama, 42 default eval texts, all six checks",
               notes=f"peak RSS {done.peak_rss_mb:.0f} MB; tokens/s in run "
                     f"{report['figures']['tokens_per_s']:.0f}; status {report['status']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--worker", choices=["adapt", "peer"])
    parser.add_argument("--base")
    parser.add_argument("--lora")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.base, args.lora, args.device, args.batch,
                                args.length, args.repeats)))
        return 0
    for row in run(args.quick, args.device):
        print(json.dumps(row.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
