"""Extraction: `adapt extract` vs mergekit's `mergekit-extract-lora` on the same checkpoint pair.

A random bf16 Llama-shaped base (>= 1 GB full, sharded with an index) and a "fine-tune" of it:
every decoder Linear gets a known rank-32 delta plus small full-rank noise (then bf16 rounding).
Both tools extract a rank-32 LoRA, each as a whole process (wall time and peak RSS). adapt runs
the real command (`adapt extract`, which also fingerprints both checkpoints and registers the
result); mergekit runs from its own venv (.venv-mergekit, see README), as a subprocess.
Error: for a sample of modules (every Linear of the first and last layers) the relative
Frobenius error of each side's B @ A against the delta, next to the exact truncated SVD's error
(a dense float64 SVD of the same delta).

Conversion: adapt convert vs PEFT's convert_to_lora for LoHa, LoKr and VeRA at rank 16 (time
and error against PEFT's own get_delta_weight), in process.

    python -m benchmarks.bench_extract            # full size (~1.07 GB base)
    python -m benchmarks.bench_extract --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Row, llama_shapes, machine, numel, plan_shards

ROOT = Path(__file__).resolve().parent.parent
MERGEKIT = ROOT / ".venv-mergekit" / "bin" / "mergekit-extract-lora"
RANK = 32
NOISE = 2e-4
FULL = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=9,
            num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)
QUICK = dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SHARD_BYTES = 400_000_000



def _is_linear(name: str) -> bool:
    return name.removesuffix(".weight").rsplit(".", 1)[-1] in LINEAR


def build(out: Path, cfg: dict[str, int]) -> tuple[Path, Path]:
    """Write the base and the tuned checkpoint (same sharding, bf16), one shard at a time."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    base, tuned = out / "base", out / "tuned"
    base.mkdir(parents=True)
    tuned.mkdir()
    shapes = llama_shapes(cfg)
    shards = plan_shards(shapes, SHARD_BYTES)
    weight_map = {}
    # factor entries ~ N(0, sigma^2): B A has entries of std ~ 0.004, a fifth of W's 0.02
    sigma = (0.004 / RANK**0.5) ** 0.5
    for k, names in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        b_tensors, t_tensors = {}, {}
        for n in names:
            shape = shapes[n]
            w = torch.randn(shape, generator=gen) * 0.02 if len(shape) == 2 else torch.ones(shape)
            b_tensors[n] = w.to(torch.bfloat16)
            if _is_linear(n):
                fb = torch.randn(shape[0], RANK, generator=gen) * sigma
                fa = torch.randn(RANK, shape[1], generator=gen) * sigma
                w = w + fb @ fa + torch.randn(shape, generator=gen) * NOISE
            t_tensors[n] = w.to(torch.bfloat16)
        save_file(b_tensors, str(base / file), metadata={"format": "pt"})
        save_file(t_tensors, str(tuned / file), metadata={"format": "pt"})
        del b_tensors, t_tensors
        weight_map.update(dict.fromkeys(names, file))
    total = sum(2 * numel(s) for s in shapes.values())
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16",
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu", **cfg}
    for d in (base, tuned):
        (d / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
        (d / "config.json").write_text(json.dumps(config, indent=2))
    return base, tuned




def _cpu_run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """(wall s, CPU s = user + sys, peak RSS MB) of a whole child process. CPU time is the
    figure that holds on a shared machine, where other jobs stretch wall time."""
    import subprocess

    code = (
        "import json,resource,subprocess,sys,time;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "w=time.perf_counter()-t;u=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps({'wall':w,'cpu':u.ru_utime+u.ru_stime,'rss_kb':u.ru_maxrss,"
        "'rc':p.returncode,'err':p.stderr[-3000:]}))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, check=True)
    data = json.loads(done.stdout)
    if data["rc"] != 0:
        raise RuntimeError(f"{argv[:3]} failed with {data['rc']}: {data['err']}")
    return data["wall"], data["cpu"], data["rss_kb"] / 1024


def _lora_products(out: Path, modules: list[str]) -> dict[str, Any]:
    """scale * B @ A per module of a written PEFT LoRA directory (rank/alpha patterns honoured)."""
    from safetensors.torch import load_file

    from registry.peft_dir import read_adapter_dir

    adapter = read_adapter_dir(out, check=False)
    tensors: dict[str, Any] = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    result = {}
    for module in modules:
        key = f"base_model.model.{module}"
        a, b = tensors.get(f"{key}.lora_A.weight"), tensors.get(f"{key}.lora_B.weight")
        if a is None or b is None:
            continue
        result[module] = (b.float() @ a.float()) * adapter.lora_scale(module)
    return result


def _errors(base: Path, tuned: Path, modules: list[str], sides: dict[str, Path]
            ) -> dict[str, float]:
    """Largest |error - exact truncated SVD error| per side over the sampled modules."""
    import torch
    from safetensors import safe_open

    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    products = {side: _lora_products(out, modules) for side, out in sides.items()}
    worst = dict.fromkeys(sides, 0.0)
    worst_exact = 0.0
    for module in modules:
        name = f"{module}.weight"
        with safe_open(str(base / index[name]), "pt") as fb, \
                safe_open(str(tuned / index[name]), "pt") as ft:
            delta = ft.get_tensor(name).float() - fb.get_tensor(name).float()
        s = torch.linalg.svdvals(delta.double())
        total = float(s.square().sum())
        exact = (float(s[RANK:].square().sum()) / total) ** 0.5
        worst_exact = max(worst_exact, exact)
        norm = float(torch.linalg.norm(delta))
        for side in sides:
            got = products[side].get(module)
            err = 1.0 if got is None else float(torch.linalg.norm(delta - got)) / norm
            worst[side] = max(worst[side], abs(err - exact))
    return {**worst, "exact": worst_exact}


def run(quick: bool) -> list[Row]:
    cfg = QUICK if quick else FULL
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp_name:
        tmp = Path(tmp_name)
        base, tuned = build(tmp, cfg)
        base_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))
        env = {"ADAPT_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        ours = _cpu_run([sys.executable, "-m", "registry.cli", "extract", "--base", str(base),
                         "--tuned", str(tuned), "--rank", str(RANK), "--name", "bench",
                         "--json"], env=env, cwd=ROOT)
        from registry import Registry

        with Registry(home=tmp / "home") as reg:
            adapt_out = reg.checkout("bench")
        layers = cfg["num_hidden_layers"]
        modules = [n.removesuffix(".weight") for n in llama_shapes(cfg) if _is_linear(n)
                   and (n.startswith("model.layers.0.") or
                        n.startswith(f"model.layers.{layers - 1}."))]
        sides: dict[str, Path] = {"adapt": adapt_out}
        peer_name = "mergekit-extract-lora (mergekit 0.1.5, own venv)"
        mk = None
        if MERGEKIT.exists():
            mk = _cpu_run([str(MERGEKIT), "--model", str(tuned), "--base-model", str(base),
                           "--out-path", str(tmp / "mergekit-out"), "--max-rank", str(RANK),
                           "--no-copy-tokenizer", "--quiet"], env=env, cwd=tmp)
            sides["mergekit"] = tmp / "mergekit-out"
        errors = _errors(base, tuned, modules, sides)
    size = (f"{base_bytes / 1e9:.2f} GB bf16 Llama-shaped pair ({cfg['num_hidden_layers']} "
            f"layers, hidden {cfg['hidden_size']}), rank-{RANK} delta + noise {NOISE:g}")
    notes = (f"error vs exact rank-{RANK} truncated SVD over {len(modules)} modules (first and "
             f"last layer): adapt {errors['adapt']:.1e}"
             + (f", mergekit {errors['mergekit']:.1e}" if "mergekit" in errors else "")
             + f"; exact SVD's own relative error up to {errors['exact']:.3f}")
    if mk is None:
        rows.append(Row(benchmark="extract", metric="wall time", adapt=round(ours[0], 2),
                        unit="s", size=size, notes="mergekit not installed: " + notes))
        return rows + run_conversion(quick)
    common: dict[str, Any] = dict(benchmark="extract", peer_name=peer_name, size=size,
                                  notes=notes, ratio_note="mergekit / adapt, whole processes")
    rows.append(Row(metric="wall time", adapt=round(ours[0], 2), peer=round(mk[0], 2),
                    unit="s", ratio=round(mk[0] / ours[0], 2), goal=">= 10x faster",
                    **common))
    rows.append(Row(metric="CPU time (user + sys)", adapt=round(ours[1], 2),
                    peer=round(mk[1], 2), unit="s", ratio=round(mk[1] / ours[1], 2),
                    goal=">= 10x faster", **common))
    rows.append(Row(metric="peak RSS", adapt=round(ours[2]), peer=round(mk[2]),
                    unit="MB", ratio=round(ours[2] / mk[2], 3),
                    goal="<= 0.25x", **{**common, "ratio_note": "adapt / mergekit"}))
    rows.append(Row(metric="max |error - exact truncated SVD error|", adapt=errors["adapt"],
                    peer=errors["mergekit"], unit="relative Frobenius", goal="<= 1e-3",
                    **{**common, "ratio_note": ""}))
    return rows + run_conversion(quick)


CONVERT_RANK = 16
CONVERT_FULL = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4)
CONVERT_QUICK = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2)


def _convert_configs() -> dict[str, Any]:
    from peft import LoHaConfig, LoKrConfig, VeraConfig

    targets = list(LINEAR)
    return {
        "LoHa r=8": LoHaConfig(r=8, alpha=8, target_modules=targets, init_weights=False),
        "LoKr r=8": LoKrConfig(r=8, alpha=8, target_modules=targets, init_weights=False),
        "VeRA r=64": VeraConfig(r=64, target_modules=targets),
    }


def run_conversion(quick: bool) -> list[Row]:
    """adapt's convert (factored, exact SVD of the true delta) vs PEFT's convert_to_lora (dense
    SVD per module), both at rank 16 in this process on the same adapters: time of the
    conversion call, and the largest relative error against PEFT's get_delta_weight."""
    import time

    import torch
    from peft import PeftModel, convert_to_lora, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from registry.checkpoint import open_checkpoint
    from registry.ops.convert import ConvertOptions
    from registry.ops.convert import convert_to_lora as adapt_convert
    from registry.peft_dir import read_adapter_dir

    dims: dict[str, Any] = dict(CONVERT_QUICK if quick else CONVERT_FULL)
    cfg = LlamaConfig(vocab_size=1000, num_attention_heads=8, num_key_value_heads=4,
                      tie_word_embeddings=False, **dims)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(tmp / "base")
        shapes = {n.removesuffix(".weight"): tuple(t.shape)
                  for n, t in open_checkpoint(tmp / "base").tensors.items()}
        for label, config in _convert_configs().items():
            model = get_peft_model(LlamaForCausalLM.from_pretrained(tmp / "base"), config)
            with torch.no_grad():
                for p in model.parameters():
                    if p.requires_grad:
                        p.add_(torch.randn_like(p) * 0.05)
            src = tmp / label.split()[0]
            model.save_pretrained(src)
            peft_model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tmp / "base"),
                                                   str(src))
            inner: Any = peft_model.base_model.model
            exact = {n: m.get_delta_weight("default").float()
                     for n, m in inner.named_modules()
                     if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")}
            t = time.perf_counter()
            _, peft_state = convert_to_lora(peft_model, CONVERT_RANK)
            peft_s = time.perf_counter() - t
            t = time.perf_counter()
            ours = adapt_convert(read_adapter_dir(src), tmp / f"{src.name}-lora",
                                 ConvertOptions(rank=CONVERT_RANK), base_shapes=shapes)
            adapt_s = time.perf_counter() - t
            products = _lora_products(ours.out_dir, list(exact))
            err_adapt = err_peft = 0.0
            for module, delta in exact.items():
                key = f"base_model.model.{module}"
                theirs = (peft_state[f"{key}.lora_B.weight"].float()
                          @ peft_state[f"{key}.lora_A.weight"].float())
                norm = float(torch.linalg.norm(delta))
                ours_err = float(torch.linalg.norm(products[module] - delta)) / norm
                err_adapt = max(err_adapt, ours_err)
                err_peft = max(err_peft, float(torch.linalg.norm(theirs - delta)) / norm)
            size = (f"{label}, {len(exact)} modules of a Llama-shaped model (hidden "
                    f"{dims['hidden_size']}), to rank {CONVERT_RANK}")
            common: dict[str, Any] = dict(benchmark="extract", peer_name="peft.convert_to_lora",
                                          size=size)
            rows.append(Row(metric="convert time", adapt=round(adapt_s, 3),
                            peer=round(peft_s, 3), unit="s", ratio=round(peft_s / adapt_s, 2),
                            ratio_note="PEFT / adapt, in process; adapt includes reading and "
                            "writing the directories", **common))
            rows.append(Row(metric="convert max relative error", adapt=err_adapt, peer=err_peft,
                            unit="relative Frobenius", notes="against PEFT's get_delta_weight",
                            **common))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    for row in run(args.quick):
        print(json.dumps(row.to_dict()))


if __name__ == "__main__":
    main()
