"""Hub sync: `adapt push`/`adapt pull` vs plain huggingface_hub upload_folder/snapshot_download.

Both sides use the real huggingface_hub client against the local Hub server from the tests
(tests/hub/server.py) on 127.0.0.1, on the same LoRA files, in the same process, so the ratio
shows what adapt's checks cost (remote comparison before pushing, sha256 verification and
registration after pulling) and what they save (bytes on an unchanged re-push).

    python -m benchmarks.bench_hub           # full size: a ~50 MB LoRA (r=64, 24 layers)
    python -m benchmarks.bench_hub --quick
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import Row, machine

TOKEN = "hf_bench_token_not_secret"


def make_lora_files(out: Path, layers: int, hidden: int, rank: int) -> Path:
    """A synthetic PEFT LoRA dir (q,v on `layers` layers) written with numpy: no model needed."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(layers):
        for m in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{i}.self_attn.{m}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, hidden), np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((hidden, rank), np.float32)
    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "task_type": "CAUSAL_LM",
        "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "bench/synthetic",
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
    }))
    return out


class _ServerProcess:
    """The Hub test server in another process: its endpoint and transfer counters."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    @property
    def received_file_bytes(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/_test/stats", timeout=30) as answer:
            return int(json.load(answer)["received_file_bytes"])


@contextmanager
def local_hub(tmp: Path) -> Iterator[Any]:
    """Start the local server and point huggingface_hub at it (restoring everything after)."""
    import subprocess
    import sys

    from huggingface_hub import constants

    # the repository's local Hub server (tests/hub/server.py), run as its own process
    script = Path(__file__).resolve().parents[1] / "tests" / "hub" / "server.py"
    proc = subprocess.Popen([sys.executable, str(script), TOKEN, "bench"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    server = _ServerProcess(proc.stdout.readline().strip())
    saved_env = {k: os.environ.get(k) for k in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    patched = {
        "ENDPOINT": server.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_CACHE": str(tmp / "hf-cache"),
        "HF_TOKEN_PATH": str(tmp / "no-token"),
    }
    saved = {k: getattr(constants, k) for k in patched}
    os.environ.update({"HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"})
    for k, v in patched.items():
        setattr(constants, k, v)
    try:
        yield server
    finally:
        for k, v in saved.items():
            setattr(constants, k, v)
        for k, old in saved_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
        proc.stdin.close()
        proc.wait(timeout=30)


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run(quick: bool) -> list[Row]:
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    from registry.hub import stage_version
    from registry.registry import Registry

    disable_progress_bars()
    layers, hidden, rank = (2, 64, 4) if quick else (24, 2048, 64)
    with tempfile.TemporaryDirectory(prefix="adapt-bench-hub-") as tmp_s:
        tmp = Path(tmp_s)
        lora = make_lora_files(tmp / "lora", layers, hidden, rank)
        nbytes = (lora / "adapter_model.safetensors").stat().st_size
        size = f"LoRA r={rank}, {layers} layers x q,v, hidden {hidden} ({nbytes / 1e6:.3g} MB)"
        with local_hub(tmp) as server:
            reg = Registry(home=tmp / "home")
            reg.add(lora, name="bench")
            api = HfApi()
            staged = tmp / "staged"
            staged.mkdir()
            for name, path in stage_version(reg, reg.resolve("bench"), "bench/peer",
                                             staged).items():
                if path.parent != staged:
                    (staged / name).write_bytes(path.read_bytes())

            # warm both sides up (imports, connections) on a tiny adapter first
            warm = make_lora_files(tmp / "warm", 1, 16, 2)
            reg.add(warm, name="warm")
            reg.push("warm", repo="bench/warm")
            api.create_repo("bench/warm-peer")
            api.upload_folder(repo_id="bench/warm-peer", folder_path=str(warm))
            Registry(home=tmp / "warm-home").pull("bench/warm")
            snapshot_download("bench/warm-peer")

            # first push: a fresh repo each side, same four files
            t_push, _ = _timed(lambda: reg.push("bench", repo="bench/bench"))

            def peer_push() -> None:
                api.create_repo("bench/peer", exist_ok=True)
                api.upload_folder(repo_id="bench/peer", folder_path=str(staged),
                                  commit_message="upload")

            t_peer_push, _ = _timed(peer_push)

            # unchanged re-push: what each side sends
            before = server.received_file_bytes
            t_repush, _ = _timed(lambda: reg.push("bench", repo="bench/bench"))
            adapt_bytes = server.received_file_bytes - before
            before = server.received_file_bytes
            t_peer_repush, _ = _timed(peer_push)
            peer_bytes = server.received_file_bytes - before

            # pull into an empty registry with a cold cache vs snapshot_download (cold cache)
            target = Registry(home=tmp / "target")
            constants.HF_HUB_CACHE = str(tmp / "cache-adapt")
            t_pull, _ = _timed(lambda: target.pull("bench/bench"))
            constants.HF_HUB_CACHE = str(tmp / "cache-peer")
            t_peer_pull, _ = _timed(lambda: snapshot_download("bench/peer"))
            reg.close()
            target.close()

    def row(metric: str, a: float, p: float, peer: str, note: str) -> Row:
        return Row(benchmark="hub", metric=metric, adapt=round(a, 4), peer=round(p, 4),
                   peer_name=peer, unit="s", ratio=round(a / p, 2) if p else None,
                   ratio_note="adapt / peer", size=size, notes=note)

    return [
        row("push, new repo", t_push, t_peer_push, "HfApi.upload_folder",
            "adapt also lists refs and paths-info first, and tags v1"),
        row("push, unchanged", t_repush, t_peer_repush, "HfApi.upload_folder",
            f"bytes received by the server: adapt {adapt_bytes}, peer {peer_bytes}"),
        row("pull, cold cache", t_pull, t_peer_pull, "snapshot_download",
            "adapt also verifies sha256s against the Hub and adapt.json and registers"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    for r in run(args.quick):
        print(json.dumps(r.to_dict()))


if __name__ == "__main__":
    main()
