"""Push and pull through the real huggingface_hub client against a local Hub server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from registry import Registry
from registry.errors import IntegrityError, RemoteError
from registry.registry import ParentLink
from tests.cli import run_adapt
from tests.hub.conftest import TOKEN
from tests.hub.server import HubServer

LOCAL_KEYS = {"created_at", "hub", "source"}


def _portable(shown: dict[str, Any]) -> dict[str, Any]:
    """`adapt show --json` without local times, paths and row ids."""
    out = {k: v for k, v in shown.items() if k not in LOCAL_KEYS}
    out["scores"] = [{k: v for k, v in s.items() if k not in ("created_at", "run_id")}
                     for s in shown["scores"]]
    out["validation_runs"] = [{k: v for k, v in r.items() if k != "id"}
                              for r in shown["validation_runs"]]
    return out


@pytest.fixture
def source_reg(tmp_path: Path, tiny_lora: Path, tiny_lora_r8: Path, tiny_base: Path):
    """A registry with bot@1 (r4, scored, on tiny_base) and bot@2 (r8, child of bot@1)."""
    reg = Registry(home=tmp_path / "source")
    from registry.db.models import ValidationRun

    v1 = reg.add(tiny_lora, name="bot", base=tiny_base, tags=["prod"], note="first").version
    with reg.catalog.write() as s:  # a finished validation run, as `adapt validate` records one
        run = ValidationRun(version_id=v1.id, base_fingerprint=v1.base_fingerprint,
                            status="passed", figures={"ppl": 12.5}, gates=[])
        s.add(run)
        s.commit()
    reg.add_score("bot@1", "ppl", 12.5, dataset="wiki", run_id=run.id)
    reg.add(tiny_lora_r8, name="bot", parents=[ParentLink("bot@1", weight=0.5, role="parent")])
    reg.add_score("bot@2", "accuracy", 0.75)
    yield reg
    reg.close()


def test_round_trip_keeps_show_json(hub: HubServer, source_reg: Registry, tmp_path: Path) -> None:
    from registry.hub import pull, push

    # tags are local unless published (push --tags) and applied (pull --tags)
    pushed = push(source_reg, "bot", all_versions=True, publish_tags=True)
    assert pushed.repo == "alice/bot"
    assert [v.tag for v in pushed.versions] == ["v1", "v2"]
    assert {t for t in hub.state.repos["alice/bot"].tags} == {"v1", "v2"}

    target = Registry(home=tmp_path / "target")
    pulled = pull(target, "alice/bot", all_versions=True, apply_tags=True)
    assert [v.ref for v in pulled.versions] == ["bot@1", "bot@2"]
    for ref in ("bot@1", "bot@2"):
        assert _portable(target.show(ref)) == _portable(source_reg.show(ref))
    pulled_v1 = target.show("bot@1")
    assert pulled_v1["scores"][0]["run_id"] == pulled_v1["validation_runs"][0]["id"]
    hub_rows = target.show("bot@2")["hub"]
    assert hub_rows[0]["repo"] == "alice/bot" and hub_rows[0]["direction"] == "pull"
    assert hub_rows[0]["commit"] == hub.state.repos["alice/bot"].tags["v2"]
    target.close()


def test_push_of_unchanged_version_sends_no_bytes_and_no_commit(
        hub: HubServer, source_reg: Registry) -> None:
    from registry.hub import push

    first = push(source_reg, "bot@2", repo="acme/bot")
    assert first.versions[0].state == "pushed"
    received, commits = hub.state.received_file_bytes, hub.state.commit_count
    again = push(source_reg, "bot@2", repo="acme/bot")
    assert again.versions[0].state == "unchanged"
    assert again.versions[0].commit == first.versions[0].commit
    assert (hub.state.received_file_bytes, hub.state.commit_count) == (received, commits)


def test_push_adds_only_the_new_version(hub: HubServer, source_reg: Registry) -> None:
    from registry.hub import push

    push(source_reg, "bot@1")
    commits = hub.state.commit_count
    result = push(source_reg, "bot", all_versions=True)
    assert [v.state for v in result.versions] == ["unchanged", "pushed"]
    assert hub.state.commit_count == commits + 1
    assert sorted(hub.state.repos["alice/bot"].tags) == ["v1", "v2"]


@pytest.mark.parametrize("path", ["adapter_model.safetensors", "adapter_config.json"])
def test_pull_refuses_tampered_blob_and_registers_nothing(
        hub: HubServer, source_reg: Registry, tmp_path: Path, path: str) -> None:
    from registry.hub import pull, push

    push(source_reg, "bot", all_versions=True)
    hub.state.tamper("alice/bot", "v2", path)  # LFS object, or a regular git blob
    target = Registry(home=tmp_path / "target")
    with pytest.raises(IntegrityError, match=path):
        pull(target, "alice/bot", all_versions=True)
    assert target.list_versions(all_versions=True) == []
    target.close()


def _upload_plain_peft(adapter_dir: Path, repo_id: str) -> None:
    """A repo as `model.push_to_hub` makes it: PEFT files only, no adapt.json."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id)
    api.create_commit(repo_id, [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(adapter_dir / p))
        for p in ("adapter_config.json", "adapter_model.safetensors")
    ], commit_message="upload adapter")


def test_pull_plain_peft_repo_reads_adapter_config(
        hub: HubServer, registry: Registry, tiny_lora: Path, tiny_base: Path) -> None:
    from registry.hub import pull

    _upload_plain_peft(tiny_lora, "alice/Plain-LoRA")
    result = pull(registry, "alice/Plain-LoRA")
    assert result.versions[0].ref == "plain-lora@1" and not result.versions[0].has_manifest
    shown = registry.show("plain-lora@1")
    assert shown["rank"] == 4 and shown["method"] == "LORA"
    assert shown["base_fingerprint"] is None
    again = pull(registry, "alice/Plain-LoRA", base=tiny_base)
    assert again.versions[0].created is False  # same bytes: the same version
    with_base = pull(registry, "alice/Plain-LoRA", name="plain-based", base=tiny_base)
    fingerprint = registry.fingerprint(tiny_base).fingerprint
    assert registry.show(with_base.versions[0].ref)["base_fingerprint"] == fingerprint


def test_remote_status_lists_both_sides(hub: HubServer, source_reg: Registry) -> None:
    from registry.hub import push, remote_status

    push(source_reg, "bot@1")
    status = remote_status(source_reg, "bot")
    states = {r["ref"]: r["state"] for r in status["versions"]}
    assert states == {"bot@1": "on hub", "bot@2": "local only"}
    assert status["main"] == hub.state.repos["alice/bot"].tags["v1"]


def test_cli_errors_name_the_fix(hub: HubServer, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, registry: Registry,
                                 tiny_lora: Path) -> None:
    registry.add(tiny_lora, name="bot")
    missing = run_adapt(capsys, "pull", "alice/nope")
    assert missing.code == 3 and "Hub repo not found: alice/nope" in missing.err
    run_adapt(capsys, "push", "bot")
    bad_rev = run_adapt(capsys, "pull", "alice/bot@v9")
    assert bad_rev.code == 3 and "alice/bot@v9" in bad_rev.err
    monkeypatch.delenv("HF_TOKEN")
    no_token = run_adapt(capsys, "push", "bot", "--repo", "bob/bot")
    assert no_token.code == 10 and "hf auth login" in no_token.err and "HF_TOKEN" in no_token.err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    forbidden = run_adapt(capsys, "push", "bot", "--repo", "bob/bot")
    assert forbidden.code == 10 and "no permission" in forbidden.err


def test_network_failure_is_a_remote_error_with_nothing_registered(
        hub: HubServer, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from huggingface_hub import constants

    from registry.hub import pull

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        dead + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(RemoteError, match="cannot reach the Hub"):
        pull(registry, "alice/bot")
    assert registry.list_versions(all_versions=True) == []


def test_token_never_in_output_or_registry_files(
        hub: HubServer, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        adapt_home: Path, tiny_lora: Path) -> None:
    outputs = []
    outputs.append(run_adapt(capsys, "add", str(tiny_lora), "--name", "bot"))
    outputs.append(run_adapt(capsys, "push", "bot"))
    outputs.append(run_adapt(capsys, "push", "bot", "--json"))
    outputs.append(run_adapt(capsys, "remote", "status", "bot", "--json"))
    outputs.append(run_adapt(capsys, "pull", "alice/bot@v1", "--name", "copy", "--json"))
    outputs.append(run_adapt(capsys, "pull", "alice/missing"))
    assert [o.code for o in outputs] == [0, 0, 0, 0, 0, 3]
    assert json.loads(outputs[4].out)["versions"][0]["tag"] == "v1"
    for o in outputs:
        assert TOKEN not in o.out and TOKEN not in o.err
    for path in adapt_home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_pushed_manifest_is_valid_and_card_has_metadata(hub: HubServer,
                                                        source_reg: Registry) -> None:
    from registry.hub import push
    from registry.schemas import validate
    from tests.hub.server import resolve_revision

    push(source_reg, "bot@1")
    repo = hub.state.repos["alice/bot"]
    tree = repo.commits[resolve_revision(repo, "v1")]
    manifest = json.loads(hub.state.git[tree["adapt.json"].blob_id])
    validate(manifest, "adapter-manifest")
    # local tags stay local unless `push --tags`
    assert manifest["scores"][0]["metric"] == "ppl" and manifest["tags"] == []
    card = hub.state.git[tree["README.md"].blob_id].decode()
    assert "library_name: peft" in card and "- lora" in card and "model-index" in card
    assert "PeftModel.from_pretrained" in card


def test_published_tags_are_immutable(hub: HubServer, source_reg: Registry) -> None:
    from registry.errors import UsageError
    from registry.hub import push

    push(source_reg, "bot@2")
    source_reg.add_score("bot@2", "bleu", 30.0)
    commits = hub.state.commit_count
    result = push(source_reg, "bot@2")
    assert result.versions[0].state == "metadata-differs"
    assert hub.state.commit_count == commits
    with pytest.raises(UsageError, match="already has v2"):
        push(source_reg, "bot@1")  # older than the Hub's newest: main only moves forward


def test_single_version_pull_points_lineage_at_the_hub_tag(
        hub: HubServer, source_reg: Registry, tmp_path: Path) -> None:
    from registry.hub import pull, push

    push(source_reg, "bot", all_versions=True)
    target = Registry(home=tmp_path / "target")
    calls: list[tuple[int, int | None]] = []
    result = pull(target, "alice/bot@v2", on_progress=lambda d, t: calls.append((d, t)))
    # the pulled version keeps its remote number where the local line is free
    assert calls and calls[-1][0] == calls[-1][1] == target.resolve("bot@2").size_bytes
    assert result.versions[0].ref == "bot@2" and result.versions[0].tag == "v2"
    parent = target.show("bot@2")["parents"][0]
    assert parent["ref"] == "hf://alice/bot@v1" and parent["state"] == "remote"
    assert target.show("bot@2")["scores"][0]["metric"] == "accuracy"
    target.close()


def test_pull_refuses_files_that_disagree_with_adapt_json(
        hub: HubServer, source_reg: Registry, tmp_path: Path) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    from registry.hub import pull, push

    push(source_reg, "bot@1")
    repo = hub.state.repos["alice/bot"]
    manifest = json.loads(hub.state.git[repo.commits[repo.branches["main"]]["adapt.json"].blob_id])
    for f in manifest["files"]:
        if f["path"] == "adapter_model.safetensors":
            f["sha256"] = "0" * 64
    HfApi().create_commit("alice/bot", [CommitOperationAdd(
        path_in_repo="adapt.json", path_or_fileobj=json.dumps(manifest).encode())],
        commit_message="edit the manifest by hand")
    target = Registry(home=tmp_path / "target")
    with pytest.raises(IntegrityError, match="against adapt.json"):
        pull(target, "alice/bot")
    assert target.list_versions(all_versions=True) == []
    target.close()


def test_remote_status_shows_versions_only_on_the_hub(
        hub: HubServer, source_reg: Registry, tmp_path: Path) -> None:
    from registry.hub import pull, push, remote_status

    push(source_reg, "bot", all_versions=True)
    partial = Registry(home=tmp_path / "partial")
    pull(partial, "alice/bot@v1")
    status = remote_status(partial, "bot")
    assert [(r["ref"], r["hub_tag"], r["state"]) for r in status["versions"]] == [
        ("bot@1", "v1", "on hub"), (None, "v2", "hub only")]
    partial.close()


def test_outage_midway_through_a_pull_registers_nothing(
        hub: HubServer, source_reg: Registry, tmp_path: Path) -> None:
    from registry.hub import pull, push

    push(source_reg, "bot", all_versions=True)
    v2 = hub.state.repos["alice/bot"].tags["v2"]
    # 507: a server error the client does not retry (503 would wait out its backoff)
    hub.state.fail_resolve[f"{v2}/adapter_model.safetensors"] = 507
    target = Registry(home=tmp_path / "target")
    with pytest.raises(RemoteError, match="507"):
        pull(target, "alice/bot", all_versions=True)  # v1 downloads fine, v2 fails
    assert target.list_versions(all_versions=True) == []
    target.close()


def test_remote_status_before_the_first_push(hub: HubServer, source_reg: Registry) -> None:
    from registry.hub import remote_status

    status = remote_status(source_reg, "bot")
    assert status["repo"] == "alice/bot" and status["exists"] is False
    assert [r["state"] for r in status["versions"]] == ["local only", "local only"]


def test_model_card_parses_with_huggingface_hub(hub: HubServer, source_reg: Registry) -> None:
    from huggingface_hub import ModelCard

    from registry.manifest import build_manifest, build_model_card

    card = ModelCard(build_model_card(build_manifest(source_reg, "bot@1"), "acme/bot"))
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert card.data.eval_results[0].metric_type == "ppl"
    assert card.data.eval_results[0].metric_value == 12.5
