"""The shared output directory and shard writer: --force never deletes a source or the registry;
staging, swap and rollback; the shard layouts transformers and safetensors read back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from registry.cli.exit_codes import ExitCode
from registry.errors import AlreadyExists, UnsafeOutputDir
from registry.io.outdir import check_output_dir, sidecar_files, staged_output
from registry.io.shards import RawBytes, ShardWriter, TensorEntry, split_by_size
from tests.cli import run_adapt


def _tree(root: Path) -> dict[str, int]:
    """Every file under root with its size: what 'nothing was deleted' is checked against."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _kept(before: dict[str, int], root: Path) -> bool:
    """Every file that was under root is still there, unchanged in size."""
    after = _tree(root)
    return all(after.get(name) == size for name, size in before.items())


@pytest.fixture
def own_base(tmp_path: Path, tiny_base: Path) -> Path:
    """A private copy of the base, so a failed refusal could only delete this test's files."""
    return Path(shutil.copytree(tiny_base, tmp_path / "models" / "llama"))


def test_merge_out_parent_of_the_base_is_refused_even_with_force(
    capsys: pytest.CaptureFixture[str], registry, tiny_lora: Path, own_base: Path,
) -> None:
    registry.add(tiny_lora, name="lora", base=own_base)
    models = own_base.parent
    before = _tree(models)
    done = run_adapt(capsys, "merge", "lora", "--base", own_base, "--out", models, "--force")
    assert done.code == ExitCode.USAGE
    assert "contains the base model's directory" in done.err
    assert len(done.err.strip().splitlines()) == 1
    assert _kept(before, models)


def test_merge_out_adapt_home_is_refused_even_with_force(
    capsys: pytest.CaptureFixture[str], registry, adapt_home: Path, tiny_lora: Path,
    own_base: Path,
) -> None:
    version = registry.add(tiny_lora, name="lora", base=own_base).version
    before = _tree(adapt_home)
    done = run_adapt(capsys, "merge", "lora", "--base", own_base, "--out", adapt_home, "--force")
    assert done.code == ExitCode.USAGE
    assert "ADAPT_HOME" in done.err
    assert _kept(before, adapt_home)
    assert registry.resolve("lora").digest == version.digest
    assert registry.fsck().ok


@pytest.mark.parametrize("where", ["inside-home", "inside-base", "parent-of-home"])
def test_merge_out_overlapping_the_registry_or_a_source_is_refused(
    capsys: pytest.CaptureFixture[str], registry, adapt_home: Path, tiny_lora: Path,
    own_base: Path, where: str,
) -> None:
    registry.add(tiny_lora, name="lora", base=own_base)
    out = {"inside-home": adapt_home / "merged", "inside-base": own_base / "merged",
           "parent-of-home": adapt_home.parent}[where]
    home_before, base_before = _tree(adapt_home), _tree(own_base)
    done = run_adapt(capsys, "merge", "lora", "--base", own_base, "--out", out, "--force")
    assert done.code == ExitCode.USAGE, done.err
    assert _kept(home_before, adapt_home) and _kept(base_before, own_base)
    assert not (adapt_home / "merged").exists() and not (own_base / "merged").exists()


def test_requantize_out_parent_of_the_source_or_home_is_refused(
    capsys: pytest.CaptureFixture[str], registry, adapt_home: Path, tiny_lora: Path,
    own_base: Path,
) -> None:
    registry.add(tiny_lora, name="lora", base=own_base)
    models = own_base.parent
    before = _tree(models)
    done = run_adapt(capsys, "requantize", own_base, "--to", "nf4", "--out", models, "--force")
    assert done.code == ExitCode.USAGE and "source model" in done.err
    done = run_adapt(capsys, "requantize", "--adapter", "lora", "--base", own_base, "--to", "nf4",
                     "--out", adapt_home, "--force")
    assert done.code == ExitCode.USAGE and "ADAPT_HOME" in done.err
    assert _kept(before, models)
    assert registry.fsck().ok


def test_overlap_is_checked_on_resolved_paths(tmp_path: Path) -> None:
    base = tmp_path / "models" / "llama"
    base.mkdir(parents=True)
    link = tmp_path / "link"
    os.symlink(tmp_path / "models", link)
    with pytest.raises(UnsafeOutputDir) as caught:
        check_output_dir(link, sources=[(base, "the base model's directory")], force=True,
                         hint="elsewhere")
    assert caught.value.relation == "contains"
    with pytest.raises(UnsafeOutputDir):
        check_output_dir(tmp_path / "models" / "x" / "..", sources=[(base, "the base")],
                         force=True, hint="elsewhere")
    check_output_dir(tmp_path / "elsewhere", sources=[(base, "the base")], force=False,
                     hint="elsewhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(AlreadyExists, match="it is a file"):
        check_output_dir(tmp_path / "file", sources=[], force=True, hint="elsewhere")


def test_merge_with_name_and_base_by_name_is_recorded_under_that_name(
    capsys: pytest.CaptureFixture[str], registry, tiny_lora: Path, tiny_base: Path,
    tmp_path: Path,
) -> None:
    registry.add(tiny_lora, name="lora", base=tiny_base)
    registry.add_base(tiny_base, name="tiny-llama")
    out = tmp_path / "merged"
    done = run_adapt(capsys, "merge", "lora", "--base", "tiny-llama", "--out", out,
                     "--name", "lora-merged", "--json")
    assert done.code == 0, done.err
    record = json.loads(done.out)["record"]
    assert record["name"] == "lora-merged" and record["kind"] == "merged"
    found = registry.find_base("lora-merged")
    assert found is not None and found.fingerprint == registry.fingerprint(out).fingerprint
    bad = run_adapt(capsys, "merge", "lora", "--base", tiny_base, "--out", tmp_path / "m2",
                    "--name", "Not A Name")
    assert bad.code == ExitCode.USAGE and not (tmp_path / "m2").exists()
    missing = run_adapt(capsys, "merge", "lora", "--base", "no-such-base", "--out",
                        tmp_path / "m3")
    assert missing.code == ExitCode.NOT_FOUND and "no-such-base" in missing.err


# -- the helpers themselves -------------------------------------------------------------------
def test_staged_output_swaps_in_and_rolls_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_output(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), staged_output(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "first"
    with staged_output(out) as tmp:
        (tmp / "b.txt").write_text("replaced")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial or old dirs left


def test_sidecar_files_skip_weights_indexes_and_records(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "generation_config.json", "model.safetensors",
                 "pytorch_model.bin", "model.safetensors.index.json", "adapt-merge.json",
                 "adapt-quant.json", ".hidden"):
        (tmp_path / name).write_text("{}")
    names = [p.name for p in sidecar_files(tmp_path, skip={"config.json"})]
    assert names == ["generation_config.json", "tokenizer.json"]


def test_shard_writer_appended_and_planned_layouts_read_back(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {f"t{i}": torch.randn(10, 10, generator=torch.Generator().manual_seed(i))
               for i in range(5)}
    appended = tmp_path / "appended"
    appended.mkdir()
    writer = ShardWriter(appended, {"format": "pt"}, shard_size=900)
    for name, t in tensors.items():
        writer.add(name, t)
    files = writer.close()
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((appended / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 400
    got = {k: v for f in files for k, v in load_file(appended / f).items()}
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    left = sorted(p.name for p in appended.iterdir())
    assert left == sorted([*files, "model.safetensors.index.json"])  # no scratch or part files

    # planned: cast to bf16 on the way, with one tensor's bytes copied raw from a source file
    source = tmp_path / "source.safetensors"
    save_file({"t0": tensors["t0"].to(torch.bfloat16)}, str(source))
    from registry.safetensors_header import read_header

    info = read_header(source).tensors["t0"]
    entries = [TensorEntry.of(name, "BF16", (10, 10)) for name in tensors]
    plan = split_by_size(entries, 10**9)
    planned = tmp_path / "planned"
    planned.mkdir()
    writer = ShardWriter(planned, {"format": "pt"}, plan=plan)
    writer.add("t0", RawBytes(source, info.start, info.nbytes))
    for name in list(tensors)[1:]:
        writer.add(name, tensors[name])
    assert writer.close() == ["model.safetensors"]
    back = load_file(planned / "model.safetensors")
    assert all(torch.equal(back[k], tensors[k].to(torch.bfloat16)) for k in tensors)
    assert not (planned / "model.safetensors.index.json").exists()


def test_shard_writer_refuses_a_tensor_out_of_plan_order(tmp_path: Path) -> None:
    import torch

    plan = split_by_size([TensorEntry.of("a", "F32", (2,)), TensorEntry.of("b", "F32", (2,))],
                         10**9)
    writer = ShardWriter(tmp_path, {}, plan=plan)
    with pytest.raises(RuntimeError, match="got b, planned a"):
        writer.add("b", torch.zeros(2))
    writer.abort()
