"""Push names the base by its Hub id and never publishes a local filesystem path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from registry import Registry
from tests.hub.server import HubServer, resolve_revision

HUB_ID = "acme-labs/tiny-llama"


def _published(hub: HubServer, repo_id: str, tag: str) -> dict[str, bytes]:
    repo = hub.state.repos[repo_id]
    tree = repo.commits[resolve_revision(repo, tag)]
    return {path: (repo.lfs[e.sha256] if e.sha256 else hub.state.git[e.blob_id])
            for path, e in tree.items()}


def _front_matter(card: str) -> dict:
    import yaml

    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def named_base(tmp_path: Path, tiny_base: Path) -> Path:
    """tiny_base as downloaded from the Hub: its config.json names its Hub id."""
    base = tmp_path / "models" / "tiny-llama"
    shutil.copytree(tiny_base, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "_name_or_path": HUB_ID}))
    return base


def test_card_names_base_hub_id_and_no_local_path_is_published(
        hub: HubServer, tmp_path: Path, tiny_lora: Path, named_base: Path) -> None:
    from registry.hub import push

    reg = Registry(home=tmp_path / "home")
    # the adapter's own config names the base by a local path (PEFT writes what it loaded)
    assert Path(json.loads((tiny_lora / "adapter_config.json").read_text())
                ["base_model_name_or_path"]).is_absolute()
    reg.add(tiny_lora, name="bot", base=named_base)
    push(reg, "bot@1")
    files = _published(hub, "alice/bot", "v1")

    card = files["README.md"].decode()
    meta = _front_matter(card)
    assert meta["base_model"] == HUB_ID
    assert meta["base_model_relation"] == "adapter"
    assert f'from_pretrained("{HUB_ID}")' in card
    manifest = json.loads(files["adapt.json"])
    assert manifest["base_model"] == HUB_ID
    assert manifest["source"] == tiny_lora.name  # added from disk: its directory's name only
    local = {str(tmp_path), str(tiny_lora), str(tiny_lora.parent), str(named_base),
             str(Path.home())}
    for name in ("README.md", "adapt.json"):
        text = files[name].decode()
        leaked = [p for p in local if p in text]
        assert not leaked, f"{name} publishes {leaked}"
    reg.close()


def test_base_known_only_by_path_leaves_base_model_out(
        hub: HubServer, tmp_path: Path, tiny_lora: Path, tiny_base: Path) -> None:
    from registry.hub import push

    reg = Registry(home=tmp_path / "home")
    reg.add(tiny_lora, name="bot", base=tiny_base)
    push(reg, "bot@1")
    files = _published(hub, "alice/bot", "v1")
    meta = _front_matter(files["README.md"].decode())
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert json.loads(files["adapt.json"])["base_model"] is None
    for name in ("README.md", "adapt.json"):
        assert str(tiny_base) not in files[name].decode()
        assert str(tiny_lora) not in files[name].decode()
    reg.close()


def test_pull_records_the_hub_commit_as_source(hub: HubServer, tmp_path: Path,
                                               tiny_lora: Path, tiny_base: Path) -> None:
    from registry.hub import pull, push

    reg = Registry(home=tmp_path / "home")
    reg.add(tiny_lora, name="bot", base=tiny_base)
    push(reg, "bot@1")
    target = Registry(home=tmp_path / "target")
    pull(target, "alice/bot")
    commit = hub.state.repos["alice/bot"].tags["v1"]
    assert target.show("bot@1")["source"] == f"hf://alice/bot@{commit}"
    target.close()
    reg.close()


def test_base_add_hub_id_names_a_base_whose_config_does_not(
        hub: HubServer, tmp_path: Path, tiny_lora: Path, tiny_base: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli import run_adapt

    monkeypatch.setenv("ADAPT_HOME", str(tmp_path / "home"))
    Registry(home=tmp_path / "home").close()
    res = run_adapt(capsys, "base", "add", tiny_base, "--name", "tiny", "--hub-id", "org/tiny")
    assert res.code == 0, res.err
    assert run_adapt(capsys, "base", "add", tiny_base, "--hub-id", "not a hub id").code == 2
    reg = Registry(home=tmp_path / "home")
    reg.add(tiny_lora, name="bot", base="tiny")
    reg.push("bot@1")
    meta = _front_matter(_published(hub, "alice/bot", "v1")["README.md"].decode())
    assert meta["base_model"] == "org/tiny"
