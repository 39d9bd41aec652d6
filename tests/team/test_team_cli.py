"""`adapt init`, `adapt env`, `adapt cache ls/prune` and `adapt blobs migrate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.core.test_reliability import _adapt
from tests.factories import make_lora


def _run(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    p = _adapt(list(args), home, env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if "--json" in args else p.stdout


def test_init_writes_a_config_that_every_command_reads(
        bucket_url: str, tiny_lora: Path, adapt_home: Path, tmp_path: Path,
        monkeypatch: Any, raw_s3: Any) -> None:
    monkeypatch.delenv("ADAPT_BLOB_URL")
    db = f"sqlite:///{tmp_path / 'team.db'}"
    out = _run(adapt_home, "init", "--db", db, "--blobs", bucket_url, "--json")
    config = adapt_home / "config.toml"
    assert out["config"] == str(config) and out["blob_store"] == bucket_url
    assert "secret" not in config.read_text().lower()
    env = _run(adapt_home, "env", "--json")["registry"]
    assert (env["database"], env["blob_store"], env["blob_backend"]) == (db, bucket_url, "s3")
    assert env["config_file"] == str(config)
    _run(adapt_home, "add", str(tiny_lora), "--name", "cfg")
    bucket, prefix = bucket_url[5:].split("/", 1)
    assert len(raw_s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]) == 2
    assert (tmp_path / "team.db").is_file() and not (adapt_home / "blobs").exists()


def test_init_refuses_a_password_in_a_url_and_keeps_the_old_config(adapt_home: Path) -> None:
    _run(adapt_home, "init", "--db", f"sqlite:///{adapt_home / 'a.db'}")
    before = (adapt_home / "config.toml").read_text()
    p = _adapt(["init", "--db", "postgresql+psycopg://me:hunter2@db/adapt"], adapt_home)
    assert p.returncode == 2 and "hunter2" not in p.stderr + p.stdout
    assert len(p.stderr.strip().splitlines()) == 1
    assert (adapt_home / "config.toml").read_text() == before
    p = _adapt(["init", "--blobs", "ftp://somewhere/x"], adapt_home)
    assert p.returncode == 2 and (adapt_home / "config.toml").read_text() == before


def test_cache_keeps_the_most_recently_used_blobs_within_its_limit(
        bucket_url: str, tiny_base: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    loras = [make_lora(tiny_base, tmp_path / f"l{i}", r=2, seed=40 + i, targets=["q_proj"])
             for i in range(3)]
    writer = tmp_path / "writer"
    for lora in loras:
        _run(writer, "add", str(lora), "--name", "cached", env={"ADAPT_DB_URL": db})
    weights = (loras[0] / "adapter_model.safetensors").stat().st_size
    config = (loras[0] / "adapter_config.json").stat().st_size
    reader = tmp_path / "reader"
    # room for one version's two files and a little more: older blobs go first
    env = {"ADAPT_DB_URL": db, "ADAPT_CACHE_MAX_BYTES": str(weights + config * 2 + 100)}
    for n in (1, 2, 3):
        _run(reader, "export", f"cached@{n}", str(tmp_path / f"out{n}"), env=env)
    listing = _run(reader, "cache", "ls", "--json", env=env)
    assert listing["total_bytes"] <= listing["max_bytes"]
    with_three = {f["sha256"] for f in _run(reader, "show", "cached@3", "--json",
                                            env=env)["files"]}
    assert with_three <= {b["sha256"] for b in listing["blobs"]}
    pruned = _run(reader, "cache", "prune", "--all", "--json", env=env)
    assert pruned["kept_bytes"] == 0 and len(pruned["removed"]) == len(listing["blobs"])
    assert _run(reader, "cache", "ls", "--json", env=env)["blobs"] == []
    _run(reader, "export", "cached@1", str(tmp_path / "again"), env=env)  # fetched again


def test_migrate_copies_a_local_store_to_a_bucket_resumably_and_switches(
        bucket_url: str, raw_s3: Any, tiny_lora: Path, tiny_lora_r8: Path, adapt_home: Path,
        monkeypatch: Any, tmp_path: Path) -> None:
    from registry.blobs import open_blob_store
    from registry.config import load_settings

    monkeypatch.delenv("ADAPT_BLOB_URL")
    _run(adapt_home, "add", str(tiny_lora), "--name", "m")
    _run(adapt_home, "add", str(tiny_lora_r8), "--name", "m")
    local = adapt_home / "blobs"
    shas = sorted(p.parent.name + p.name for p in local.glob("??/*"))
    assert len(shas) == 4
    # an interrupted earlier run had copied one blob
    target = open_blob_store(load_settings(blob_url=bucket_url))
    target.put_file(local / shas[0][:2] / shas[0][2:], expected_sha256=shas[0])
    report = _run(adapt_home, "blobs", "migrate", "--to", bucket_url, "--json")
    assert (report["copied"], report["skipped"], report["switched"]) == (3, 1, True)
    assert report["missing_rows"] == []
    assert _run(adapt_home, "blobs", "migrate", "--to", bucket_url, "--json")["skipped"] == 4
    shutil.rmtree(local)  # the bucket alone now serves the registry
    assert _run(adapt_home, "env", "--json")["registry"]["blob_backend"] == "s3"
    out = tmp_path / "out"
    _run(adapt_home, "export", "m@2", str(out))
    assert (out / "adapter_model.safetensors").read_bytes() == (
        tiny_lora_r8 / "adapter_model.safetensors").read_bytes()
    fsck = _adapt(["fsck", "--json"], adapt_home)
    assert fsck.returncode == 0, fsck.stdout
