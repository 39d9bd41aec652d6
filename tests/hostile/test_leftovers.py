"""Leftovers of crashes are visible (`adapt fsck`, with sizes) and removable (`adapt gc --temp`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.hostile.conftest import Sandbox, registry_state


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (then, then), follow_symlinks=False)


def test_fsck_reports_leftovers_with_sizes_and_gc_temp_removes_them(sandbox: Sandbox) -> None:
    temp_blob = sandbox.home / "blobs" / ".tmp-crashed"
    temp_blob.write_bytes(b"x" * 5000)
    partial = sandbox.home / "cache" / "checkouts" / ".tmp-partial"
    partial.mkdir(parents=True)
    (partial / "adapter_model.safetensors").write_bytes(b"y" * 3000)
    add_dir = sandbox.tmp / "adapt-add-killed"
    add_dir.mkdir()
    (add_dir / "adapter_config.json").write_bytes(b"z" * 700)
    for p in (temp_blob, partial, add_dir):
        _age(p, 7200)
    in_progress = sandbox.home / "blobs" / ".tmp-writing-now"  # fresh: another add's write
    in_progress.write_bytes(b"w" * 100)
    rows_before = registry_state(sandbox.home)[0]

    fsck = sandbox.run("fsck", "--json")
    assert fsck.code == 0, fsck.err  # leftovers are not corruption: reported, not failed
    found = {Path(lo["path"]).name: lo for lo in json.loads(fsck.out)["leftovers"]}
    assert found[".tmp-crashed"]["size"] == 5000 and found[".tmp-crashed"]["kind"] == "temp blob"
    assert found[".tmp-partial"]["size"] == 3000
    assert found[".tmp-partial"]["kind"] == "partial checkout"
    assert found["adapt-add-killed"]["size"] == 700
    assert found[".tmp-writing-now"]["age_seconds"] < 60
    text = sandbox.run("fsck")
    assert "4 leftover(s) of interrupted writes, 8.8 KB" in text.out
    assert "`adapt gc --temp` removes them" in text.out

    dry = sandbox.run("gc", "--temp", "--dry-run", "--json")
    assert json.loads(dry.out)["removed_temp_files"] == 3 and temp_blob.exists()
    gc = sandbox.run("gc", "--temp", "--json")
    assert gc.code == 0, gc.err
    report = json.loads(gc.out)
    assert report["removed_temp_files"] == 3 and report["removed_temp_bytes"] == 8700
    assert report["removed_blobs"] == []  # --temp never touches blobs
    assert not temp_blob.exists() and not partial.exists() and not add_dir.exists()
    assert in_progress.exists()  # a write in progress is left alone
    assert registry_state(sandbox.home)[0] == rows_before
    assert [Path(lo["path"]).name for lo in json.loads(sandbox.run("fsck", "--json").out)
            ["leftovers"]] == [".tmp-writing-now"]
