"""Run the `adapt` command in-process through its real entry point (error mapping included)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_adapt(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """`adapt ARGS...` as the console script runs it; returns exit code, stdout, stderr."""
    from registry.cli.app import main

    capsys.readouterr()
    old = sys.argv
    sys.argv = ["adapt", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = int(done.code or 0) if not isinstance(done.code, str) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
