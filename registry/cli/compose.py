"""`adapt compose` and `adapt diff`: LoRA arithmetic on true deltas, with lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from registry.cli.output import (
    console,
    err_console,
    open_registry,
    print_json,
    progress_bar,
    shorten_common_prefix,
)
from registry.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("compose")(compose)
    app.command("diff")(diff)


def parse_input(text: str) -> tuple[str, float]:
    """`REF` or `REF*WEIGHT` (weight may be negative: `sql-lora*-1`)."""
    ref, star, weight = text.rpartition("*")
    if not star:
        return text, 1.0
    try:
        return ref, float(weight)
    except ValueError:
        raise UsageError(f"bad weight in {text!r}", "write REF*WEIGHT, e.g. sql-lora@2*0.5") \
            from None


def load_recipe(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) recipe, validated against the compose-recipe schema.

    Parsed with bounds (registry.safeparse): no YAML aliases (a billion-laughs recipe), no deep
    nesting, no NaN/Inf, at most 1 MB; every refusal is one short line, exit 2.
    """
    from registry.safeparse import ParseLimitError, load_yaml, read_limited
    from registry.schemas import validate

    try:
        data = load_yaml(read_limited(path, 1024 * 1024))
    except OSError as error:
        raise UsageError(f"cannot read recipe {path}: {error.strerror}") from None
    except ParseLimitError as error:
        raise UsageError(f"recipe {path} is not usable: {error}") from None
    validate(data, "compose-recipe")
    return data


def compose(
    inputs: list[str] | None = typer.Argument(None, help="Input versions as REF or REF*WEIGHT "
                                              "(weight default 1; negative negates)."),
    method: str | None = typer.Option(None, "--method", "-m", help="cat, svd, linear, ties, "
                                      "dare_linear, dare_ties or magnitude_prune."),
    rank: int | None = typer.Option(None, "--rank", "-r", help="Output rank (svd and dense "
                                    "methods default to the largest input rank; linear keeps "
                                    "the exact rank of the sum)."),
    density: float | None = typer.Option(None, "--density", help="Fraction kept by ties, dare_* "
                                         "and magnitude_prune, in (0, 1]."),
    seed: int | None = typer.Option(None, "--seed", help="DARE mask seed (default 0)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Adapter name for the result."),
    recipe: Path | None = typer.Option(None, "--recipe", "-f", help="A YAML recipe with inputs, "
                                       "method, rank, density, seed and name."),
    convert: bool = typer.Option(False, "--convert", help="Convert LoHa, LoKr, VeRA, AdaLoRA "
                                 "and other additive inputs to LoRA first (exact where the "
                                 "delta's factors allow); each conversion's error is recorded "
                                 "in the recipe and lineage."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Compose LoRA versions into a new registered version with its lineage.

    Works on the true deltas sum_i w_i * scale_i * B_i A_i (any ranks, alphas, rsLoRA, target
    sets), unlike PEFT's add_weighted_adapter which mixes A and B separately. cat is exact;
    svd/linear re-rank without m x n matrices; ties/dare_*/magnitude_prune run PEFT's
    algorithms on dense per-module deltas and re-factor to --rank.

    Exit codes: 2 bad arguments or recipe, 3 unknown reference, 7 input cannot be composed
    (DoRA, IA3; LoHa, LoKr and other additive methods unless --convert).

    Examples:

      adapt compose support-lora sql-lora*0.5 --method cat --name support-sql

      adapt compose a@2 b@1*-1 --method svd --rank 16 --name a-minus-b

      adapt compose a b --method dare_ties --density 0.3 --seed 7 --rank 8 --name mix

      adapt compose -f recipe.yaml --json
    """
    from registry.ops.options import ComposeOptions

    if recipe is not None:
        if inputs:
            raise UsageError("give inputs either on the command line or in --recipe, not both")
        data = load_recipe(recipe)
        pairs = [(i["ref"], float(i.get("weight", 1.0))) for i in data["inputs"]]
        method = data["method"]
        rank, density, seed = data.get("rank"), data.get("density"), data.get("seed")
        name = data["name"]
    else:
        if not inputs:
            raise UsageError("no inputs", "adapt compose REF[*W]... --method M --name NAME")
        pairs = [parse_input(t) for t in inputs]
    if method is None or name is None:
        raise UsageError("--method and --name are required (or use -f recipe.yaml)")
    options = ComposeOptions(method, rank=rank, density=density, seed=seed)
    reg = open_registry()
    try:
        with progress_bar(f"composing ({method})", None, unit="modules",
                          enabled=not json_ and err_console.is_terminal) as update:
            res = reg.compose(pairs, options, name=name, on_progress=update, convert=convert)
        shown = reg.show(res.version)
    finally:
        reg.close()
    if json_:
        print_json({**shown, "created": res.created})
        return
    v = res.version
    verb = "created" if res.created else "already registered as"
    console.print(f"{verb} {v.ref} ({method} of {len(pairs)} inputs, rank {v.rank}"
                  + (f", rank_pattern for {len(v.rank_pattern)} modules" if v.rank_pattern
                     else "") + f") sha256:{v.digest[:12]}")
    for ref, w in pairs:
        console.print(f"  {w:+g} x {ref}")


def diff(
    ref_a: str = typer.Argument(..., help="First version."),
    ref_b: str = typer.Argument(..., help="Second version."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of text."),
) -> None:
    """Compare two LoRA versions per module: cosine, norms, sign conflicts, effective rank.

    Cosine, norms and effective ranks come from the factors; the sign-conflict fraction (entries
    both adapters change, in opposite directions) is computed densely one module at a time.

    Exit codes: 3 unknown reference, 7 not a plain LoRA.

    Examples:

      adapt diff sql-lora@1 sql-lora@2

      adapt diff support-lora sql-lora --json
    """
    from rich.table import Table

    reg = open_registry()
    try:
        report = reg.diff(ref_a, ref_b)
    finally:
        reg.close()
    if json_:
        print_json(report.to_dict())
        return
    # 80 columns: drop the prefix every module shares, fold (never cut) what distinguishes them.
    prefix, shown = shorten_common_prefix(list(report.modules))
    if prefix:
        console.print(f"modules under {prefix}", markup=False, soft_wrap=True)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("module", overflow="fold", min_width=min(40, max(map(len, shown), default=6)))
    for col in ("cosine", "|a|", "|b|", "conflict", "rank a", "rank b"):
        table.add_column(col, justify="right", no_wrap=True)
    for module, (_, s) in zip(shown, report.modules.items(), strict=True):
        table.add_row(module, f"{s['cosine']:+.3f}", f"{s['norm_a']:.3g}", f"{s['norm_b']:.3g}",
                      f"{s['sign_conflict']:.3f}", f"{s['effective_rank_a']:.2f}",
                      f"{s['effective_rank_b']:.2f}")
    console.print(table)
    console.print(report.summary)
