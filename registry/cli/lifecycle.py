"""Finding versions by what they scored: `adapt search` and `adapt best`."""

from __future__ import annotations

import sys

import typer

from registry.cli.output import console, open_registry, plain_table, print_json

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("best")(best)


def search(
    filter_: str = typer.Argument("", metavar="FILTER", help="e.g. \"metric.accuracy > 0.8 and "
                                  "method = 'LORA' and tag = 'staging'\" (empty: every version)."),
    order_by: str | None = typer.Option(None, "--order-by", help="FIELD [asc|desc], e.g. "
                                        "'metric.accuracy desc' (default: name)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Only scores on this dataset."),
    base: str | None = typer.Option(None, "--base", help="Only versions for this base (name "
                                    "or fingerprint), and scores measured with it."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many rows."),
    json_: bool = JSON,
) -> None:
    """Find versions with a filter over fields, tags and metrics.

    Fields: name, version, ref, method, rank, alpha, base, base_model, tag, dtype, task_type,
    params, size_bytes, created, metric.NAME. Operators: = != > >= < <= like; join with and /
    or / not and parentheses; strings in quotes. A version's metric value is the latest one
    recorded (on --dataset / --base when given). Nothing is evaluated as code.

    Examples:

      adapt search "metric.accuracy > 0.8 and tag = 'staging'" --order-by "metric.accuracy desc"

      adapt search "method = 'LORA' and rank >= 16" --json
    """
    hits = open_registry().search(filter_, order_by=order_by, dataset=dataset, base=base,
                                  limit=limit)
    if json_:
        print_json([h.to_dict() for h in hits])
        return
    if not hits:
        console.print("no versions match", markup=False)
        return
    metrics = sorted({m for h in hits for m in h.metrics})[:3]
    rows = [[h.ref, h.method, ",".join(h.tags) or "-",
             *[f"{h.metrics[m]:.4g}" if m in h.metrics else "-" for m in metrics]]
            for h in hits]
    sys.stdout.write(plain_table(["REF", "METHOD", "TAGS", *[m.upper() for m in metrics]], rows)
                     + "\n")


def best(
    metric: str = typer.Argument(..., help="The metric, e.g. accuracy or validate.loss."),
    dataset: str | None = typer.Option(None, "--dataset", help="Only scores on this dataset."),
    base: str | None = typer.Option(None, "--base", help="Only versions for this base."),
    json_: bool = JSON,
) -> None:
    """Print the reference of the version with the best METRIC (for scripts).

    Higher is better for accuracy, f1, bleu, rouge...; lower for loss, ppl, wer, latency...;
    otherwise as recorded with `adapt score --higher-is-better/--lower-is-better`. Ties go to
    the newest version.

    Example:

      adapt export $(adapt best accuracy --dataset support-eval) ./deploy
    """
    hit = open_registry().best(metric, dataset=dataset, base=base)
    if json_:
        print_json({**hit.to_dict(), "metric": metric, "value": hit.metrics[metric]})
        return
    sys.stdout.write(hit.ref + "\n")
