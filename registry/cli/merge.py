"""`adapt merge`: write an adapter version merged into its base as a standalone model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from registry.cli.output import (
    console,
    err_console,
    human_bytes,
    open_registry,
    print_json,
    progress_bar,
    short_fp,
)

if TYPE_CHECKING:
    from registry.ops.merge import MergeResult
    from registry.registry import BaseInfo


class Dtype(StrEnum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class BaseQuantization(StrEnum):
    nf4 = "nf4"
    fp4 = "fp4"
    nf4_dq = "nf4-dq"
    fp4_dq = "fp4-dq"


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("merge")(merge)


def merge(
    ref: str = typer.Argument(..., help="The adapter version to merge (NAME, NAME@N, NAME:TAG, "
                              "sha256:PREFIX)."),
    base: Path = typer.Option(..., "--base", "-b", help="Base model directory (safetensors, "
                              "sharded or not) or a registered base name."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the merged model to."),
    dtype: Dtype | None = typer.Option(None, "--dtype", help="Output dtype for floating "
                                       "tensors (default: keep the base's)."),
    shard_size: str | None = typer.Option(None, "--shard-size", help="Largest output shard, "
                                          "e.g. 5GB or 2GiB (default: the base's sharding)."),
    base_quantization: BaseQuantization | None = typer.Option(
        None, "--base-quantization", help="For QLoRA adapters: merge into dequant(quant(W)), "
        "the 4-bit weights the adapter was trained against (-dq: double quantization)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace a non-empty --out (never "
                               "one that holds the base, the adapter or the registry)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Register the merged model under "
                                    "this base name (see `adapt base list`)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Merge an adapter into its base: a model transformers loads with no PEFT.

    Streams the base tensor by tensor (memory stays near the largest tensor), computes in
    float32 and casts once, and writes into a temporary directory renamed into place at the
    end. Provenance goes into every shard's metadata and adapt-merge.json; the output is
    recorded in the registry as a merged model (see `adapt base list`).

    Exit codes: 2 --out is, holds or lies inside the base, the adapter or the registry,
    3 unknown reference or base, 5 incompatible base, 7 method cannot be merged (prompt
    tuning), 8 --out not empty (use --force), 9 not enough disk.

    Examples:

      adapt merge support-lora:prod --base ./models/llama --out ./merged

      adapt merge sql-lora@3 --base ./llama --out ./merged --dtype bf16 --shard-size 5GB

      adapt merge qlora-chat --base ./llama --out ./merged --base-quantization nf4 --json
    """
    from registry.io.shards import parse_size
    from registry.ops.options import MergeOptions

    options = MergeOptions(
        dtype=dtype.value if dtype else None, shard_size=parse_size(shard_size),
        base_quantization=base_quantization.value if base_quantization else None, force=force)
    reg = open_registry()
    try:
        with progress_bar(f"merging {ref}", None,
                          enabled=not json_ and err_console.is_terminal) as update:
            result, info = reg.merge(ref, base, out, options, name=name, on_progress=update)
    finally:
        reg.close()
    if json_:
        print_json({**result.to_dict(), "record": info.to_dict()})
    else:
        _render(result, info)


def _render(result: MergeResult, info: BaseInfo) -> None:
    console.print(f"merged {result.provenance.get('adapter_ref', '?')} ({result.method}) into "
                  f"{short_fp(result.provenance.get('base_fingerprint'))} -> {result.out_dir}")
    console.print(f"  {result.merged_modules} modules merged, {result.replaced_tensors} "
                  f"tensors replaced, {result.tensors} tensors in {len(result.files)} file(s), "
                  f"{human_bytes(result.total_bytes)}, dtype {result.dtype or 'as base'}"
                  + (f", base quantization {result.base_quantization}"
                     if result.base_quantization else "")
                  + f", {result.seconds:.1f} s")
    console.print(f"  recorded as merged model {short_fp(info.fingerprint)}")
