"""The `adapt` command: one Typer app, one error boundary.

Command modules (one per group) only parse options, make one call into the library, and render
the result. They must import nothing heavy at module level: `adapt --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from registry.cli import base, compose, core, demo, hub, merge, quantize, tui, validate
from registry.cli.exit_codes import ExitCode, exit_code_for
from registry.cli.output import err_console

app = typer.Typer(
    name="adapt",
    help=(
        "adapt: a registry and model-ops toolkit for PEFT adapters (LoRA, DoRA, LoHa, LoKr, "
        "IA3, prompt tuning).\n\n"
        "Register adapters with their base-model fingerprint, compose and merge them exactly, "
        "requantize, validate with gates, and sync with the Hugging Face Hub.\n\n"
        "Examples:\n\n"
        "  adapt add ./my-lora --base ./llama --tag staging\n\n"
        "  adapt list --json\n\n"
        "  adapt merge my-lora:prod --base ./llama --out ./merged\n\n"
        "Configuration: ADAPT_HOME (registry directory), ADAPT_DB_URL (any SQLAlchemy URL), "
        "ADAPT_DEBUG=1 (tracebacks)."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (core, base, merge, compose, quantize, validate, hub, tui, demo):
    module.register(app)


def main() -> None:
    """Console entry point: run the app and turn errors into one line and an exit code."""
    from registry.errors import AdaptError

    try:
        app(standalone_mode=False)
    except AdaptError as error:
        if os.environ.get("ADAPT_DEBUG"):
            raise
        err_console.print(f"error: {error}", markup=False, soft_wrap=True)
        sys.exit(int(exit_code_for(error)))
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(int(ExitCode.FAILED))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as error:  # click usage errors and real bugs
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(int(ExitCode.USAGE))
        if os.environ.get("ADAPT_DEBUG"):
            raise
        err_console.print(
            f"internal error: {type(error).__name__}: {error} "
            "(rerun with ADAPT_DEBUG=1 for a traceback and report it)",
            markup=False, soft_wrap=True,
        )
        sys.exit(int(ExitCode.INTERNAL))
