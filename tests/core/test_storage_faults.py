"""Reads never take the write lock; a read-only or full ADAPT_HOME still reads and a write there
fails with one line and exit 9 (hardening issue, item 7). Uses small tmpfs mounts (root is
available on this machine and in CI); skipped where mounting is not allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import Registry


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    if not _mount_tmpfs(where, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _adapt(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADAPT_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "registry.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_read_only_home_still_reads_and_refuses_writes(small_disk: Path, tiny_lora: Path,
                                                         tiny_lora_r8: Path) -> None:
    home = small_disk / "home"
    with Registry(home=home) as reg:
        reg.add(tiny_lora, name="a")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    listed = _adapt(["list", "--json"], home)
    assert listed.returncode == 0, listed.stderr
    assert "a@1" in listed.stdout
    assert _adapt(["show", "a@1", "--json"], home).returncode == 0
    added = _adapt(["add", str(tiny_lora_r8), "--name", "b"], home)
    assert added.returncode == 9, added.stderr
    assert len(added.stderr.strip().splitlines()) == 1 and "read-only" in added.stderr
    tagged = _adapt(["tag", "a@1", "prod"], home)
    assert tagged.returncode == 9 and "read-only" in tagged.stderr, tagged.stderr


def test_a_full_disk_fails_a_write_in_one_line_and_keeps_the_registry(
        small_disk: Path, tiny_lora: Path, tmp_path: Path) -> None:
    home = small_disk / "home"
    with Registry(home=home) as reg:
        reg.add(tiny_lora, name="a")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    big = tmp_path / "big-lora"
    shutil.copytree(tiny_lora, big)
    with open(big / "adapter_model.safetensors", "r+b") as f:  # different bytes, same shape
        f.seek(-4, 2)
        f.write(b"\x01\x02\x03\x04")
    added = _adapt(["add", str(big), "--name", "b", "--allow-nonfinite"], home)
    assert added.returncode == 9, added.stderr
    assert len(added.stderr.strip().splitlines()) == 1
    assert "internal error" not in added.stderr
    filler.unlink()
    listed = _adapt(["list", "--json"], home)
    assert listed.returncode == 0 and "b@" not in listed.stdout
    assert _adapt(["fsck"], home).returncode == 0


def test_reads_do_not_wait_for_a_writer(registry: Registry, tiny_lora: Path,
                                        adapt_home: Path) -> None:
    registry.add(tiny_lora, name="a")
    held = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with registry.catalog.tx(write=True) as tx:  # holds BEGIN IMMEDIATE
            tx.run("UPDATE adapter SET updated_at = updated_at")
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(10)
        t = time.perf_counter()
        listed = _adapt(["list", "--json"], adapt_home)
        shown = _adapt(["show", "a@1"], adapt_home)
        elapsed = time.perf_counter() - t
        assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
        assert elapsed < 20  # the busy timeout is 30 s: a queued reader would wait it out
    finally:
        release.set()
        thread.join()


def test_an_edited_checkout_cache_is_never_used_and_fsck_reports_it(
        registry: Registry, tiny_lora: Path) -> None:
    info = registry.add(tiny_lora, name="a").version
    cached = registry.checkout("a@1")
    weights = cached / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    report = registry.fsck()
    assert not report.ok and any("checkout cache" in p for p in report.problems)
    again = registry.checkout("a@1")
    import hashlib
    for f in info.files:
        assert hashlib.sha256((again / f.path).read_bytes()).hexdigest() == f.sha256
    assert registry.fsck().ok
