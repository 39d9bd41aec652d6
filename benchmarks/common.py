"""What every benchmark shares: result rows, the machine description, whole-process measurement."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One measured comparison. ratio = adapt / peer (or peer / adapt where `ratio_note` says)."""

    benchmark: str
    metric: str
    adapt: float | None
    peer: float | None = None
    peer_name: str = ""
    unit: str = ""
    ratio: float | None = None
    ratio_note: str = ""
    goal: str = ""
    size: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    py = platform.python_version()
    return f"{os.cpu_count()} cores, {platform.machine()}, {gpu}, Python {py}"


@dataclass
class ProcessResult:
    wall_s: float
    peak_rss_mb: float
    stdout: str
    returncode: int


def run_process(argv: list[str], env: dict[str, str] | None = None,
                cwd: Path | None = None) -> ProcessResult:
    """Run a whole process; wall time and its peak RSS (ru_maxrss of the child)."""
    full_env = {**os.environ, **(env or {})}
    # measure the child alone: wrap in a tiny Python that reports its child's ru_maxrss
    code = (
        "import resource,subprocess,sys,time,json;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'wall':w,'rss_kb':r,'rc':p.returncode,'out':p.stdout,"
        "'err':p.stderr[-4000:]}))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=full_env, cwd=cwd, check=True)
    data = json.loads(done.stdout)
    if data["rc"] != 0:
        raise RuntimeError(f"{argv[:3]} failed with {data['rc']}: {data['err']}")
    return ProcessResult(data["wall"], data["rss_kb"] / 1024, data["out"], data["rc"])


def timed(fn, *args, **kwargs) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def self_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def llama_shapes(cfg: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Llama checkpoint with config `cfg` (untied lm_head)."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = h * cfg["num_key_value_heads"] // cfg["num_attention_heads"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        out.update({
            f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,),
            f"{p}.self_attn.q_proj.weight": (h, h), f"{p}.self_attn.k_proj.weight": (kv, h),
            f"{p}.self_attn.v_proj.weight": (kv, h), f"{p}.self_attn.o_proj.weight": (h, h),
            f"{p}.mlp.gate_proj.weight": (i, h), f"{p}.mlp.up_proj.weight": (i, h),
            f"{p}.mlp.down_proj.weight": (h, i),
        })
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def plan_shards(shapes: dict[str, tuple[int, ...]], shard_bytes: int,
                itemsize: int = 2) -> list[list[str]]:
    """Tensor names per shard, in order, each shard under `shard_bytes` (as HF shards)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = itemsize * numel(shape)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards
