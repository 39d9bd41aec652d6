"""`adapt validate` and `adapt runs`: validation runs with gates, and their history."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from registry.cli.output import (
    console,
    err_console,
    open_registry,
    print_json,
    progress_bar,
    short_fp,
    to_jsonable,
)

if TYPE_CHECKING:
    from registry.validation import ValidationReport

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")
_STATUS_STYLE = {"passed": "green", "warn": "yellow", "failed": "red", "error": "red",
                 "skipped": "dim"}


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("runs")(runs)


def validate(
    ref: str = typer.Argument(..., help="The adapter version to validate (NAME, NAME@N, "
                              "NAME:TAG, sha256:PREFIX)."),
    base: Path = typer.Option(..., "--base", "-b", help="Base model directory (or "
                              "registered base name) to load the adapter onto."),
    merged: Path | None = typer.Option(None, "--merged", help="A merged model directory "
                                       "(e.g. `adapt merge` output) to compare logits with; "
                                       "default: merge on the fly."),
    quantized: Path | None = typer.Option(None, "--quantized", help="A quantized model "
                                          "directory: measure its KL divergence from the "
                                          "merged model."),
    data: Path | None = typer.Option(None, "--data", help="Eval texts: JSONL with a `text` "
                                     "field, or plain text (one per line). Default: the "
                                     "small English set shipped with adapt."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cuda or "
                               "cpu."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 "
                                     "(default: bfloat16 on GPU, float32 on CPU)."),
    gate: list[str] = typer.Option([], "--gate", "-g", help="A gate over the figures, e.g. "
                                   "'ppl <= 1.05 * base_ppl' (repeatable; all must hold)."),
    spec: Path | None = typer.Option(None, "--spec", help="A YAML spec file with gates and "
                                     "options (see schemas/validation-spec.schema.json)."),
    max_samples: int | None = typer.Option(None, "--max-samples", min=1, help="Use at most "
                                           "this many eval texts."),
    json_: bool = JSON,
) -> None:
    """Validate a version before deploying it: checks, figures, and gates.

    Checks integrity (hashes), compatibility (fingerprint, shapes, before any weights load),
    health (NaN/Inf, delta norms), quality (loss and perplexity, base vs base + adapter),
    performance (tokens/s, peak memory) and parity (unmerged vs merged logits; KL to a
    quantized model). The run is stored; `adapt runs REF` lists past runs.

    Exit codes: 0 every gate passed; 1 a gate failed (the run is stored as failed);
    4 integrity, 5 incompatible base, 6 invalid adapter or model (NaN/Inf).

    Examples:

      adapt validate support-lora:staging --base ./models/smollm2 --gate "ppl <= 1.05 * base_ppl"

      adapt validate sql-lora@3 --base ./llama --merged ./merged --gate "parity_max_abs < 1e-3"

      adapt validate sql-lora --base ./llama --spec gates.yaml --device cuda --json
    """
    from registry.validation import ValidationOptions

    reg = open_registry()  # first: --base may be a registered base's name
    options = ValidationOptions.build(reg.base_dir(base), merged=merged, quantized=quantized,
                                      data=data, device=device, dtype=dtype, gates=gate,
                                      spec=spec, max_samples=max_samples)
    with progress_bar(f"validating {ref}", None, unit="steps",
                      enabled=not json_ and err_console.is_terminal) as update:
        report = reg.validate(ref, options, on_progress=update)
    if json_:
        print_json(report.to_dict())
    else:
        _render(report)
    report.raise_for_status()


def _render(report: ValidationReport) -> None:
    from rich.table import Table

    from registry.validation import FIGURES

    console.print(f"validation run {report.run_id} of {report.ref}: "
                  f"[{_STATUS_STYLE.get(report.status, '')}]{report.status}[/]  "
                  f"({report.device['type']}: {report.device['name']}, {report.device['dtype']})")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("CHECK", "STATUS", "SUMMARY"):
        table.add_column(col, overflow="fold")
    for c in report.checks:
        style = _STATUS_STYLE.get(c.status, "")
        table.add_row(c.name, f"[{style}]{c.status}[/]", c.summary)
    console.print(table)
    figures = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("FIGURE", "VALUE", "UNIT"):
        figures.add_column(col)
    for name, value in report.figures.items():
        if value is not None:
            figures.add_row(name, f"{value:.6g}", FIGURES[name].unit)
    console.print(figures)
    if report.gates:
        gates = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("GATE", "RESULT", "VALUES"):
            gates.add_column(col, overflow="fold")
        for g in report.gates:
            values = ", ".join(f"{k}={v:.6g}" if v is not None else f"{k}=-"
                               for k, v in g.values.items())
            if g.message:
                values = f"{values} ({g.message})"
            gates.add_row(g.expr, f"[{_STATUS_STYLE[g.status]}]{g.status}[/]", values)
        console.print(gates)
    console.print(f"data: {report.data['source']} ({report.data['samples']} texts; "
                  f"tokenizer: {report.data['tokenizer']})", markup=False)


def runs(
    ref: str = typer.Argument(..., help="The adapter version whose runs to list."),
    limit: int = typer.Option(20, "--limit", help="Show at most this many runs (0: all)."),
    json_: bool = JSON,
) -> None:
    """List past validation runs of a version, newest first.

    Examples:

      adapt runs support-lora:prod

      adapt runs sql-lora@3 --json --limit 0
    """
    reg = open_registry()
    rows = reg.runs(ref, limit=limit or None)
    if json_:
        print_json(to_jsonable([r.to_dict() for r in rows]))
        return
    if not rows:
        err_console.print(f"no validation runs for {ref} yet: run `adapt validate {ref} "
                          "--base DIR`", markup=False)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("RUN", "STATUS", "STARTED", "DEVICE", "BASE", "PPL", "PARITY", "TOK/S", "GATES"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        fig = r.figures
        gates = r.gates
        passed = sum(g.passed for g in gates)
        table.add_row(
            str(r.id),
            f"[{_STATUS_STYLE.get(r.status, '')}]{r.status}[/]",
            r.started_at.strftime("%m-%d %H:%M") if r.started_at else "-",
            r.device.split(":", 1)[0],
            short_fp(r.base_fingerprint, 6),
            _num(fig.get("ppl")),
            _num(fig.get("parity_max_abs"), ".1e"),
            _num(fig.get("tokens_per_s"), ",.0f"),
            f"{passed}/{len(gates)}" if gates else "-",
        )
    console.print(table)


def _num(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)
