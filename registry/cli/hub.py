"""`adapt push`, `adapt pull` and `adapt remote status`: sync with the Hugging Face Hub."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from registry.cli.output import console, open_registry, print_json, progress_bar
from registry.terminal import printable

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")

remote_app = typer.Typer(help="Compare the registry with the Hugging Face Hub.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("push")(push)
    app.command("pull")(pull)
    app.add_typer(remote_app, name="remote")


def _bars(json_: bool) -> bool:
    return not json_ and sys.stderr.isatty()


def push(
    ref: str = typer.Argument(..., help="The version to push: NAME, NAME@N, NAME:TAG."),
    repo: str | None = typer.Option(
        None, "--repo", help="ORG/NAME on the Hub. Default: the repo this adapter was last "
        "pushed to or pulled from, else YOUR_USER/ADAPTER_NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    all_versions: bool = typer.Option(False, "--all-versions",
                                      help="Push every version of the adapter, in order."),
    tags: bool = typer.Option(False, "--tags", help="Publish the version's local tags in "
                              "adapt.json (default: tags stay local)."),
    license_: str | None = typer.Option(None, "--license", help="License id for the model "
                                        "card, e.g. apache-2.0."),
    json_: bool = JSON,
) -> None:
    """Push a version to the Hub as one commit tagged v<N> (PEFT files, adapt.json, model card).

    Unchanged versions upload nothing and create no commit. The token comes from HF_TOKEN or
    `hf auth login`; the endpoint from HF_ENDPOINT.

    Example:

      adapt push support-bot@3 --repo my-org/support-bot
    """
    reg = open_registry()
    with progress_bar("push", None, enabled=_bars(json_)) as update:
        result = reg.push(ref, repo=repo, private=private, all_versions=all_versions,
                          on_progress=update, publish_tags=tags, license=license_)
    if json_:
        print_json(result.to_dict())
        return
    for v in result.versions:
        what = {
            "pushed": f"pushed {len(v.uploaded_files)} file(s)",
            "unchanged": "already on the Hub, nothing sent",
            "metadata-differs": "already on the Hub; newer local metadata not pushed "
            "(published tags are immutable)",
        }[v.state]
        console.print(f"{v.ref} -> {result.repo}@{v.tag} ({v.commit[:12]}): {what}")


def pull(
    spec: str = typer.Argument(..., help="ORG/NAME[@REVISION]: a tag (v2), branch or commit."),
    name: str | None = typer.Option(None, "--name", "-n",
                                    help="Register under this name (default: the manifest's "
                                    "name, else the repo name)."),
    all_versions: bool = typer.Option(False, "--all-versions",
                                      help="Pull every v<N> tag, oldest first."),
    base: Path | None = typer.Option(None, "--base", help="The base model directory (or "
                                     "registered base name): check "
                                     "compatibility and record its fingerprint."),
    tags: bool = typer.Option(False, "--tags", help="Apply the tags published with the "
                              "version (default: local tags are never touched)."),
    json_: bool = JSON,
) -> None:
    """Download, verify and register a version from the Hub (with scores and lineage).

    Every file is checked against the sha256 the Hub reports and against adapt.json before
    anything is registered. Plain PEFT repos without adapt.json work too.

    Example:

      adapt pull my-org/support-bot@v3
    """
    reg = open_registry()
    base_dir = reg.base_dir(base) if base else None  # a directory or a registered base's name
    with progress_bar("pull", None, enabled=_bars(json_)) as update:
        result = reg.pull(spec, name=name, all_versions=all_versions, base=base_dir,
                          on_progress=update, apply_tags=tags)
    if json_:
        print_json(result.to_dict())
        return
    for v in result.versions:
        what = "registered" if v.created else "already registered"
        extra = "" if v.has_manifest else " (no adapt.json: metadata from adapter_config.json)"
        # the revision and tag come from the command line and the server: shown, never obeyed
        console.print(printable(f"{result.repo}@{v.tag or v.revision} ({v.commit[:12]}) -> "
                                f"{v.ref}: {what}{extra}"), markup=False)


@remote_app.command("status")
def status(
    ref: str = typer.Argument(..., help="An adapter (any of its versions) in the registry."),
    repo: str | None = typer.Option(None, "--repo", help="ORG/NAME on the Hub (default as "
                                    "for push)."),
    json_: bool = JSON,
) -> None:
    """Show what the Hub holds for an adapter next to the registry's versions.

    Example:

      adapt remote status support-bot --repo my-org/support-bot
    """
    data = open_registry().remote_status(ref, repo=repo)
    if json_:
        print_json(data)
        return
    if not data["exists"]:
        console.print(f"{data['repo']} is not on the Hub yet: `adapt push {ref}` creates it")
    table = Table(title=f"{data['adapter']} <-> {data['repo']}")
    for col in ("local", "digest", "hub tag", "hub commit", "state"):
        table.add_column(col)
    for row in data["versions"]:
        table.add_row(*(Text(printable(cell)) for cell in (
            row["ref"] or "-", (row["digest"] or "-")[:19], row["hub_tag"] or "-",
            (row["hub_commit"] or "-")[:12], row["state"])))
    console.print(table)
