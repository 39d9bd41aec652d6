"""`adapt check` verdicts for the failures servers hide, and `adapt export --format gguf|ollama`
through the real CLI and a real registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from registry import schemas
from registry.targets import RULES_SCHEMA, list_tables, load_table
from tests.cli import run_adapt
from tests.factories import make_lora, make_tiny_gpt2
from tests.ship.conftest import lora_on

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ship_adapters(models_dir: Path, tiny_base: Path) -> dict[str, Path]:
    """One adapter per verdict the check table below expects."""
    from peft import LoraConfig

    from tests.factories import make_adapter

    d = models_dir / "ship-check"
    out = {
        "clean": make_lora(tiny_base, d / "clean", r=8, alpha=16),
        "dora": make_lora(tiny_base, d / "dora", r=8, alpha=16, use_dora=True),
        "rank48": make_lora(tiny_base, d / "rank48", r=48, alpha=48),
        "rank128": make_lora(tiny_base, d / "rank128", r=128, alpha=128, targets=["q_proj"]),
        "lm_head_saved": make_lora(tiny_base, d / "mts", targets=["q_proj"],
                                   modules_to_save=["lm_head"]),
        "patterns": lora_on(tiny_base, d / "patterns", r=8, lora_alpha=16, use_rslora=True,
                            alpha_pattern={"q_proj": 3.0}),
    }
    # Keys saved from a wrapper one level too deep: vLLM loads them and serves the base model.
    prefix = d / "prefix"
    shutil.copytree(out["clean"], prefix)
    weights = prefix / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({k.replace("base_model.model.model.", "base_model.model.model.model."): v
               for k, v in tensors.items()}, weights)
    out["prefix"] = prefix
    gpt2 = make_tiny_gpt2(models_dir / "tiny-gpt2-ship")
    out["gpt2"] = make_adapter(gpt2, d / "gpt2", LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True,
        init_lora_weights=False))
    out["gpt2_base"] = gpt2
    return out


@pytest.fixture
def shipped(registry, ship_adapters: dict[str, Path], tiny_base: Path):
    """A registry holding every adapter above; the Llama base registered as `tiny`."""
    registry.add_base(tiny_base, name="tiny")
    registry.add_base(ship_adapters["gpt2_base"], name="gpt2")
    for name, path in ship_adapters.items():
        if name == "gpt2_base":
            continue
        base = None if name == "prefix" else ("gpt2" if name == "gpt2" else "tiny")
        registry.add(path, name=name.replace("_", "-"), base=base)
    return registry


# (adapter, target, target version, rule, expected status, exit code)
CASES = [
    ("clean", "vllm", None, "dora", "pass", 0),
    ("dora", "vllm", None, "dora", "fail", 1),
    ("dora", "vllm", "0.4", "dora", "fail", 1),
    ("rank48", "vllm", "0.4", "rank", "warn", 0),
    ("rank128", "vllm", "0.4", "rank", "fail", 1),
    ("rank48", "vllm", "0.11", "rank", "warn", 0),
    ("clean", "vllm", "0.11", "rank", "pass", 0),
    ("lm-head-saved", "vllm", None, "modules_to_save", "fail", 1),
    ("lm-head-saved", "llama.cpp", None, "gguf", "fail", 1),
    ("lm-head-saved", "ollama", None, "gguf", "fail", 1),
    ("gpt2", "vllm", None, "target_modules", "fail", 1),
    ("prefix", "vllm", None, "prefix", "fail", 1),
    ("prefix", "peft", None, "prefix", "fail", 1),
    ("patterns", "vllm", None, "scaling", "fail", 1),
    ("patterns", "llama.cpp", None, "scaling", "warn", 0),
    ("clean", "llama.cpp", None, "gguf", "pass", 0),
    ("clean", "vllm", None, "shapes", "pass", 0),
    ("gpt2", "vllm", None, "shapes", "pass", 1),  # Conv1D weights are in x out
    ("clean", "vllm", None, "base", "pass", 0),
    ("prefix", "vllm", None, "base", "warn", 1),  # added without --base
]


@pytest.mark.parametrize(("adapter", "target", "version", "rule", "status", "code"), CASES)
def test_check_verdicts(
    shipped, capsys: pytest.CaptureFixture[str], tiny_base: Path, ship_adapters: dict[str, Path],
    adapter: str, target: str, version: str | None, rule: str, status: str, code: int,
) -> None:
    base = str(ship_adapters["gpt2_base"]) if adapter == "gpt2" else str(tiny_base)
    args = ["check", adapter, "--target", target, "--base", base, "--json"]
    if version:
        args += ["--target-version", version]
    result = run_adapt(capsys, *args)
    assert result.code == code, result.err
    report = json.loads(result.out)
    verdicts = {r["rule"]: r for r in report["results"]}
    assert verdicts[rule]["status"] == status, verdicts[rule]
    assert report["ok"] is (code == 0)
    if code == 1:
        assert result.err.count("\n") == 1 and "gate failed" in result.err


def test_clean_lora_passes_every_vllm_rule_with_its_registered_base(
    shipped, capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_adapt(capsys, "check", "clean", "--target", "vllm")  # base from registration
    assert result.code == 0, result.err
    lines = [ln for ln in result.out.splitlines() if ln.startswith("  ")]
    assert lines and all(ln.split()[0] == "pass" for ln in lines), result.out
    assert "0 failed" in result.out


def test_check_on_another_base_flags_shapes_and_fingerprint(
    shipped, capsys: pytest.CaptureFixture[str], other_base: Path,
) -> None:
    result = run_adapt(capsys, "check", "clean", "--target", "peft", "--base", str(other_base),
                       "--json")
    assert result.code == 1
    verdicts = {r["rule"]: r for r in json.loads(result.out)["results"]}
    assert verdicts["prefix"]["status"] == "pass"  # same names ...
    assert verdicts["shapes"]["status"] == "fail"  # ... other shapes
    assert "64x64 delta but the base weight is 96x96" in verdicts["shapes"]["detail"]
    assert verdicts["base"]["status"] == "warn"


def test_check_names_the_fix_and_source_of_a_failed_rule(
    shipped, capsys: pytest.CaptureFixture[str], tiny_base: Path,
) -> None:
    result = run_adapt(capsys, "check", "prefix", "--target", "vllm", "--base", str(tiny_base))
    assert result.code == 1
    assert "fail prefix" in " ".join(result.out.split())
    assert "model.model.layers.0.self_attn.q_proj" in result.out
    assert "the base has model.layers.0.self_attn.q_proj" in result.out
    assert "fix: re-save the adapter" in result.out
    assert "vllm-project/vllm#34186" in result.out


def test_check_without_a_base_warns_what_it_could_not_check(
    shipped, capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_adapt(capsys, "check", "prefix", "--target", "vllm", "--json")
    assert result.code == 0, result.err
    verdicts = {r["rule"]: r for r in json.loads(result.out)["results"]}
    assert verdicts["prefix"]["status"] == "warn"
    assert verdicts["prefix"]["detail"].startswith("not checked")
    assert verdicts["prefix"]["fix"] == "pass --base NAME"


def test_check_refuses_unknown_target_and_table_version(
    shipped, capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_adapt(capsys, "check", "clean", "--target", "triton").code == 2
    missing = run_adapt(capsys, "check", "clean", "--target", "vllm", "--target-version", "9.9")
    assert missing.code == 3 and "known versions" in missing.err


def test_every_rules_table_is_valid_and_cites_a_source_per_rule() -> None:
    import jsonschema

    tables = list_tables()
    assert {t.target for t in tables} == {"vllm", "lorax", "tgi", "llama.cpp", "ollama", "peft"}
    for path in (ROOT / "registry" / "data" / "targets").glob("*.json"):
        data = json.loads(path.read_text())
        jsonschema.validate(data, RULES_SCHEMA)
        assert path.name == f"{data['target']}-{path.name.split('-', 1)[1]}"
        assert all(len(rule["source"]) >= 8 for rule in data["rules"])
    for target in {t.target for t in tables}:
        assert load_table(target).default  # one default table per target
    schema_file = ROOT / "schemas" / "target-rules.schema.json"
    assert schema_file.read_text() == schemas.render(RULES_SCHEMA), (
        "run python -m registry.schemas --write")


# -- export through the CLI ---------------------------------------------------------------------
def test_export_gguf_carries_provenance(
    shipped, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    import gguf

    out = tmp_path / "clean.gguf"
    result = run_adapt(capsys, "export", "clean", str(out), "--format", "gguf", "--base", "tiny")
    assert result.code == 0, result.err
    fields = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    version = shipped.resolve("clean")
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapt.ref"] == "clean@1"
    assert fields["adapt.digest"] == version.digest
    assert fields["adapt.base_fingerprint"] == shipped.find_base("tiny").fingerprint
    # the version's registered base is the default
    again = run_adapt(capsys, "export", "clean", str(tmp_path / "b.gguf"), "--format", "gguf")
    assert again.code == 0, again.err
    assert (tmp_path / "b.gguf").read_bytes() == out.read_bytes()


def test_export_ollama_writes_adapter_and_modelfile(
    shipped, capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_base: Path,
) -> None:
    out = tmp_path / "ollama"
    result = run_adapt(capsys, "export", "clean", str(out), "--format", "ollama", "--base",
                       "tiny")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "adapter.gguf"]
    assert (out / "Modelfile").read_text() == (
        f"FROM {tiny_base.resolve()}\nADAPTER ./adapter.gguf\n")


def test_export_gguf_refusals_have_their_exit_codes(
    shipped, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    dora = run_adapt(capsys, "export", "dora", str(tmp_path / "d.gguf"), "--format", "gguf")
    assert dora.code == 7 and "DoRA" in dora.err and dora.err.count("\n") == 1
    assert not (tmp_path / "d.gguf").exists()
    no_base = run_adapt(capsys, "export", "prefix", str(tmp_path / "p.gguf"), "--format", "gguf")
    assert no_base.code == 2 and "--base" in no_base.err
    bad = run_adapt(capsys, "export", "clean", str(tmp_path / "x"), "--format", "onnx")
    assert bad.code == 2
    ollama = run_adapt(capsys, "export", "dora", str(tmp_path / "o"), "--format", "ollama")
    assert ollama.code == 7 and not (tmp_path / "o").exists()


def test_a_table_naming_an_unknown_check_or_lacking_a_source_is_refused() -> None:
    from registry.errors import UsageError
    from registry.targets import parse_table

    rule = {"id": "x", "check": "no_dora", "severity": "fail", "message": "m", "fix": "f",
            "source": "https://example.org/rule"}
    assert parse_table({"target": "vllm", "version": "t", "rules": [rule]}).rules[0].id == "x"
    with pytest.raises(UsageError, match="unknown check"):
        parse_table({"target": "vllm", "version": "t", "rules": [{**rule, "check": "nope"}]})
    no_source = {k: v for k, v in rule.items() if k != "source"}
    with pytest.raises(UsageError, match="'source' is a required property"):
        parse_table({"target": "vllm", "version": "t", "rules": [no_source]})
