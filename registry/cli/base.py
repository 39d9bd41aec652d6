"""`adapt base ...`: fingerprint and register base models."""

from __future__ import annotations

from pathlib import Path

import typer

from registry.cli.output import console, err_console, human_bytes, open_registry, print_json

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")

base_app = typer.Typer(
    help="Base models: fingerprint, register and list checkpoints.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(base_app, name="base")


@base_app.command("fingerprint")
def fingerprint(
    path: Path = typer.Argument(..., help="A safetensors checkpoint directory (sharded or not)."),
    json_: bool = JSON,
) -> None:
    """Fingerprint a checkpoint: exact, layout-independent, cached by file stats.

    Example:

      adapt base fingerprint ./models/llama --json
    """
    fp = open_registry().fingerprint(path)
    if json_:
        print_json(fp.to_dict())
        return
    console.print(f"fingerprint  {fp.fingerprint}")
    console.print(f"structure    {fp.structure}")
    console.print(f"tensors      {fp.num_tensors}  params {fp.params:,}  {fp.dtype}  "
                  f"{human_bytes(fp.total_bytes)}  {fp.architecture or ''}")


@base_app.command("add")
def add(
    path: Path = typer.Argument(..., help="A safetensors checkpoint directory."),
    name: str | None = typer.Option(None, "--name", "-n", help="A name for it, e.g. llama-3-8b."),
    json_: bool = JSON,
) -> None:
    """Register a base model by fingerprint.

    Example:

      adapt base add ./models/smollm2 --name smollm2-135m
    """
    info = open_registry().add_base(path, name=name)
    if json_:
        print_json(info.to_dict())
        return
    console.print(f"base {info.name or '-'}  {info.fingerprint}")


@base_app.command("list")
def list_(
    kind: str | None = typer.Option(None, "--kind", help="base, merged or quantized."),
    json_: bool = JSON,
) -> None:
    """List registered base models (and merged/quantized outputs).

    Example:

      adapt base list --json
    """
    rows = open_registry().list_bases(kind)
    if json_:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        err_console.print("no base models yet: register one with `adapt base add DIR --name N`")
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in ("NAME", "KIND", "FINGERPRINT", "ARCH", "PARAMS", "PATH"):
        t.add_column(c)
    for r in rows:
        t.add_row(r.name or "-", r.kind, r.fingerprint[:20], r.architecture or "-",
                  f"{r.params:,}", r.path or "-")
    console.print(t)
