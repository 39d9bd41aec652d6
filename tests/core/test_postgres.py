"""The registry on a real PostgreSQL server (ADAPT_TEST_PG_URL; `.ci/run` starts one)."""

from __future__ import annotations

import json
import os
import uuid
from multiprocessing import get_context
from pathlib import Path

import pytest

from tests.core.test_reliability import _adapt

URL = os.environ.get("ADAPT_TEST_PG_URL")
pytestmark = pytest.mark.postgres

if not URL and os.environ.get("CI"):
    raise RuntimeError("CI must run the PostgreSQL tests: .ci/run sets ADAPT_TEST_PG_URL")


@pytest.fixture
def pg_url() -> str:
    if not URL:
        pytest.skip("set ADAPT_TEST_PG_URL to a PostgreSQL database to run these")
    from sqlalchemy import create_engine, text

    name = "adapt_" + uuid.uuid4().hex[:10]
    admin = create_engine(URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_registry_works_on_postgresql(pg_url: str, tiny_lora: Path, tiny_lora_r8: Path,
                                      tiny_base: Path, tmp_path: Path) -> None:
    from registry import Registry

    with Registry(home=tmp_path / "home", db_url=pg_url) as reg:
        assert reg.engine.dialect.name == "postgresql"
        v1 = reg.add(tiny_lora, name="pg", base=tiny_base, tags=["prod"]).version
        v2 = reg.add(tiny_lora_r8, name="pg").version
        assert (v1.ref, v2.ref) == ("pg@1", "pg@2")
        assert reg.add(tiny_lora, name="pg").created is False
        reg.add_score("pg@2", "ppl", 3.5)
        assert reg.resolve("pg:prod").version == 1
        rows = reg.list_versions(all_versions=True)
        assert [r["ref"] for r in rows] == ["pg@1", "pg@2"]
        assert reg.show("pg")["scores"][0]["value"] == 3.5
        by_base = reg.list_versions(base=v1.base_fingerprint[:12], all_versions=True)
        assert [r["ref"] for r in by_base] == ["pg@1"]
        reg.remove("pg@1", force=True)  # tagged prod: rm needs --force
        assert len(reg.gc().removed_blobs) == 2
        assert reg.fsck().ok


def _add(args: tuple[str, str, str, str]) -> int:
    path, name, home, url = args
    return _adapt(["add", path, "--name", name], Path(home), {"ADAPT_DB_URL": url}).returncode


def test_concurrent_adds_on_postgresql(pg_url: str, tiny_lora: Path, tiny_lora_r8: Path,
                                       tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    jobs = [(str(p), f"c{i}", home, pg_url) for i, p in enumerate([tiny_lora, tiny_lora_r8] * 2)]
    with get_context("spawn").Pool(4) as pool:
        assert pool.map(_add, jobs) == [0, 0, 0, 0]
    out = _adapt(["list", "--json"], Path(home), {"ADAPT_DB_URL": pg_url}).stdout
    assert sorted(x["ref"] for x in json.loads(out)) == ["c0@1", "c1@1", "c2@1", "c3@1"]
