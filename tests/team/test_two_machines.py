"""Two "machines" (two ADAPT_HOMEs) sharing one PostgreSQL database and one S3 bucket."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.core.test_reliability import _adapt
from tests.factories import make_lora

PG = os.environ.get("ADAPT_TEST_PG_URL")
pytestmark = pytest.mark.postgres

if not PG and os.environ.get("CI"):
    raise RuntimeError("CI must run the team tests: .ci/run sets ADAPT_TEST_PG_URL")


@pytest.fixture
def team(bucket_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh PostgreSQL database as ADAPT_DB_URL (the bucket is ADAPT_BLOB_URL)."""
    if not PG:
        pytest.skip("set ADAPT_TEST_PG_URL to a PostgreSQL database to run these")
    from sqlalchemy import create_engine, text

    name = "adapt_team_" + uuid.uuid4().hex[:10]
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = PG.rsplit("/", 1)[0] + "/" + name
    monkeypatch.setenv("ADAPT_DB_URL", url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="module")
def eight_loras(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("team-eight")
    return [make_lora(tiny_base, root / f"l{i}", r=2, seed=300 + i, targets=["q_proj"])
            for i in range(8)]


def test_add_on_one_machine_export_merge_and_validate_on_the_other(
        team: str, tiny_lora: Path, tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from registry import Registry
    from registry.ops.merge import merge_adapter_into_base
    from registry.ops.options import MergeOptions
    from registry.validation import PerfSettings, ValidationOptions

    with Registry(home=tmp_path / "a") as a:
        ref = a.add(tiny_lora, name="shared", base=tiny_base, tags=["prod"]).version.ref
    with Registry(home=tmp_path / "b") as b:
        assert b.resolve("shared:prod").ref == ref
        out = b.export("shared:prod", tmp_path / "exported")
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            assert (out / name).read_bytes() == (tiny_lora / name).read_bytes()
        b.merge(ref, tiny_base, tmp_path / "merged")
        report = b.validate(ref, ValidationOptions.build(
            tiny_base, device="cpu", dtype="float32", perf=PerfSettings(batch=1, length=8,
                                                                        repeats=1)))
        assert report.status == "passed", report
    # the same merge from the original directory, on no registry at all: identical tensors
    merge_adapter_into_base(tiny_lora, tiny_base, tmp_path / "oracle", MergeOptions())
    got = load_file(str(next((tmp_path / "merged").glob("*.safetensors"))))
    want = load_file(str(next((tmp_path / "oracle").glob("*.safetensors"))))
    assert got.keys() == want.keys()
    assert all(got[k].equal(want[k]) for k in want)
    with Registry(home=tmp_path / "a") as a:  # A sees B's run
        assert a.fsck(verify_hashes=True).ok


def test_eight_concurrent_adds_from_two_machines_give_eight_versions(
        team: str, eight_loras: list[Path], tmp_path: Path) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    for home in homes:  # each machine's first command creates its home
        assert _adapt(["list"], home).returncode == 0

    def add(i: int) -> tuple[int, str]:
        p = _adapt(["add", str(eight_loras[i]), "--name", "race"], homes[i % 2])
        return p.returncode, p.stderr

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(add, range(8)))
    assert all(code == 0 for code, _ in results), results
    from registry import Registry

    with Registry(home=tmp_path / "b") as b:
        rows = b.list_versions(all_versions=True)
        assert sorted(r["ref"] for r in rows) == [f"race@{n}" for n in range(1, 9)]
        assert len({b.resolve(r["ref"]).digest for r in rows}) == 8
        assert b.fsck(verify_hashes=True).ok


def test_gc_between_another_machines_upload_and_commit_loses_nothing(
        team: str, tiny_lora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's blobs are in the bucket, its rows not yet: A's gc removes them as orphans, and B's
    add (which checks every blob again under the database-wide write lock) puts them back."""
    import registry.registry as registry_module
    from registry import Registry

    a = Registry(home=tmp_path / "a")
    removed: list[str] = []

    def gc_on_a(name: str) -> None:
        if name == "after_blobs":
            removed.extend(a.gc().removed_blobs)

    monkeypatch.setattr(registry_module, "_crash_point", gc_on_a)
    with Registry(home=tmp_path / "b") as b:
        info = b.add(tiny_lora, name="raced").version
    assert sorted(removed) == sorted(f.sha256 for f in info.files)  # the race really happened
    assert a.fsck(verify_hashes=True).ok
    assert a.gc().removed_blobs == []
    a.export("raced", tmp_path / "out")
    a.close()


def test_gc_on_one_machine_while_the_other_adds_keeps_every_version(
        team: str, eight_loras: list[Path], tmp_path: Path) -> None:
    from registry import Registry

    homes = [tmp_path / "a", tmp_path / "b"]
    for home in homes:
        assert _adapt(["list"], home).returncode == 0
    assert _adapt(["add", str(eight_loras[0]), "--name", "old"], homes[0]).returncode == 0
    assert _adapt(["rm", "old@1", "--yes"], homes[0]).returncode == 0
    stop = threading.Event()
    gc_codes: list[int] = []

    def collect() -> None:
        while not stop.is_set():
            gc_codes.append(_adapt(["gc"], homes[0]).returncode)

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        adds = [_adapt(["add", str(p), "--name", "busy"], homes[1]) for p in eight_loras[1:5]]
    finally:
        stop.set()
        collector.join()
    assert [p.returncode for p in adds] == [0] * 4, [p.stderr for p in adds]
    assert gc_codes and set(gc_codes) == {0}
    with Registry(home=homes[0]) as a:
        report = a.fsck(verify_hashes=True)
        assert report.ok, report.problems
        for n in range(1, 5):
            a.export(f"busy@{n}", tmp_path / f"out{n}")
