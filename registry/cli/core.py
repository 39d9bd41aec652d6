"""Core registry commands: add, list, show, tag, untag, rm, export, score, gc, fsck."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    to_jsonable,
)
from registry.terminal import printable

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def register(app: typer.Typer) -> None:
    app.command("add")(add)
    app.command("list")(list_)
    app.command("ls", hidden=True)(list_)
    app.command("show")(show)
    app.command("tag")(tag)
    app.command("untag")(untag)
    app.command("rm")(rm)
    app.command("export")(export)
    app.command("score")(score)
    app.command("gc")(gc)
    app.command("fsck")(fsck)


def add(
    path: Path = typer.Argument(..., help="A PEFT adapter directory (adapter_config.json + "
                                "adapter_model.safetensors)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Adapter name (default: the "
                                    "directory name, lowercased)."),
    base: str | None = typer.Option(None, "--base", "-b", help="Base model directory (or a "
                                    "registered base name) to fingerprint and check shapes "
                                    "against."),
    tag_: list[str] = typer.Option([], "--tag", "-t", help="Tag to point at this version "
                                   "(repeatable)."),
    note: str | None = typer.Option(None, "--note", help="A free-text note."),
    allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite", help="Register even if a "
                                         "tensor holds NaN/Inf."),
    convert_pickle: bool = typer.Option(False, "--convert-pickle", help="Accept "
                                        "adapter_model.bin: load it with torch.load("
                                        "weights_only=True) and store safetensors."),
    json_: bool = JSON,
) -> None:
    """Register an adapter directory as a new version.

    Adding identical content again creates no new version and says which one it is.

    Examples:

      adapt add ./out/support-lora --base ./models/smollm2 --tag staging

      adapt add ./lora --name sql-lora --note "lr 2e-4, 3 epochs" --json
    """
    reg = open_registry()
    result = reg.add(path, name=name, base=base, tags=tag_, note=note,
                     allow_nonfinite=allow_nonfinite, convert_pickle=convert_pickle)
    v = result.version
    if json_:
        print_json({**to_jsonable(reg.show(v)), "created": result.created})
        return
    if result.created:
        console.print(f"added {v.ref}  {v.method} r={v.rank} {human_bytes(v.size_bytes)}  "
                      f"{v.digest[:19]}")
    else:
        console.print(f"already registered as {v.ref} (identical content); no new version")
    if v.base_fingerprint:
        console.print(f"  base {short_fp(v.base_fingerprint)}")


def list_(
    base: str | None = typer.Option(None, "--base", help="Only adapters for this base "
                                    "(fingerprint, fingerprint prefix, or base name)."),
    method: str | None = typer.Option(None, "--method", "-m", help="Only this PEFT method "
                                      "(LORA, DORA, LOHA, ...)."),
    tag_: str | None = typer.Option(None, "--tag", "-t", help="Only versions with this tag."),
    all_versions: bool = typer.Option(False, "--all", "-a", help="Every version, not only the "
                                      "latest of each adapter."),
    limit: int = typer.Option(200, "--limit", help="Show at most this many rows in the table "
                              "(0: all). JSON output is never truncated."),
    json_: bool = JSON,
) -> None:
    """List adapters (latest version of each, unless --all).

    Examples:

      adapt list

      adapt list --method lora --tag prod --json
    """
    reg = open_registry()
    filters: dict[str, Any] = dict(base=base, method=method, tag=tag_, all_versions=all_versions)
    if json_:
        rows = reg.list_versions(**filters)
        print_json([{k: v for k, v in to_jsonable(r).items()} for r in rows])
        return
    rows = reg.list_versions(**filters, limit=limit or None)
    if not rows:
        if base or method or tag_:
            err_console.print("no adapters match these filters (see `adapt list` for all)")
        else:
            err_console.print("no adapters registered yet: add one with "
                              "`adapt add PATH --base DIR`")
        return
    names = reg.base_names()  # a registered base's name says more than a local path
    table = [
        [r["ref"], r["method"], str(r["rank"] or "-"),
         printable(names.get(r["base_fingerprint"] or "") or r["base_model"]
                   or short_fp(r["base_fingerprint"])), human_bytes(r["size_bytes"]),
         ",".join(r["tags"]) or "-", r["created_at"].strftime("%Y-%m-%d %H:%M")]
        for r in rows
    ]
    headers = ["REF", "METHOD", "RANK", "BASE", "SIZE", "TAGS", "CREATED"]
    # REF is never cut (it names the row); BASE and TAGS shorten in the middle, then CREATED,
    # SIZE and RANK are left out if it still does not fit.
    emit(fit_table(headers, table, shrink=(3, 5), optional=(6, 4, 2)))
    if limit and len(rows) == limit:
        total = reg.count_versions(**filters)
        if total > limit:
            err_console.print(f"... {total - limit} more (use --limit 0 or --json)")


def show(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION, NAME:TAG or sha256:PREFIX"),
    json_: bool = JSON,
) -> None:
    """Show everything known about one version.

    Examples:

      adapt show support-lora

      adapt show support-lora@2 --json | jq .files
    """
    data = open_registry().show(ref)
    if json_:
        print_json(data)
        return
    from rich.table import Table
    from rich.text import Text

    # values come from files and remote manifests: Text (never markup) with controls escaped
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    fields = ["ref", "digest", "method", "rank", "alpha", "use_rslora", "target_modules",
              "modules_to_save", "task_type", "base_model", "base_fingerprint", "params",
              "size_bytes", "dtype", "tags", "source", "note", "created_at"]
    for k in fields:
        v = data[k]
        if k == "size_bytes":
            v = human_bytes(v)
        elif isinstance(v, list):
            v = ", ".join(map(str, v)) or "-"
        t.add_row(k, Text("-" if v is None or v == "" else printable(v)))
    for k in ("rank_pattern", "alpha_pattern"):
        if data[k]:
            t.add_row(k, Text(printable(", ".join(f"{p}={r}" for p, r in data[k].items()))))
    if data["new_heads"]:  # modules_to_save the base checkpoint lacks (a task head)
        t.add_row("new head", Text(printable(", ".join(data["new_heads"]))))
    console.print(t)
    if data["files"]:
        console.print("\n[bold]files[/bold]")
        for f in data["files"]:
            console.print(f"  {printable(f['path']):<28} {human_bytes(f['size']):>9}  "
                          f"{f['sha256'][:16]}", markup=False)
    if data["parents"]:
        console.print("\n[bold]parents[/bold]")
        for p in data["parents"]:
            w = "" if p["weight"] is None else f" x{p['weight']:g}"
            state = {"deleted": " [deleted]", "remote": " [remote: `adapt pull` it]",
                     "unknown": " [not in this registry]"}.get(p.get("state", "local"), "")
            console.print(printable(f"  {p['ref']}{w} ({p['role']}){state}"), markup=False)
    if data["scores"]:
        console.print("\n[bold]scores[/bold]")
        for sc in data["scores"]:
            console.print(printable(f"  {sc['metric']:<16} {sc['value']:<12.6g} "
                                    f"{sc['dataset'] or ''}"), markup=False)


def tag(
    ref: str = typer.Argument(..., help="The version to tag."),
    name: str = typer.Argument(..., help="Tag name, e.g. prod or staging."),
    protect: bool = typer.Option(False, "--protect", help="Protect the tag: moving or removing "
                                 "it later needs --force."),
    force: bool = typer.Option(False, "--force", help="Move a protected tag."),
    json_: bool = JSON,
) -> None:
    """Point a tag at a version (moving it if it exists).

    Example:

      adapt tag support-lora@3 prod

      adapt tag support-lora@4 prod --protect --force
    """
    v = open_registry().tag(ref, name, protect=protect, force=force)
    if json_:
        print_json({"tag": f"{v.name}:{name}", "ref": v.ref, "digest": v.digest})
        return
    console.print(f"{v.name}:{name} -> {v.ref}", markup=False)


def untag(
    name: str = typer.Argument(..., help="Adapter name."),
    tag_: str = typer.Argument(..., metavar="TAG", help="Tag to remove."),
    force: bool = typer.Option(False, "--force", help="Remove a protected tag."),
    json_: bool = JSON,
) -> None:
    """Remove a tag.

    Example:

      adapt untag support-lora staging
    """
    open_registry().untag(name, tag_, force=force)
    if json_:
        print_json({"removed": f"{name}:{tag_}"})
        return
    console.print(f"removed {name}:{tag_}", markup=False)


def rm(
    ref: str = typer.Argument(..., help="The version to delete."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="Delete even a version that is tagged, "
                               "pushed, a parent of another, or validated."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would go and what "
                                 "stands in the way."),
    json_: bool = JSON,
) -> None:
    """Delete a version (its blobs stay until `adapt gc`), leaving a tombstone.

    Refused (exit 8) while the version is tagged, pushed, the parent of another version, or
    has a passing validation run, unless --force. Its number is never given to other content.

    Example:

      adapt rm support-lora@1 --yes
    """
    reg = open_registry()
    plan = reg.removal_plan(ref)
    if dry_run:
        if json_:
            print_json(plan.to_dict())
            return
        console.print(f"would delete {plan.ref} ({', '.join(plan.files)})", markup=False)
        for why in plan.blockers:
            console.print(f"  blocked: {why} (--force overrides)", markup=False)
        return
    if plan.blockers and not force:
        from registry.errors import InUse

        raise InUse(plan.ref, plan.blockers, "pass --force to delete it anyway")
    v = reg.resolve(plan.ref)
    if not yes and not typer.confirm(f"delete {v.ref}?", err=True):
        raise typer.Abort()
    reg.remove(v.ref, force=force)
    if json_:
        print_json({"deleted": v.ref, "digest": v.digest})
        return
    console.print(f"deleted {v.ref}", markup=False)


def export(
    ref: str = typer.Argument(..., help="The version to export."),
    dest: Path = typer.Argument(..., help="A new or empty directory (a new .gguf file for "
                                "--format gguf)."),
    format_: str = typer.Option("peft", "--format", "-f", help="peft (the adapter directory), "
                                "gguf (a llama.cpp LoRA GGUF) or ollama (GGUF + Modelfile)."),
    base: str | None = typer.Option(None, "--base", "-b", help="Base model directory or "
                                    "registered name (gguf/ollama; default: the version's)."),
    json_: bool = JSON,
) -> None:
    """Write a version as a PEFT directory (every file verified against its sha256), a
    llama.cpp LoRA GGUF, or an Ollama import directory.

    Examples:

      adapt export support-lora:prod ./deploy/support-lora

      adapt export support-lora:prod ./support.gguf --format gguf --base smollm2
    """
    shipped = open_registry().export_as(ref, dest, format=format_, base=base)
    if json_:
        print_json({"ref": shipped.ref, "format": shipped.format, "path": str(shipped.path)})
        return
    console.print(f"exported {shipped.ref} as {shipped.format} to {shipped.path}", markup=False)


def score(
    ref: str = typer.Argument(..., help="The version the score belongs to."),
    metric: str = typer.Option(..., "--metric", help="Metric name, e.g. ppl or accuracy."),
    value: float = typer.Option(..., "--value", help="The value."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset it was measured on."),
    base: str | None = typer.Option(None, "--base", help="Base fingerprint it was measured "
                                    "with (default: the version's)."),
    higher_is_better: bool | None = typer.Option(
        None, "--higher-is-better/--lower-is-better", help="Which way is better (default: "
        "known from the metric's name: accuracy, f1, bleu... up; loss, ppl, wer... down)."),
    quantization: str | None = typer.Option(None, "--quantization", help="Quantization it "
                                            "was measured under, e.g. nf4."),
    append: bool = typer.Option(False, "--append", help="Keep earlier values of the same "
                                "metric/dataset/base as history instead of replacing them."),
    json_: bool = JSON,
) -> None:
    """Record an evaluation score.

    One value per (version, metric, dataset, base, quantization): recording it again replaces
    it, unless --append keeps the history.

    Example:

      adapt score support-lora@2 --metric ppl --value 7.31 --dataset support-eval
    """
    import math

    from registry.errors import UsageError

    if not math.isfinite(value):  # NaN/Inf would sort and gate as nonsense
        raise UsageError(f"--value must be a finite number, not {value!r}")
    reg = open_registry()
    reg.add_score(ref, metric, value, dataset=dataset, base_fingerprint=base,
                  higher_is_better=higher_is_better, quantization=quantization, append=append)
    resolved = reg.resolve(ref).ref
    if json_:
        print_json({"ref": resolved, "metric": metric, "value": value, "dataset": dataset})
        return
    console.print(f"recorded {metric}={value:g} for {resolved}", markup=False)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    temp: bool = typer.Option(False, "--temp", help="Remove only what interrupted writes left "
                              "(temp blobs, partial checkouts, adapt's temp dirs in the system "
                              "temp dir) once idle for a minute, not orphan blobs."),
    json_: bool = JSON,
) -> None:
    """Remove blobs that no version references, and temp files idle for an hour.

    `adapt fsck` lists what crashes left behind, with sizes; `adapt gc --temp` removes it.

    Examples:

      adapt gc --dry-run

      adapt gc --temp
    """
    reg = open_registry()
    report = (reg.gc(dry_run=dry_run, temp_only=True, temp_grace_seconds=60) if temp
              else reg.gc(dry_run=dry_run))
    if json_:
        print_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    temps = (f"{report.removed_temp_files} temp file(s)/dir(s), "
             f"{human_bytes(report.removed_temp_bytes)}")
    if temp:
        console.print(f"{verb} {temps}", markup=False)
        return
    console.print(f"{verb} {len(report.removed_blobs)} blob(s), "
                  f"{human_bytes(report.removed_bytes)}; {temps}", markup=False)


def fsck(
    quick: bool = typer.Option(False, "--quick", help="Skip re-hashing blob contents."),
    json_: bool = JSON,
) -> None:
    """Check the registry: every row has its blob, every blob hashes to its name.

    Exits 1 and lists the problems when there are any. Orphan blobs are reported, not errors
    (`adapt gc` removes them).

    Example:

      adapt fsck
    """
    from registry.errors import ConsistencyError

    report = open_registry().fsck(verify_hashes=not quick)
    if json_:
        print_json(report.to_dict())
    else:
        for p in report.problems:
            console.print(f"problem: {p}", markup=False)
        for lo in report.leftovers:
            console.print(f"leftover: {lo['path']} ({lo['kind']}, {human_bytes(lo['size'])}, "
                          f"idle {lo['age_seconds']} s)", markup=False)
        console.print(f"checked {report.checked_rows} file row(s), {report.checked_blobs} "
                      f"blob(s): {len(report.problems)} problem(s), "
                      f"{len(report.orphan_blobs)} orphan blob(s)")
        if report.leftovers:
            total = human_bytes(sum(lo["size"] for lo in report.leftovers))
            console.print(f"{len(report.leftovers)} leftover(s) of interrupted writes, {total} "
                          "(`adapt gc --temp` removes them)", markup=False)
    if not report.ok:
        raise ConsistencyError(report.problems)
