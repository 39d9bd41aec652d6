"""Lineage across registries: pulled versions keep their numbers, parents that are not here
show as remote references and become local links once pulled."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry import Registry
from registry.registry import ParentLink
from tests.factories import make_lora
from tests.hub.server import HubServer


@pytest.fixture
def lineage_source(tmp_path: Path, tiny_base: Path) -> Registry:
    """bot@1..3 and mix@1 composed from bot@2 and bot@3."""
    reg = Registry(home=tmp_path / "source")
    for i in range(3):
        reg.add(make_lora(tiny_base, tmp_path / f"b{i}", r=2, seed=700 + i), name="bot")
    reg.add(make_lora(tiny_base, tmp_path / "mix", r=4, seed=800), name="mix",
            parents=[ParentLink("bot@2", weight=0.5), ParentLink("bot@3", weight=0.5)])
    return reg


def test_pull_child_then_parent_links_by_content_and_keeps_numbers(
        hub: HubServer, lineage_source: Registry, tmp_path: Path) -> None:
    lineage_source.push("bot", all_versions=True, repo="alice/bot")
    lineage_source.push("mix", repo="alice/mix")

    target = Registry(home=tmp_path / "target")
    target.pull("alice/mix")
    parents = target.show("mix@1")["parents"]
    assert [(p["ref"], p["state"]) for p in parents] == [
        ("hf://alice/bot@v2", "remote"), ("hf://alice/bot@v3", "remote")]

    target.pull("alice/bot@v3")  # into an empty line: keeps number 3
    assert target.resolve("bot@3").digest == lineage_source.resolve("bot@3").digest
    parents = target.show("mix@1")["parents"]
    assert [(p["ref"], p["state"]) for p in parents] == [
        ("hf://alice/bot@v2", "remote"), ("bot@3", "local")]
    assert target.show("bot@3")["children"] == [{"ref": "mix@1", "role": "parent"}]

    target.pull("alice/bot@v2")
    assert target.resolve("bot@2").digest == lineage_source.resolve("bot@2").digest
    assert [p["state"] for p in target.show("mix@1")["parents"]] == ["local", "local"]
    target.close()


def test_pull_does_not_move_local_tags_without_tags_flag(
        hub: HubServer, lineage_source: Registry, tmp_path: Path) -> None:
    lineage_source.tag("bot@3", "prod")
    lineage_source.push("bot", all_versions=True, repo="alice/bot", publish_tags=True)
    target = Registry(home=tmp_path / "target")
    target.pull("alice/bot@v1")
    target.tag("bot@1", "prod")
    target.pull("alice/bot@v3")
    assert target.resolve("bot:prod").version == 1  # untouched
    target.pull("alice/bot@v3", apply_tags=True)
    assert target.resolve("bot:prod").version == 3
    target.close()


def test_card_model_index_has_quality_figures_of_passing_runs_only(
        hub: HubServer, lineage_source: Registry) -> None:
    from huggingface_hub import ModelCard

    from registry.catalog import runs as run_rows

    info = lineage_source.resolve("bot@1")
    for status, loss in (("failed", 9.0), ("passed", 2.5)):
        run_id = run_rows.start_run(lineage_source.catalog, info.id)
        run_rows.finish_run(lineage_source.catalog, run_id, run_rows.FinishedRun(
            status=status, device="cpu", base_fingerprint=None, checks={},
            figures={"loss": loss, "tokens_per_s": 100.0}, gates=[], report={},
            finished_at=datetime.now(UTC),
            scores=(run_rows.RunScore("validate.loss", loss, "eval"),
                    run_rows.RunScore("validate.tokens_per_s", 100.0))))
    lineage_source.add_score("bot@1", "accuracy", 0.9, dataset="support-eval")
    lineage_source.push("bot@1", repo="alice/bot", license="apache-2.0")
    repo = hub.state.repos["alice/bot"]
    tree = repo.commits[repo.tags["v1"]]
    card = ModelCard(hub.state.git[tree["README.md"].blob_id].decode())
    results = {(r.metric_type, r.dataset_name, r.metric_value) for r in card.data.eval_results}
    assert results == {("validate.loss", "eval", 2.5), ("accuracy", "support-eval", 0.9)}
    assert card.data.license == "apache-2.0"
