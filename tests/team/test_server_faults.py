"""The object store failing under adapt: the server stopped in the middle of an upload."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_reliability import _adapt
from tests.factories import make_lora
from tests.team.conftest import S3Server, free_port, point_at, start_rclone


class CutAfter:
    """A TCP relay to a real server that stops the server (and itself) once `limit` bytes of a
    PUT body have gone through: an upload cut in the middle."""

    def __init__(self, upstream: int, stop_server: Any, limit: int) -> None:
        self.upstream, self.stop_server, self.limit = upstream, stop_server, limit
        self.sent_after_put = -1
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while data := src.recv(65536):
                if upward:
                    if self.sent_after_put < 0 and b"PUT " in data:
                        self.sent_after_put = 0
                    elif self.sent_after_put >= 0:
                        self.sent_after_put += len(data)
                    if self.sent_after_put > self.limit and not self.cut.is_set():
                        self.cut.set()
                        self.stop_server()
                        try:  # wakes the blocked accept(): new connections are refused
                            self.listener.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        self.listener.close()
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # shutdown wakes the other direction's blocked recv
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_server_stopped_mid_upload_is_one_line_exit_9_and_no_row(
        tiny_base: Path, tmp_path: Path, adapt_home: Path, monkeypatch: pytest.MonkeyPatch,
        s3_server: S3Server) -> None:
    from registry.blobs.cache import BlobCache
    from registry.blobs.s3 import S3BlobStore

    lora = make_lora(tiny_base, tmp_path / "big", r=64, seed=9,
                     targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    weights = (lora / "adapter_model.safetensors").stat().st_size
    assert weights > 200_000
    port = free_port()
    data = tmp_path / "s3" / "data"
    proc = start_rclone(data, port, "cut-key", "cut-secret")
    try:
        server = S3Server(f"http://127.0.0.1:{port}", "cut-key", "cut-secret")
        point_at(server, monkeypatch)
        url = "s3://cut-mid-upload/team"
        S3BlobStore.from_url(url, BlobCache(tmp_path / "c")).ensure_bucket()
        assert _adapt(["list"], adapt_home).returncode == 0  # the registry exists
        relay = CutAfter(port, proc.kill, limit=weights // 3)
        env = {"ADAPT_BLOB_URL": url, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
        p = _adapt(["add", str(lora), "--name", "cut"], adapt_home, env)
        assert relay.cut.is_set(), "the upload finished before the server was stopped"
        assert p.returncode == 9, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
        assert "cut-mid-upload" in p.stderr and "cut-secret" not in p.stderr
        assert _adapt(["list", "--json"], adapt_home, {"ADAPT_BLOB_URL": ""}).stdout.strip() \
            in ("[]", "")
        # the server comes back: the same add completes and the bucket is consistent
        proc.wait(timeout=10)
        proc = start_rclone(data, port, "cut-key", "cut-secret")
        p = _adapt(["add", str(lora), "--name", "cut"], adapt_home, {"ADAPT_BLOB_URL": url})
        assert p.returncode == 0, p.stderr
        fsck = _adapt(["fsck"], adapt_home, {"ADAPT_BLOB_URL": url})
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        out = tmp_path / "out"
        assert _adapt(["export", "cut", str(out)], tmp_path / "other-home",
                      {"ADAPT_BLOB_URL": url,
                       "ADAPT_DB_URL": f"sqlite:///{adapt_home / 'registry.db'}"}
                      ).returncode == 0
        assert (out / "adapter_model.safetensors").read_bytes() == (
            lora / "adapter_model.safetensors").read_bytes()
    finally:
        proc.kill()
        proc.wait(timeout=10)
