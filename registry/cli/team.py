"""Team setup: `adapt init`, `adapt cache ls/prune` and `adapt blobs migrate`."""

from __future__ import annotations

import sys

import typer

from registry.cli.output import console, human_bytes, plain_table, print_json

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")

cache_app = typer.Typer(help="The local cache of a remote blob store (under ADAPT_HOME).",
                        no_args_is_help=True)
blobs_app = typer.Typer(help="Where the registry's blobs live.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("init")(init)
    app.add_typer(cache_app, name="cache")
    app.add_typer(blobs_app, name="blobs")
    cache_app.command("ls")(cache_ls)
    cache_app.command("prune")(cache_prune)
    blobs_app.command("migrate")(migrate)


def init(
    db: str | None = typer.Option(None, "--db", help="Database URL, e.g. "
                                  "postgresql+psycopg://adapt@db.example/adapt (no password: "
                                  "use PGPASSWORD or ~/.pgpass)."),
    blobs: str | None = typer.Option(None, "--blobs", help="Blob store, e.g. s3://bucket/adapt "
                                     "(endpoint and credentials: the usual AWS variables)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Open the database and the "
                               "bucket first (creating the schema and the bucket)."),
    json_: bool = JSON,
) -> None:
    """Write ADAPT_HOME/config.toml so every command uses this database and blob store.

    ADAPT_DB_URL and ADAPT_BLOB_URL still win over the file. Credentials are never written.

    Examples:

      adapt init --db postgresql+psycopg://adapt@db.internal/adapt --blobs s3://ml-team/adapt
    """
    from registry.blobs.setup import init_team
    from registry.errors import UsageError

    if db is None and blobs is None:
        raise UsageError("nothing to write", "pass --db URL and/or --blobs URL")
    result = init_team(None, db_url=db, blob_url=blobs, check=check)
    if json_:
        print_json(result.to_dict())
        return
    console.print(f"wrote {result.config}\ndatabase   {result.database}\n"
                  f"blob store {result.blob_store}", markup=False)


def _cache():  # type: ignore[no-untyped-def]
    from registry.blobs.cache import BlobCache
    from registry.config import load_settings

    settings = load_settings()
    return settings, BlobCache(settings.cache_dir / "blobs", settings.cache_max_bytes)


def cache_ls(json_: bool = JSON) -> None:
    """List the blobs cached from a remote blob store, least recently used first."""
    settings, cache = _cache()
    entries = cache.entries()
    total = sum(e.size for e in entries)
    if json_:
        print_json({"root": str(cache.root), "max_bytes": cache.max_bytes, "total_bytes": total,
                    "blobs": [e.to_dict() for e in entries]})
        return
    from datetime import datetime

    rows = [[e.sha256[:16], human_bytes(e.size),
             datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")] for e in entries]
    if rows:
        sys.stdout.write(plain_table(["BLOB", "SIZE", "LAST USED"], rows) + "\n")
    console.print(f"{len(entries)} blobs, {human_bytes(total)} of "
                  f"{human_bytes(cache.max_bytes)} in {cache.root}", markup=False)


def cache_prune(
    max_size: str | None = typer.Option(None, "--max-size", help="Keep at most this much, "
                                        "e.g. 5GB (default: the configured limit)."),
    all_: bool = typer.Option(False, "--all", help="Empty the cache."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would go."),
    json_: bool = JSON,
) -> None:
    """Remove the least recently used cached blobs (they are fetched again when needed)."""
    from registry.config import _byte_count

    _, cache = _cache()
    limit = 0 if all_ else (_byte_count(max_size) if max_size is not None else None)
    report = cache.prune(limit, dry_run=dry_run)
    if json_:
        print_json({**report.to_dict(), "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(report.removed)} blobs ({human_bytes(report.freed_bytes)}); "
                  f"{human_bytes(report.kept_bytes)} kept", markup=False)


def migrate(
    to: str = typer.Option(..., "--to", help="The new blob store, e.g. s3://bucket/adapt."),
    switch: bool = typer.Option(True, "--switch/--no-switch", help="Make it the registry's "
                                "blob store in ADAPT_HOME/config.toml once every blob is there."),
    json_: bool = JSON,
) -> None:
    """Copy every blob to another store (verified, resumable: run it again after a failure),
    check that each version's files are there, then switch the config to it.

    Example:

      adapt blobs migrate --to s3://ml-team/adapt
    """
    from registry.blobs.setup import migrate_blobs
    from registry.errors import IntegrityError

    report = migrate_blobs(to, switch=switch)
    if json_:
        print_json(report.to_dict())
    else:
        console.print(f"copied {report.copied} blobs ({human_bytes(report.bytes_copied)}), "
                      f"{report.skipped} already there: {report.source} -> {report.target}"
                      + ("; config switched" if report.switched else ""), markup=False)
    if report.missing_rows:
        raise IntegrityError(f"{len(report.missing_rows)} files in {report.target}",
                             "their blobs", f"missing (e.g. {report.missing_rows[0]})")
