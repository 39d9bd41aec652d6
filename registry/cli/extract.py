"""`adapt extract` (a LoRA from a full fine-tune) and `adapt convert` (another method to LoRA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from registry.cli.output import console, err_console, open_registry, print_json, progress_bar


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("extract")(extract)
    app.command("convert")(convert)


def extract(
    base: str = typer.Option(..., "--base", "-b", help="The base model: a directory or a "
                             "registered base name or fingerprint."),
    tuned: Path = typer.Option(..., "--tuned", "-t", help="The fully fine-tuned (or merged) "
                               "model directory, same architecture as the base."),
    rank: int | None = typer.Option(None, "--rank", "-r", help="LoRA rank of every module."),
    energy: float | None = typer.Option(None, "--energy", "-e", help="Keep this fraction of "
                                        "each module's squared delta norm, in (0, 1]; ranks "
                                        "per module are written as rank_pattern."),
    max_rank: int | None = typer.Option(None, "--max-rank", help="Cap on the ranks --energy "
                                        "picks."),
    modules: str | None = typer.Option(None, "--modules", "-m", help="Regular expression: only "
                                       "modules whose name it matches (searched)."),
    save_changed: bool = typer.Option(False, "--save-changed", help="Keep changed non-linear "
                                      "tensors (norms, embeddings) as modules_to_save."),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomized range finder."),
    name: str | None = typer.Option(None, "--name", "-n", help="Adapter name (default: the "
                                    "tuned directory's name + '-lora')."),
    note: str | None = typer.Option(None, "--note", help="A note stored with the version."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Extract a LoRA from a full fine-tune: per module, a truncated factorization of
    W_tuned - W_base by a randomized range finder, both checkpoints streamed tensor by tensor.

    Modules whose delta is zero are skipped; changed norms, biases and embeddings are reported
    (and kept as modules_to_save with --save-changed). The LoRA is registered against the base
    with the tuned model's fingerprint and each module's rank, captured energy and relative
    error in its recipe (`adapt show --json`).

    Exit codes: 2 bad options (both or neither of --rank/--energy), 3 no such base or
    directory, 5 the checkpoints' shapes differ, 6 unreadable checkpoint.

    Examples:

      adapt extract --base ./llama --tuned ./llama-sft --rank 32 --name sft-lora

      adapt extract --base llama --tuned ./llama-sft --energy 0.9 --max-rank 64 --json
    """
    from registry.ops.extract import ExtractOptions

    options = ExtractOptions(rank=rank, energy=energy, max_rank=max_rank, modules=modules,
                             seed=seed, save_changed=save_changed)
    reg = open_registry()
    try:
        with progress_bar("extracting", None, unit="tensors",
                          enabled=not json_ and err_console.is_terminal) as update:
            res = reg.extract(base, tuned, options, name=name, note=note, on_progress=update)
        shown = reg.show(res.version)
    finally:
        reg.close()
    if json_:
        print_json({**shown, "created": res.created})
        return
    recipe: dict[str, Any] = shown["recipe"] or {}
    _print_added(res.version.ref, res.created, shown)
    console.print(f"  from {recipe.get('tuned_path')} (tuned fingerprint "
                  f"{str(recipe.get('tuned_fingerprint'))[:19]})")
    _print_modules(recipe)
    zero = recipe.get("zero_modules") or []
    if zero:
        console.print(f"  {len(zero)} linear modules unchanged (skipped)")
    for c in recipe.get("changed_non_linear") or []:
        console.print(f"  changed, not linear: {c['name']} (relative change "
                      f"{c['rel_change']:.3g}){' saved as modules_to_save' if c['saved'] else ''}")


def convert(
    ref: str = typer.Argument(..., help="The version to convert (NAME, NAME@N, NAME:TAG, "
                              "sha256:PREFIX)."),
    to: str = typer.Option("lora", "--to", help="Target method (only lora)."),
    rank: int | None = typer.Option(None, "--rank", "-r", help="LoRA rank of every module "
                                    "(default: the delta's exact rank where it has one)."),
    energy: float | None = typer.Option(None, "--energy", "-e", help="Keep this fraction of "
                                        "each module's squared delta norm, in (0, 1]."),
    max_rank: int | None = typer.Option(None, "--max-rank", help="Cap on the ranks --energy "
                                        "picks."),
    name: str | None = typer.Option(None, "--name", "-n", help="Adapter name for the result "
                                    "(default: NAME-lora)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Convert a LoHa, LoKr, AdaLoRA, VeRA, VB-LoRA or other additive adapter to a plain LoRA.

    Exact where the delta has an exact low-rank form (LoHa: rank <= r^2, LoKr: the product of
    its factors' ranks, AdaLoRA/VeRA/VB-LoRA: r), truncated otherwise (FourierFT, SHiRA, C3A,
    MiSS, RandLoRA: give --rank or --energy) with the error per module recorded. DoRA, IA3,
    OFT, BOFT, HRA and LN tuning change W multiplicatively or replace it: a LoRA equals them
    only merged, so they are refused (use `adapt merge`). VeRA and the truncated methods take
    their shapes from the base the version was added with (`adapt add --base`).

    Exit codes: 2 bad options or already a LoRA, 3 unknown reference, 7 method not convertible.

    Examples:

      adapt convert my-loha --to lora

      adapt convert my-fourierft@2 --to lora --energy 0.99 --name ft-lora --json
    """
    from registry.errors import UsageError
    from registry.ops.convert import ConvertOptions

    if to.lower() != "lora":
        raise UsageError(f"cannot convert to {to!r}", "only --to lora is supported")
    options = ConvertOptions(rank=rank, energy=energy, max_rank=max_rank)
    reg = open_registry()
    try:
        res = reg.convert(ref, options, name=name)
        shown = reg.show(res.version)
    finally:
        reg.close()
    if json_:
        print_json({**shown, "created": res.created})
        return
    recipe: dict[str, Any] = shown["recipe"] or {}
    _print_added(res.version.ref, res.created, shown)
    exact = "exact" if recipe.get("exact") else \
        f"truncated, largest relative error {recipe.get('max_rel_error', 0.0):.3g}"
    console.print(f"  from {recipe.get('source', {}).get('ref')} "
                  f"({recipe.get('source_method')}): {exact}")
    _print_modules(recipe)


def _print_added(ref: str, created: bool, shown: Any) -> None:
    verb = "created" if created else "already registered as"
    pattern = shown["rank_pattern"]
    console.print(f"{verb} {ref} (LoRA rank {shown['rank']}"
                  + (f", rank_pattern for {len(pattern)} modules" if pattern else "")
                  + f") sha256:{shown['digest'].split(':')[-1][:12]}")


def _print_modules(recipe: dict[str, Any], limit: int = 12) -> None:
    mods: dict[str, dict[str, Any]] = recipe.get("modules") or {}
    for module, m in list(mods.items())[:limit]:
        console.print(f"  {module}: rank {m['rank']}, energy {m['energy']:.6f}, "
                      f"relative error {m['rel_error']:.3g}")
    if len(mods) > limit:
        worst = max(m["rel_error"] for m in mods.values())
        console.print(f"  ... {len(mods) - limit} more modules (largest relative error "
                      f"{worst:.3g}; all in `adapt show --json`)")
