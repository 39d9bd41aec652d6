"""Options of the model ops are frozen and validated once, when they are made."""

from __future__ import annotations

import dataclasses

import pytest

from registry.errors import UsageError
from registry.ops.options import ComposeOptions, MergeOptions, QuantizeOptions


@pytest.mark.parametrize(("make", "message"), [
    (lambda: MergeOptions(dtype="fp8"), "unknown dtype 'fp8'"),
    (lambda: MergeOptions(base_quantization="int4"), "unknown base quantization 'int4'"),
    (lambda: MergeOptions(shard_size=0), "invalid shard size"),
    (lambda: QuantizeOptions(to="q3_k"), "unsupported --to 'q3_k'"),
    (lambda: QuantizeOptions(to="nf4", compute_dtype="fp8"), "unknown compute dtype"),
    (lambda: QuantizeOptions(to="nf4", blocksize=100), "unsupported blocksize 100"),
    (lambda: QuantizeOptions(to="nf4", compensate_rank=0), "--compensate-rank must be at least 1"),
    (lambda: QuantizeOptions(to="nf4", skip_modules="lm_head"), "list of patterns"),
    (lambda: ComposeOptions("average"), "unknown compose method 'average'"),
    (lambda: ComposeOptions("cat", rank=4), "cat is exact"),
    (lambda: ComposeOptions("svd", rank=0), "--rank must be"),
    (lambda: ComposeOptions("ties"), "ties needs --density"),
    (lambda: ComposeOptions("ties", density=float("nan")), "--density must be in (0, 1]"),
])
def test_bad_options_are_refused_when_made(make, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        make()
    assert message in str(caught.value)


def test_options_are_frozen_and_normalised() -> None:
    options = QuantizeOptions(to="nf4", skip_modules=["lm_head", "mlp.down_proj"])
    assert options.skip_modules == ("lm_head", "mlp.down_proj")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.to = "int8"  # type: ignore[misc]
    assert hash(options) == hash(QuantizeOptions(to="nf4", skip_modules=("lm_head",
                                                                         "mlp.down_proj")))
    assert ComposeOptions("dare_ties", density=0.5).recorded_seed == 0
    assert ComposeOptions("svd").recorded_seed is None
    assert MergeOptions() == MergeOptions(dtype=None, shard_size=None, force=False)
