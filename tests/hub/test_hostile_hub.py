"""A hostile Hub never writes outside adapt's directories and never gets past a one-line error
(hardening issue, items 1 and 2): identifiers from the server are checked before use, sizes
before downloading, digests before anything is registered, and local tags never move unasked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import Registry
from registry.errors import IntegrityError, RemoteError
from tests.cli import run_adapt
from tests.hub.server import HubServer


@pytest.fixture
def pushed(hub: HubServer, tmp_path: Path, tiny_lora: Path, tiny_base: Path) -> Registry:
    reg = Registry(home=tmp_path / "source")
    reg.add(tiny_lora, name="bot", base=tiny_base)
    reg.push("bot", repo="alice/bot")
    return reg


def _everything_under(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*")}


@pytest.mark.parametrize("commit", ["../../escaped-commit", "a" * 39, "/etc/passwd",
                                    "0123456789abcdef0123456789abcdef0123456G"])
def test_pull_refuses_a_commit_id_that_is_not_40_hex(
        hub: HubServer, pushed: Registry, tmp_path: Path, commit: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    hub.state.hostile["commit"] = commit
    Registry(home=tmp_path / "target").close()  # an existing registry: no "created" line
    monkeypatch.setenv("ADAPT_HOME", str(tmp_path / "target"))
    res = run_adapt(capsys, "pull", "alice/bot@v1")
    assert res.code == 10 and "invalid commit id" in res.err, res.err
    assert len(res.err.strip().splitlines()) == 1
    assert "escaped-commit" not in _everything_under(tmp_path.parent)
    assert Registry(home=tmp_path / "target").list_versions(all_versions=True) == []


def test_an_etag_with_dot_dot_never_places_bytes_outside(
        hub: HubServer, pushed: Registry, tmp_path: Path) -> None:
    hub.state.hostile["etag"] = "../../../../escaped-etag"
    target = Registry(home=tmp_path / "target")
    result = target.pull("alice/bot@v1")  # bytes go where adapt puts them, verified by sha256
    assert result.versions[0].ref == "bot@1"
    assert target.resolve("bot@1").digest == pushed.resolve("bot@1").digest
    assert "escaped-etag" not in _everything_under(tmp_path.parent)


def test_a_file_bigger_than_its_manifest_says_is_refused_before_download(
        hub: HubServer, pushed: Registry, tmp_path: Path) -> None:
    hub.state.hostile["size"] = 2 << 30  # 2 GB advertised for a ~30 KB adapter
    hub.state.requests.clear()
    target = Registry(home=tmp_path / "target")
    with pytest.raises(RemoteError, match="more than"):
        target.pull("alice/bot@v1")
    assert not [r for r in hub.state.requests if "adapter_model.safetensors" in r
                and "/resolve/" in r], "the weights were requested anyway"
    assert target.list_versions(all_versions=True) == []


def test_an_invalid_lfs_digest_is_refused(hub: HubServer, pushed: Registry,
                                         tmp_path: Path) -> None:
    hub.state.hostile["lfs_oid"] = "../" * 10 + "x"
    with pytest.raises(RemoteError, match="invalid sha256"):
        Registry(home=tmp_path / "target").pull("alice/bot@v1")


def test_a_digest_lie_moves_no_local_tag_and_registers_nothing(
        hub: HubServer, pushed: Registry, tmp_path: Path, tiny_lora_r8: Path) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    target = Registry(home=tmp_path / "target")
    target.add(tiny_lora_r8, name="bot", tags=["prod"])
    repo = hub.state.repos["alice/bot"]
    manifest = json.loads(hub.state.git[repo.commits[repo.branches["main"]]["adapt.json"].blob_id])
    manifest["digest"] = "sha256:" + "1" * 64
    manifest["tags"] = ["prod"]
    HfApi().create_commit("alice/bot", [CommitOperationAdd(
        path_in_repo="adapt.json", path_or_fileobj=json.dumps(manifest).encode())],
        commit_message="lie about the digest")
    with pytest.raises(IntegrityError, match="digest"):
        target.pull("alice/bot", apply_tags=True)
    assert target.resolve("bot:prod").digest == target.resolve("bot@1").digest
    assert [v.ref for v in target.list_versions(all_versions=True)] == ["bot@1"]


@pytest.mark.parametrize("lie", ["deep", "nan", "version"])
def test_a_hostile_manifest_is_refused_in_one_line(
        hub: HubServer, pushed: Registry, tmp_path: Path, lie: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    repo = hub.state.repos["alice/bot"]
    text = hub.state.git[repo.commits[repo.branches["main"]]["adapt.json"].blob_id].decode()
    if lie == "deep":
        text = text.rstrip()[:-1] + ', "recipe": ' + "[" * 20000 + "]" * 20000 + "}"
    elif lie == "nan":
        assert '"scores": []' in text
        text = text.replace('"scores": []', '"scores": [{"metric": "m", "value": NaN}]')
    else:
        assert '\n  "version": 1\n' in text
        text = text.replace('\n  "version": 1\n', '\n  "version": 1e30\n', 1)
    HfApi().create_commit("alice/bot", [CommitOperationAdd(
        path_in_repo="adapt.json", path_or_fileobj=text.encode())], commit_message="hostile")
    Registry(home=tmp_path / "target").close()
    monkeypatch.setenv("ADAPT_HOME", str(tmp_path / "target"))
    res = run_adapt(capsys, "pull", "alice/bot")
    assert res.code == 6, res.err
    assert len(res.err.strip().splitlines()) == 1 and "internal error" not in res.err
    assert Registry(home=tmp_path / "target").list_versions(all_versions=True) == []
