"""compose/diff through the registry and the CLI: lineage, recipes, refusals, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from registry.ops.diff import diff_adapters
from registry.ops.options import ComposeOptions
from registry.peft_dir import read_adapter_dir
from tests.cli import run_adapt
from tests.factories import make_lora


@pytest.fixture
def two(registry, tiny_lora: Path, tiny_lora_r8: Path):
    a = registry.add(tiny_lora, name="lora-a").version
    b = registry.add(tiny_lora_r8, name="lora-b").version
    return a, b


def negated(src: Path, dst: Path) -> Path:
    """A copy of `src` whose B factors are negated: delta -> -delta."""
    dst.mkdir()
    tensors = load_file(src / "adapter_model.safetensors")
    save_file({k: -v if "lora_B" in k else v for k, v in tensors.items()},
              str(dst / "adapter_model.safetensors"))
    (dst / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    return dst


def test_compose_records_lineage_and_recipe(registry, two):
    a, b = two
    res = registry.compose([(a.ref, 1.0), (b.ref, -0.5)], ComposeOptions("svd", rank=6), name="mix")
    shown = registry.show(res.version)
    assert [(p["ref"], p["weight"], p["role"]) for p in shown["parents"]] == [
        (a.ref, 1.0, "compose-input"), (b.ref, -0.5, "compose-input")]
    assert shown["parents"][0]["params"]["digest"] == a.digest
    recipe = res.version.recipe
    assert recipe["method"] == "svd" and recipe["rank"] == 6
    assert [i["digest"] for i in recipe["inputs"]] == [a.digest, b.digest]
    assert "adapt_version" in recipe
    assert res.version.rank == 6


def test_compose_refuses_inputs_of_different_bases(registry, tiny_lora, tiny_lora_r8, tiny_base,
                                                   other_base, tmp_path):
    from registry.errors import UsageError

    a = registry.add(tiny_lora, name="a", base=tiny_base).version
    wide = make_lora(other_base, tmp_path / "wide")
    b = registry.add(wide, name="b", base=other_base).version
    with pytest.raises(UsageError, match="different base"):
        registry.compose([(a.ref, 1.0), (b.ref, 1.0)], ComposeOptions("cat"), name="bad")


def test_diff_of_adapter_with_itself_and_its_negation(tiny_lora, tmp_path):
    a = read_adapter_dir(tiny_lora)
    same = diff_adapters(a, a)
    assert same["summary"]["modules_compared"] == 4
    for s in same["modules"].values():
        assert s["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert s["sign_conflict"] == 0.0
        assert 1.0 <= s["effective_rank_a"] <= 4.0
    neg = diff_adapters(a, read_adapter_dir(negated(tiny_lora, tmp_path / "neg")))
    for s in neg["modules"].values():
        assert s["cosine"] == pytest.approx(-1.0, abs=1e-6)
        assert s["sign_conflict"] == pytest.approx(1.0)
        assert s["norm_a"] == pytest.approx(s["norm_b"])


def test_diff_versions_summary_lists_one_sided_modules(registry, two):
    a, b = two
    report = registry.diff(a.ref, b.ref)
    assert report.stats["modules_compared"] == 4
    assert len(report.stats["only_in_b"]) == 4  # k_proj and o_proj in both layers
    assert "4 modules" in report.summary
    assert json.dumps(report.to_dict())


def test_cli_compose_and_diff_json(capsys, two):
    a, b = two
    r = run_adapt(capsys, "compose", a.ref, f"{b.ref}*-1", "--method", "cat", "--name", "neg",
                  "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["created"] is True and out["ref"] == "neg@1"
    r = run_adapt(capsys, "diff", a.ref, "neg@1", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["summary"]["modules_compared"] == 4
    r = run_adapt(capsys, "diff", a.ref, b.ref)
    assert r.code == 0 and "mean cosine" in r.out


def test_cli_compose_from_recipe_and_bad_recipe_exit_2(capsys, two, tmp_path):
    a, b = two
    good = tmp_path / "recipe.yaml"
    good.write_text(f"inputs:\n  - ref: {a.ref}\n    weight: 0.5\n  - ref: {b.ref}\n"
                    "method: dare_linear\ndensity: 0.5\nseed: 3\nrank: 4\nname: dared\n")
    r = run_adapt(capsys, "compose", "-f", good, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["recipe"]["seed"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"inputs:\n  - ref: {a.ref}\nmethod: average\nname: x\n")
    r = run_adapt(capsys, "compose", "-f", bad)
    assert r.code == 2
    assert "method" in r.err
    r = run_adapt(capsys, "compose", a.ref, "--method", "ties", "--name", "x")
    assert r.code == 2 and "density" in r.err


def test_cli_compose_refuses_dora_with_exit_7(capsys, registry, tiny_base, tmp_path, two):
    dora = make_lora(tiny_base, tmp_path / "dora", use_dora=True)
    d = registry.add(dora, name="dora").version
    r = run_adapt(capsys, "compose", two[0].ref, d.ref, "--method", "cat", "--name", "x")
    assert r.code == 7
    assert "DORA" in r.err and "magnitude" in r.err


def test_single_input_scaling_doubles_the_delta(registry, two):
    a, _ = two
    res = registry.compose([(a.ref, 2.0)], ComposeOptions("linear"), name="double")
    out = read_adapter_dir(registry.checkout(res.version))
    s = diff_adapters(read_adapter_dir(registry.checkout(a)), out)
    for m in s["modules"].values():
        assert m["cosine"] == pytest.approx(1.0, abs=1e-5)
        assert m["norm_b"] == pytest.approx(2 * m["norm_a"], rel=1e-5)
