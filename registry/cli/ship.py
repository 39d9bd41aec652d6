"""`adapt check`: a serving target's rules applied to a version, as a pre-deploy gate."""

from __future__ import annotations

import typer

from registry.cli.output import console, open_registry, print_json

_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


def register(app: typer.Typer) -> None:
    app.command("check")(check)


def check(
    ref: str = typer.Argument(..., help="The adapter version to check (NAME, NAME@N, NAME:TAG, "
                              "sha256:PREFIX)."),
    target: str = typer.Option(..., "--target", "-t", help="vllm, lorax, tgi, llama.cpp, "
                               "ollama or peft."),
    base: str | None = typer.Option(None, "--base", "-b", help="Base model directory or "
                                    "registered name (default: the version's registered base); "
                                    "needed for prefix and module-name rules."),
    target_version: str | None = typer.Option(None, "--target-version", help="Which rules "
                                              "table (e.g. 0.4 for vLLM 0.4); default: the "
                                              "table marked default."),
    json_: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of lines."),
) -> None:
    """Check a version against a serving target's adapter rules before it ships.

    Each rule prints one line: pass, warn or fail, what was found, the fix, and the rule's
    source. Rules are data (registry/data/targets/<target>-<version>.json).

    Exit codes: 0 no rule failed (warnings allowed); 1 a rule failed; 3 unknown version or
    rules table; 2 unknown target.

    Examples:

      adapt check support-lora:prod --target vllm --base smollm2

      adapt check support-lora@3 --target vllm --target-version 0.4 --json

      adapt check support-lora --target llama.cpp --base ./models/llama
    """
    from registry.errors import GateFailed

    report = open_registry().check_target(ref, target, base=base, target_version=target_version)
    if json_:
        print_json(report.to_dict())
    else:
        base_note = f" with base {report.base}" if report.base else " (no base: pass --base)"
        console.print(f"{report.ref} on {report.target} {report.target_version}{base_note}",
                      markup=False, soft_wrap=True)
        for r in report.results:
            line = f"  [{_STYLE[r.status]}]{r.status:<4}[/] {r.rule}: "
            console.print(line, end="")
            console.print(r.detail, markup=False, soft_wrap=True)
            if r.status != "pass" and r.fix:
                console.print(f"         fix: {r.fix}", markup=False, soft_wrap=True)
            if r.status != "pass":
                console.print(f"         source: {r.source}", markup=False, soft_wrap=True,
                              style="dim")
        n_fail, n_warn = len(report.failed), len(report.warned)
        console.print(f"{n_fail} failed, {n_warn} warning(s), "
                      f"{len(report.results) - n_fail - n_warn} passed")
    if not report.ok:
        raise GateFailed([f"{report.target} rule {r.rule}: {r.detail}" for r in report.failed])
