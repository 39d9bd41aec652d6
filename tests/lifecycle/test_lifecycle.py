"""Lineage and lifecycle: safe deletion with tombstones, protected tags, keyed scores with a
direction, search filters and `best` (issue: lineage and lifecycle you can trust)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry import Registry
from registry.catalog import runs as run_rows
from registry.errors import InUse, UsageError
from registry.registry import ParentLink
from tests.cli import run_adapt
from tests.factories import make_lora


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("lifecycle-loras")
    return [make_lora(tiny_base, root / f"l{i}", r=2, seed=300 + i, targets=["q_proj"])
            for i in range(4)]


def _passing_run(reg: Registry, ref: str) -> None:
    info = reg.resolve(ref)
    run_id = run_rows.start_run(reg.catalog, info.id)
    run_rows.finish_run(reg.catalog, run_id, run_rows.FinishedRun(
        status="passed", device="cpu", base_fingerprint=None, checks={}, figures={},
        gates=[], report={}, finished_at=datetime.now(UTC)))


# -- safe deletion ---------------------------------------------------------------------------------
@pytest.mark.parametrize("reason", ["tagged", "parent", "validated"])
def test_rm_refuses_a_version_others_depend_on(registry: Registry, loras: list[Path],
                                               capsys: pytest.CaptureFixture[str],
                                               reason: str) -> None:
    registry.add(loras[0], name="a")
    if reason == "tagged":
        registry.tag("a@1", "prod")
    elif reason == "parent":
        registry.add(loras[1], name="mix", parents=[ParentLink("a@1", weight=1.0)])
    else:
        _passing_run(registry, "a@1")
    res = run_adapt(capsys, "rm", "a@1", "--yes")
    assert res.code == 8, res.err
    expected = {"tagged": "tagged prod", "parent": "parent of mix@1",
                "validated": "passing validation run"}[reason]
    assert expected in res.err and len(res.err.strip().splitlines()) == 1
    assert registry.resolve("a@1").version == 1  # still there
    res = run_adapt(capsys, "rm", "a@1", "--dry-run", "--json")
    assert res.code == 0 and expected in " ".join(json.loads(res.out)["blockers"])
    assert registry.resolve("a@1").version == 1
    assert run_adapt(capsys, "rm", "a@1", "--yes", "--force").code == 0


def test_rm_refuses_a_pushed_version(registry: Registry, loras: list[Path]) -> None:
    info = registry.add(loras[0], name="a").version
    registry.record_hub_link(info.id, "org/a", "0" * 40, "v1", "push")
    with pytest.raises(InUse, match="pushed to org/a"):
        registry.remove("a@1")


def test_deleted_parent_leaves_a_tombstone_and_its_number_is_never_reused(
        registry: Registry, loras: list[Path]) -> None:
    parent = registry.add(loras[0], name="a").version
    registry.add(loras[1], name="mix", parents=[ParentLink("a@1", weight=0.5)])
    registry.remove("a@1", force=True)
    shown = registry.show("mix@1")["parents"][0]
    assert shown["ref"] == "a@1" and shown["state"] == "deleted"
    assert shown["digest"] == parent.digest
    # the line is empty now, yet new content gets number 2, not 1
    assert registry.add(loras[2], name="a").version.version == 2
    # re-adding the deleted content links the child to it again
    back = registry.add(loras[0], name="a").version
    assert back.version == 3
    relinked = registry.show("mix@1")["parents"][0]
    assert relinked["state"] == "local" and relinked["ref"] == "a@3"
    assert registry.show("a@3")["children"] == [{"ref": "mix@1", "role": "parent"}]


# -- protected tags ------------------------------------------------------------------------------
def test_protected_tag_moves_and_goes_only_with_force(registry: Registry, loras: list[Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    registry.add(loras[0], name="a")
    registry.add(loras[1], name="a")
    assert run_adapt(capsys, "tag", "a@1", "prod", "--protect").code == 0
    res = run_adapt(capsys, "tag", "a@2", "prod")
    assert res.code == 8 and "--force" in res.err
    assert registry.resolve("a:prod").version == 1
    assert run_adapt(capsys, "untag", "a", "prod").code == 8
    assert run_adapt(capsys, "tag", "a@2", "prod", "--force").code == 0
    assert registry.resolve("a:prod").version == 2
    assert run_adapt(capsys, "untag", "a", "prod", "--force").code == 0
    # an unprotected tag moves freely, as before
    registry.tag("a@1", "staging")
    registry.tag("a@2", "staging")
    assert registry.resolve("a:staging").version == 2


# -- scores ----------------------------------------------------------------------------------------
def test_recording_the_same_score_key_replaces_it_unless_append(registry: Registry,
                                                                loras: list[Path]) -> None:
    registry.add(loras[0], name="a")
    for value in (0.5, 0.6, 0.7, 0.8, 0.9):
        registry.add_score("a@1", "m", value, dataset="d")
    scores = registry.show("a@1")["scores"]
    assert [(s["metric"], s["value"]) for s in scores] == [("m", 0.9)]
    registry.add_score("a@1", "m", 0.95, dataset="other")  # another key: kept apart
    registry.add_score("a@1", "m", 0.91, dataset="d", append=True)
    values = sorted((s["dataset"], s["value"]) for s in registry.show("a@1")["scores"])
    assert values == [("d", 0.9), ("d", 0.91), ("other", 0.95)]


def test_list_shows_the_best_value_by_the_metrics_direction(registry: Registry,
                                                            loras: list[Path]) -> None:
    registry.add(loras[0], name="a")
    registry.add_score("a@1", "validate.loss", 5.6, dataset="x")
    registry.add_score("a@1", "validate.loss", 2.1, dataset="y")
    registry.add_score("a@1", "accuracy", 0.7, dataset="x")
    registry.add_score("a@1", "accuracy", 0.8, dataset="y")
    row = registry.list_versions()[0]
    assert row.scores == {"validate.loss": 2.1, "accuracy": 0.8}


def test_nan_score_is_refused(registry: Registry, loras: list[Path]) -> None:
    registry.add(loras[0], name="a")
    with pytest.raises(UsageError):
        registry.add_score("a@1", "m", float("nan"))


# -- search and best -----------------------------------------------------------------------------
@pytest.fixture
def scored(registry: Registry, loras: list[Path]) -> Registry:
    for i, lora in enumerate(loras[:3]):
        registry.add(lora, name=f"s{i}")
    registry.add_score("s0@1", "accuracy", 0.70, dataset="eval")
    registry.add_score("s1@1", "accuracy", 0.85, dataset="eval")
    registry.add_score("s2@1", "accuracy", 0.85, dataset="eval")  # a tie with s1, newer
    registry.add_score("s0@1", "accuracy", 0.99, dataset="other")
    registry.add_score("s0@1", "ppl", 7.0, dataset="eval")
    registry.add_score("s1@1", "ppl", 9.0, dataset="eval")
    registry.add_score("s2@1", "custom", 3.0)
    registry.tag("s1@1", "staging")
    return registry


def test_search_filters_orders_and_limits(scored: Registry) -> None:
    hits = scored.search("metric.accuracy > 0.8 and method = 'LORA'", dataset="eval",
                         order_by="metric.accuracy desc")
    assert [h.ref for h in hits] == ["s1@1", "s2@1"] or [h.ref for h in hits] == ["s2@1", "s1@1"]
    hits = scored.search("metric.accuracy > 0.8 and tag = 'staging'", dataset="eval")
    assert [h.ref for h in hits] == ["s1@1"]
    hits = scored.search("(name = 's0' or name like 's2') and not tag = 'staging'")
    assert [h.ref for h in hits] == ["s0@1", "s2@1"]
    hits = scored.search("", order_by="metric.ppl asc", dataset="eval", limit=1)
    assert [h.ref for h in hits] == ["s0@1"]


@pytest.mark.parametrize("bad", [
    "nosuchfield = 1",
    "name = 's0'; DROP TABLE adapter",
    "name = __import__('os').system('true')",
    "metric.accuracy >",
    "(name = 's0'",
    "name == 's0'",
    "(" * 100 + "name = 's0'" + ")" * 100,
])
def test_search_refuses_malformed_or_unknown_filters(scored: Registry,
                                                     capsys: pytest.CaptureFixture[str],
                                                     bad: str) -> None:
    res = run_adapt(capsys, "search", bad)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert "internal error" not in res.err
    assert scored.count_versions() == 3  # nothing touched


def test_unknown_field_lists_the_known_ones(scored: Registry) -> None:
    with pytest.raises(UsageError, match="metric.NAME"):
        scored.search("colour = 'red'")


def test_best_follows_direction_and_breaks_ties_by_newest(
        scored: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert scored.best("accuracy", dataset="eval").ref == "s2@1"  # tie: the newer version
    assert scored.best("accuracy").ref == "s0@1"  # latest per version, any dataset
    assert scored.best("ppl", dataset="eval").ref == "s0@1"  # lower is better
    res = run_adapt(capsys, "best", "ppl", "--dataset", "eval")
    assert res.code == 0 and res.out == "s0@1\n"
    # a metric whose direction is unknown needs one recorded
    res = run_adapt(capsys, "best", "custom")
    assert res.code == 2 and "--higher-is-better" in res.err
    scored.add_score("s2@1", "custom", 3.0, higher_is_better=False)
    assert scored.best("custom").ref == "s2@1"
    assert run_adapt(capsys, "best", "nosuchmetric").code == 3


def test_the_tui_best_cell_uses_the_same_rule(registry: Registry, loras: list[Path]) -> None:
    from tui.render import best_score

    registry.add(loras[0], name="a")
    for metric, value in (("validate.base_loss", 5.613), ("validate.loss", 2.5),
                          ("validate.loss", 2.1), ("validate.tokens_per_s", 900.0)):
        registry.add_score("a@1", metric, value, append=True)
    row = registry.list_versions()[0]
    assert best_score(row.scores) == ("loss 2.1", 2.1)  # not the base's loss, not a timing
    registry.add_score("a@1", "accuracy", 0.8)
    assert best_score(registry.list_versions()[0].scores) == ("accuracy 0.8", 0.8)


def test_the_tui_best_column_sorts_best_first_by_direction(registry: Registry,
                                                           loras: list[Path]) -> None:
    from tui.version_list import _local_key

    for i, loss in enumerate((3.0, 1.0, 2.0)):
        registry.add(loras[i], name=f"v{i}")
        registry.add_score(f"v{i}@1", "validate.loss", loss)
    rows = sorted(registry.list_versions(), key=lambda r: _local_key("best", r, {}))
    assert [r.name for r in rows] == ["v1", "v2", "v0"]  # lowest loss first
