"""Fingerprint throughput vs plain hashlib, and CLI start-up with a large registry."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

CHUNK = 1 << 24


def make_checkpoint(out: Path, total_bytes: int, shards: int = 2) -> Path:
    """Random bf16-sized tensors written straight to safetensors (no model instantiated)."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    per_tensor = 32 << 20  # 32 MB tensors, like a 4096x4096 bf16 weight
    n = max(2, total_bytes // per_tensor)
    g = torch.Generator().manual_seed(0)
    for s in range(shards):
        tensors = {}
        for i in range(s, n, shards):
            tensors[f"model.layers.{i}.weight"] = torch.randn(
                per_tensor // 2 // 4096, 4096, generator=g).to(torch.bfloat16)
        save_file(tensors, str(out / f"model-{s + 1:05d}-of-{shards:05d}.safetensors"))
    return out


def hashlib_baseline(model: Path) -> float:
    """Seconds for one sha256 pass over the same files (single thread, the peer)."""
    t = time.perf_counter()
    for f in sorted(model.glob("*.safetensors")):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
    return time.perf_counter() - t


def bench_fingerprint(total_bytes: int) -> list[Row]:
    from registry.fingerprint import fingerprint_model

    with tempfile.TemporaryDirectory() as tmp:
        model = make_checkpoint(Path(tmp) / "ckpt", total_bytes)
        size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
        hashlib_baseline(model)  # warm the page cache for both
        base_s = hashlib_baseline(model)
        t = time.perf_counter()
        fingerprint_model(model, cache_dir=None)
        fp_s = time.perf_counter() - t
        cache = Path(tmp) / "cache"
        fingerprint_model(model, cache_dir=cache)
        t = time.perf_counter()
        fingerprint_model(model, cache_dir=cache)
        cached_ms = (time.perf_counter() - t) * 1000
    gb = size / 1e9
    return [
        Row("fingerprint", "throughput", round(gb / fp_s, 2), round(gb / base_s, 2),
            "hashlib.sha256 (1 thread)", "GB/s", round(base_s / fp_s, 2),
            "adapt / peer throughput", ">= 2 GB/s", f"{gb:.2f} GB, {os.cpu_count()} cores"),
        Row("fingerprint", "re-fingerprint unchanged (cached)", round(cached_ms, 1), None, "",
            "ms", None, "", "< 50 ms", f"{gb:.2f} GB"),
    ]


def populate(db: Path, versions: int, per_adapter: int = 10) -> None:
    """Insert `versions` rows quickly with SQLAlchemy core (the benchmark's setup, not adapt's)."""
    from sqlalchemy import insert

    from registry import Registry
    from registry.db.models import Adapter, AdapterVersion, utcnow

    reg = Registry(home=db)
    now = utcnow()
    adapters = versions // per_adapter
    with reg.engine.begin() as conn:
        conn.execute(insert(Adapter), [
            {"id": i + 1, "name": f"adapter-{i:06d}", "created_at": now, "updated_at": now}
            for i in range(adapters)])
        conn.execute(insert(AdapterVersion), [
            {"adapter_id": a + 1, "version": v + 1, "manifest_digest": f"sha256:{a:08x}{v:04x}",
             "peft_type": "LORA", "method": "LORA", "rank": 16, "alpha": 32.0,
             "use_rslora": False, "base_model": "meta-llama/Llama-3.1-8B", "params": 1000,
             "size_bytes": 4000, "dtype": "F32", "created_at": now}
            for a in range(adapters) for v in range(per_adapter)])
    reg.close()


def _wall(argv: list[str], env: dict[str, str], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        best = min(best, time.perf_counter() - t)
    return best


def bench_cli(versions: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        populate(home, versions)
        env = {**os.environ, "ADAPT_HOME": str(home)}
        adapt = [sys.executable, "-m", "registry.cli"]
        python = _wall([sys.executable, "-c", "pass"], env)
        help_s = _wall([*adapt, "--help"], env)
        list_s = _wall([*adapt, "list"], env)
        json_s = _wall([*adapt, "list", "--json"], env, repeat=3)
    size = f"{versions:,} versions ({versions // 10:,} adapters)"
    return [
        Row("cli", "adapt --help wall", round(help_s, 3), round(python, 3), "python -c pass",
            "s", round(help_s / python, 1), "adapt / bare interpreter", "< 0.3 s", size),
        Row("cli", "adapt list wall (table, first 200)", round(list_s, 3), round(python, 3),
            "python -c pass", "s", round(list_s / python, 1), "adapt / bare interpreter",
            "< 0.5 s", size),
        Row("cli", "adapt list --json wall (all latest)", round(json_s, 3), None, "", "s", None,
            "", "", size),
    ]


def run(quick: bool) -> list[Row]:
    if quick:
        return bench_fingerprint(64 << 20) + bench_cli(2_000)
    return bench_fingerprint(1_200 << 20) + bench_cli(100_000)
