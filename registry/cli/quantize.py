"""`adapt requantize`: quantize a merged model (or base + adapter in one pass) with bitsandbytes."""

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
    from registry.ops.quantize import QuantizeResult
    from registry.registry import BaseInfo


class QuantType(StrEnum):
    nf4 = "nf4"
    fp4 = "fp4"
    int8 = "int8"


class ComputeDtype(StrEnum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("requantize")(requantize)


def requantize(
    src: Path | None = typer.Argument(None, help="A merged (full-precision) model directory. "
                                      "Leave out with --adapter/--base."),
    to: str = typer.Option(..., "--to", help="Quantization: nf4, fp4 or int8."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the quantized model to."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Merge this registered "
                                       "adapter version into --base and quantize in one pass."),
    base: Path | None = typer.Option(None, "--base", "-b", help="Base model directory (or "
                                     "registered base name) for --adapter."),
    double_quant: bool = typer.Option(False, "--double-quant", help="4-bit only: also quantize "
                                      "the per-block absmax statistics (saves ~0.4 bit/weight)."),
    compute_dtype: ComputeDtype = typer.Option(ComputeDtype.bf16, "--compute-dtype",
                                               help="dtype of the 4-bit layers' matmuls."),
    blocksize: int = typer.Option(64, "--blocksize", help="4-bit block size (64 is what "
                                  "transformers uses when it quantizes on load)."),
    skip_modules: str = typer.Option("lm_head", "--skip-modules", help="Comma-separated module "
                                     "name patterns kept unquantized ('' quantizes all)."),
    compensate_rank: int | None = typer.Option(None, "--compensate-rank", help="Fit a rank-R "
                                               "LoRA to each layer's rounding residual and "
                                               "save it in OUT/compensation."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace a non-empty --out (never "
                               "one that holds a source or the registry)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Register the quantized model "
                                    "under this base name (see `adapt base list`)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every layer's error, not "
                                 "only the worst 5 (--json always has them all)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Quantize every Linear weight with bitsandbytes into a model from_pretrained loads as is.

    The output has the quantized weights, their quant_state tensors and quantization_config
    in config.json: AutoModelForCausalLM.from_pretrained(OUT) needs no arguments. The error
    budget (per layer and overall, also in OUT/adapt-quant.json) is ||dequant(Q(W')) - W'||
    relative to ||W'|| and, with --adapter, relative to ||delta||: above about 1 the rounding
    is as large as the fine-tune itself. The output is recorded as a quantized model
    (see `adapt base list`).

    Exit codes: 2 bad option, or --out overlaps a source or the registry, 3 unknown adapter
    or base, 5 incompatible base, 6 source already quantized, 8 --out not empty (use
    --force), 9 not enough disk or no bitsandbytes backend.

    Examples:

      adapt requantize ./merged --to nf4 --out ./merged-nf4

      adapt requantize --adapter support-lora:prod --base ./llama --to nf4 --out ./nf4

      adapt requantize ./merged --to int8 --compensate-rank 16 --out ./merged-int8 --json
    """
    from registry.ops.options import QuantizeOptions

    skips = tuple(s.strip() for s in skip_modules.split(",") if s.strip())
    options = QuantizeOptions(to=to, double_quant=double_quant,
                              compute_dtype=compute_dtype.value, blocksize=blocksize,
                              skip_modules=skips, compensate_rank=compensate_rank, force=force)
    reg = open_registry()
    try:
        with progress_bar(f"quantizing to {to}", None,
                          enabled=not json_ and err_console.is_terminal) as update:
            result, info = reg.requantize(out, options, src=src, adapter=adapter, base=base,
                                          name=name, on_progress=update)
    finally:
        reg.close()
    if json_:
        print_json({**result.to_dict(), "record": info.to_dict()})
    else:
        _render(result, info, verbose=verbose)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _render(result: QuantizeResult, info: BaseInfo, *, verbose: bool = False) -> None:
    from rich.table import Table

    source = result.provenance.get("adapter_ref") or result.provenance.get("source_path", "?")
    kind = result.to + (" + double quant" if result.double_quant else "")
    console.print(f"quantized {source} to {kind} (blocksize {result.blocksize}, compute "
                  f"{result.compute_dtype}) -> {result.out_dir}")
    table = Table(box=None, pad_edge=False)
    table.add_column("layer", overflow="fold")
    table.add_column("shape", justify="right")
    table.add_column("err/|W|", justify="right")
    table.add_column("err/|delta|", justify="right")
    if result.compensate_rank:
        table.add_column(f"+r{result.compensate_rank} err/|W|", justify="right")
        table.add_column(f"+r{result.compensate_rank} err/|delta|", justify="right")
    # A summary by default: the 5 layers with the largest error (every layer with --verbose).
    layers = result.layers if verbose else sorted(
        result.layers, key=lambda layer: -(layer.rel_error or 0.0))[:5]
    if not verbose and len(result.layers) > len(layers):
        console.print(f"  worst {len(layers)} of {len(result.layers)} layers (all: --verbose)")
    for layer in layers:
        row = [layer.module, "x".join(map(str, layer.shape)), _fmt(layer.rel_error),
               _fmt(layer.error_vs_delta)]
        if result.compensate_rank:
            row += [_fmt(layer.compensated_rel_error), _fmt(layer.compensated_error_vs_delta)]
        table.add_row(*row)
    o = result.overall
    row = ["overall", "", _fmt(o.get("rel_error")), _fmt(o.get("error_vs_delta"))]
    if result.compensate_rank:
        row += [_fmt(o.get("compensated_rel_error")), _fmt(o.get("compensated_error_vs_delta"))]
    table.add_row(*row, style="bold")
    console.print(table)
    vs_delta = o.get("error_vs_delta")
    if vs_delta is not None and vs_delta >= 0.5:
        console.print(f"  warning: the rounding error is {vs_delta:.2f} x the fine-tune's "
                      "delta; consider --compensate-rank or int8")
    console.print(f"  {len(result.layers)} layers quantized, {result.kept_tensors} tensors kept, "
                  f"{human_bytes(result.source_bytes)} -> {human_bytes(result.total_bytes)} "
                  f"in {len(result.files)} file(s), {result.seconds:.1f} s")
    if result.compensation_dir:
        console.print(f"  correction adapter (PEFT LoRA r={result.compensate_rank}): "
                      f"{result.compensation_dir}")
    console.print(f"  recorded as quantized model {short_fp(info.fingerprint)}")
