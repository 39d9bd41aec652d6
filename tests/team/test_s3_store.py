"""The S3 blob store against a real S3-compatible server (rclone serve s3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_reliability import _adapt
from tests.factories import make_lora


def _objects(raw_s3: Any, url: str) -> dict[str, int]:
    bucket, prefix = url[len("s3://"):].split("/", 1)
    listing = raw_s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"]: o["Size"] for o in listing.get("Contents", [])}


def test_add_writes_blobs_to_the_bucket_and_export_reads_them_back(
        bucket_url: str, raw_s3: Any, tiny_lora: Path, adapt_home: Path, tmp_path: Path) -> None:
    from registry import Registry

    with Registry() as reg:
        info = reg.add(tiny_lora, name="team").version
        keys = _objects(raw_s3, bucket_url)
        assert sorted(keys) == sorted(f"team/{f.sha256[:2]}/{f.sha256[2:]}" for f in info.files)
        assert not (adapt_home / "blobs").exists()  # nothing kept locally on add
        assert reg.store.describe() == bucket_url
        out = reg.export("team@1", tmp_path / "out")
    for f in info.files:
        assert (out / f.path).read_bytes() == (tiny_lora / f.path).read_bytes()
    assert reg.fsck(verify_hashes=True).ok


def test_a_second_home_reads_what_the_first_added(bucket_url: str, tiny_lora: Path,
                                                  tmp_path: Path) -> None:
    from registry import Registry

    db = f"sqlite:///{tmp_path / 'shared.db'}"
    with Registry(home=tmp_path / "a", db_url=db) as a:
        a.add(tiny_lora, name="shared")
    with Registry(home=tmp_path / "b", db_url=db) as b:
        checkout = b.checkout("shared@1")
        assert (checkout / "adapter_model.safetensors").read_bytes() == (
            tiny_lora / "adapter_model.safetensors").read_bytes()
        cached = b.store.cache.entries()  # type: ignore[attr-defined]
        assert {e.sha256 for e in cached} == {f.sha256 for f in b.resolve("shared").files}


def test_a_blob_corrupted_in_the_bucket_is_refused_on_read(
        bucket_url: str, raw_s3: Any, tiny_lora: Path, tmp_path: Path) -> None:
    from registry import Registry
    from registry.errors import IntegrityError

    db = f"sqlite:///{tmp_path / 'shared.db'}"
    with Registry(home=tmp_path / "a", db_url=db) as a:
        weights = a.add(tiny_lora, name="x").version.files[-1]
    bucket, prefix = bucket_url[len("s3://"):].split("/", 1)
    key = f"{prefix}/{weights.sha256[:2]}/{weights.sha256[2:]}"
    data = bytearray((tiny_lora / weights.path).read_bytes())
    data[-1] ^= 0xFF
    raw_s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    with Registry(home=tmp_path / "b", db_url=db) as b:  # an empty cache: reads the bucket
        with pytest.raises(IntegrityError):
            b.export("x@1", tmp_path / "out")
        assert not (tmp_path / "out" / weights.path).exists()
        cached = {e.sha256 for e in b.store.cache.entries()}  # type: ignore[attr-defined]
        assert weights.sha256 not in cached  # refused bytes never enter the cache
        report = b.fsck(verify_hashes=True)
        assert not report.ok and any(weights.sha256[:16] in p for p in report.problems)
    p = _adapt(["export", "x@1", str(tmp_path / "out2")], tmp_path / "c",
               {"ADAPT_DB_URL": db})
    assert p.returncode == 4, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "integrity" in p.stderr


def test_an_edited_cache_copy_is_fetched_again(bucket_url: str, tiny_lora: Path,
                                               tmp_path: Path) -> None:
    from registry import Registry

    with Registry() as reg:
        weights = reg.add(tiny_lora, name="c").version.files[-1]
        reg.export("c", tmp_path / "one")
        cached = reg.store.path(weights.sha256)
        os.chmod(cached, 0o644)
        cached.write_bytes(b"edited")
        out = reg.export("c", tmp_path / "two")
        assert (out / weights.path).read_bytes() == (tiny_lora / weights.path).read_bytes()


def test_a_large_blob_goes_up_in_parts_and_its_etag_is_checked(
        bucket_url: str, raw_s3: Any, tmp_path: Path) -> None:
    from registry.blobs import open_blob_store
    from registry.blobs.s3 import MULTIPART_THRESHOLD, _hash_for_upload
    from registry.config import load_settings

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 3 * 1024**2 + 17))
    store = open_blob_store(load_settings())
    sha, size = store.put_file(big)
    sums = _hash_for_upload(big)
    head = raw_s3.head_object(Bucket=bucket_url[5:].split("/")[0], Key=store.key(sha))  # type: ignore[attr-defined]
    assert head["ContentLength"] == size == big.stat().st_size
    assert sums.multipart_etag is not None and sums.multipart_etag.endswith("-5")
    etag = head["ETag"].strip('"')
    if "-" in etag:  # a server that keeps S3's multipart ETag: it is the one adapt computed
        assert etag == sums.multipart_etag
    assert store.verify(sha) is None


def test_an_unreachable_store_is_one_line_exit_9_and_no_row(
        bucket_url: str, tiny_lora: Path, adapt_home: Path) -> None:
    from tests.team.conftest import free_port

    dead = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    assert _adapt(["list"], adapt_home, {"ADAPT_BLOB_URL": ""}).returncode == 0  # a registry
    p = _adapt(["add", str(tiny_lora), "--name", "gone"], adapt_home, dead)
    assert p.returncode == 9, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert bucket_url.split("/")[2] in p.stderr and "secret" not in p.stderr.lower()
    p = _adapt(["list", "--json"], adapt_home, {"ADAPT_BLOB_URL": ""})
    assert p.returncode == 0 and "gone" not in p.stdout


def test_a_bucket_url_without_the_extra_names_it(bucket_url: str, adapt_home: Path) -> None:
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from registry.cli.app import main; sys.argv = ['adapt', 'list']; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "ADAPT_HOME": str(adapt_home)}, timeout=120)
    assert p.returncode == 9, p.stderr
    assert "adapt[team]" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_many_versions_share_blobs_and_gc_removes_only_orphans(
        bucket_url: str, raw_s3: Any, tiny_base: Path, tmp_path: Path) -> None:
    from registry import Registry

    one = make_lora(tiny_base, tmp_path / "one", r=2, seed=7, targets=["q_proj"])
    two = make_lora(tiny_base, tmp_path / "two", r=2, seed=8, targets=["q_proj"])
    with Registry() as reg:
        reg.add(one, name="g")
        reg.add(two, name="g")
        before = set(_objects(raw_s3, bucket_url))
        reg.remove("g@1")
        report = reg.gc()
        after = set(_objects(raw_s3, bucket_url))
        assert len(report.removed_blobs) >= 1 and report.removed_bytes > 0
        assert before - after == {f"team/{s[:2]}/{s[2:]}" for s in report.removed_blobs}
        assert reg.fsck(verify_hashes=True).ok
        reg.export("g@2", tmp_path / "out")
