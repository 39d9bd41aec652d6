"""Fingerprints: exact, layout-independent, cached."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from registry.errors import InvalidModel
from registry.fingerprint import fingerprint_model
from tests.factories import make_tiny_llama


def _reshard(src: Path, dst: Path, groups: int) -> None:
    """Write the same tensors as `groups` shards in reversed order, with an index."""
    tensors = load_file(str(src / "model.safetensors"))
    names = sorted(tensors, reverse=True)
    dst.mkdir()
    weight_map = {}
    for g in range(groups):
        part = {n: tensors[n] for n in names[g::groups]}
        fname = f"model-{g + 1:05d}-of-{groups:05d}.safetensors"
        save_file(part, str(dst / fname))
        weight_map.update({n: fname for n in part})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(src / "config.json", dst / "config.json")


def test_resharding_and_reordering_keep_the_fingerprint(tiny_base: Path, tmp_path: Path) -> None:
    one = fingerprint_model(tiny_base)
    _reshard(tiny_base, tmp_path / "sharded", groups=3)
    three = fingerprint_model(tmp_path / "sharded")
    assert three.fingerprint == one.fingerprint
    assert three.structure == one.structure
    assert three.params == one.params > 0


def test_any_changed_weight_changes_the_fingerprint_but_not_the_structure(
    tiny_base: Path, tmp_path: Path
) -> None:
    tensors = load_file(str(tiny_base / "model.safetensors"))
    name = sorted(tensors)[3]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    changed = tmp_path / "changed"
    changed.mkdir()
    save_file(tensors, str(changed / "model.safetensors"))
    a, b = fingerprint_model(tiny_base), fingerprint_model(changed)
    assert a.fingerprint != b.fingerprint
    assert a.structure == b.structure


def test_different_architecture_changes_the_structure(tiny_base: Path, other_base: Path) -> None:
    assert fingerprint_model(tiny_base).structure != fingerprint_model(other_base).structure


def test_chunk_size_is_part_of_the_algorithm(tiny_base: Path, monkeypatch) -> None:
    import registry.fingerprint as fpmod

    whole = fingerprint_model(tiny_base).fingerprint
    monkeypatch.setattr(fpmod, "CHUNK_BYTES", 4096)
    # chunk size is part of the tree hash: a change must be deliberate (new algorithm prefix)
    assert fingerprint_model(tiny_base).fingerprint != whole


def test_cache_returns_the_same_result_and_notices_changes(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "m", seed=5)
    cache = tmp_path / "cache"
    first = fingerprint_model(model, cache_dir=cache)
    t = time.perf_counter()
    second = fingerprint_model(model, cache_dir=cache)
    assert time.perf_counter() - t < 0.5
    assert second == first
    # rewrite the file with other weights: new mtime/size/inode, so the cache must miss
    make_tiny_llama(tmp_path / "m2", seed=6)
    shutil.copy(tmp_path / "m2" / "model.safetensors", model / "model.safetensors")
    assert fingerprint_model(model, cache_dir=cache).fingerprint != first.fingerprint


def test_directory_without_safetensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModel, match="no .safetensors"):
        fingerprint_model(tmp_path / "empty")
