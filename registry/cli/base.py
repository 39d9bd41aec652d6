"""`adapt base ...`: fingerprint and register base models."""

from __future__ import annotations

from pathlib import Path

import typer

from registry.cli.output import (
    console,
    emit,
    err_console,
    fit_table,
    human_bytes,
    open_registry,
    print_json,
    short_fp,
)

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
    hub_id: str | None = typer.Option(None, "--hub-id", help="Its Hugging Face Hub id "
                                      "(ORG/NAME), published as the card's base_model by "
                                      "`adapt push` (default: config.json's _name_or_path "
                                      "when that is a Hub id)."),
    json_: bool = JSON,
) -> None:
    """Register a base model by fingerprint.

    Example:

      adapt base add ./models/smollm2 --name smollm2-135m --hub-id HuggingFaceTB/SmolLM2-135M
    """
    info = open_registry().add_base(path, name=name, hub_id=hub_id)
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
    table = [[r.name or "-", r.kind, short_fp(r.fingerprint, 8), r.architecture or "-",
              f"{r.params:,}", r.path or "-"] for r in rows]
    # 80 columns: short fingerprints, ARCH and PATH shortened in the middle, then PARAMS left
    # out if needed; NAME is never cut. --json has every field in full.
    emit(fit_table(["NAME", "KIND", "FINGERPRINT", "ARCH", "PARAMS", "PATH"], table,
                   shrink=(5, 3), optional=(4,), min_width=10))


@base_app.command("show")
def show(
    key: str = typer.Argument(..., help="A base name, fingerprint or fingerprint prefix."),
    json_: bool = JSON,
) -> None:
    """Show a registered base (or merged/quantized) model.

    Example:

      adapt base show smollm2-135m
    """
    info = open_registry().show_base(key)
    if json_:
        print_json(info.to_dict())
        return
    rows = [("name", info.name or "-"), ("kind", info.kind), ("fingerprint", info.fingerprint),
            ("structure", info.structure), ("architecture", info.architecture or "-"),
            ("params", f"{info.params:,}"), ("dtype", info.dtype or "-"),
            ("path", info.path or "-"), ("parent", info.parent_fingerprint or "-"),
            ("created_at", info.created_at.strftime("%Y-%m-%d %H:%M:%S"))]
    for label, value in rows:
        console.print(f"{label:<13} {value}", markup=False)


@base_app.command("rm")
def rm(
    key: str = typer.Argument(..., help="A base name, fingerprint or fingerprint prefix."),
    force: bool = typer.Option(False, "--force", help="Remove it even while adapter versions "
                               "reference it (they keep their fingerprint)."),
    json_: bool = JSON,
) -> None:
    """Forget a registered model (its files on disk are not touched).

    Refused (exit 8) while adapter versions reference it, naming them, unless --force.

    Example:

      adapt base rm old-llama
    """
    info = open_registry().remove_base(key, force=force)
    if json_:
        print_json({"removed": info.to_dict()})
        return
    console.print(f"removed base {info.name or '-'} {short_fp(info.fingerprint)}", markup=False)
