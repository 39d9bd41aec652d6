"""The `adapt` command: one Typer app, one error boundary.

Command modules (one per group) only parse options, make one call into the library, and render
the result. They must import nothing heavy at module level: `adapt --help` stays fast.

Exit codes are API (registry/cli/exit_codes.py, the README's table). Usage errors are found
through typer's public `typer.BadParameter` (its class hierarchy holds click's `UsageError` and
`ClickException`, whichever copy of click typer ships or depends on), never by importing `click`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from registry.cli import (
    base,
    compose,
    core,
    demo,
    env,
    hub,
    lifecycle,
    merge,
    quantize,
    ship,
    team,
    tui,
    validate,
)
from registry.cli import extract as extract_commands
from registry.cli.exit_codes import ExitCode, exit_code_for
from registry.cli.output import print_error, quiet_third_party, with_output_modes
from registry.errors import storage_error
from registry.terminal import safe_line

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
        "  adapt merge my-lora:prod --base llama --out ./merged\n\n"
        "Configuration: ADAPT_HOME (registry directory), ADAPT_DB_URL (any SQLAlchemy URL), "
        "ADAPT_DEBUG=1 (tracebacks and third-party warnings), NO_COLOR=1. "
        "`adapt env` shows what is in use."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from registry.cli.env import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True,
                                 callback=_print_version,
                                 help="Print adapt's version and its key packages' and exit."),
) -> None:
    """adapt: a registry and model-ops toolkit for PEFT adapters."""


for module in (core, base, merge, compose, quantize, validate, hub, tui, demo, env, ship,
               extract_commands, lifecycle, team):
    module.register(app)


def _add_output_modes(typer_app: typer.Typer) -> None:
    """Give every command, in every group, `-q/--quiet` (output modes live in output.py)."""
    for info in typer_app.registered_commands:
        if info.callback is not None:
            info.callback = with_output_modes(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _add_output_modes(group.typer_instance)


_add_output_modes(app)


def click_exception_types() -> tuple[type[Exception], type[Exception], type[Exception] | None]:
    """(ClickException, UsageError, NoArgsIsHelpError or None) of the click typer runs on.

    typer >= 0.29 vendors click as `typer._click`; older typer uses the `click` package. Both
    export `typer.BadParameter`, whose bases are that click's UsageError and ClickException.
    """
    by_name = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    click_exception, usage_error = by_name["ClickException"], by_name["UsageError"]
    module = sys.modules[usage_error.__module__]
    return click_exception, usage_error, getattr(module, "NoArgsIsHelpError", None)


def _usage_line(error: Any) -> str:
    """A click usage error as one line: the message, then the command's help hint."""
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    message = " ".join(str(message).split())
    ctx = getattr(error, "ctx", None)
    path = getattr(ctx, "command_path", None) or "adapt"
    return f"{message} (see `{path} --help`)"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and turn errors into one line and an exit code."""
    from registry.errors import AdaptError

    quiet_third_party()
    click_exception, usage_error, no_args_is_help = click_exception_types()
    debug = bool(os.environ.get("ADAPT_DEBUG"))
    try:
        code = app(args=argv, prog_name="adapt", standalone_mode=False)
    except AdaptError as error:
        if debug:
            raise
        print_error(safe_line(str(error)))  # remote text: no escapes, no echoed token
        sys.exit(int(exit_code_for(error)))
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        print_error("aborted", prefix="error")
        sys.exit(int(ExitCode.FAILED))
    except KeyboardInterrupt:
        print_error("interrupted", prefix="error")
        sys.exit(130)
    except BrokenPipeError:
        # `adapt list | head -1`: the reader stopped reading; that is its choice, not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(int(ExitCode.OK))
    except Exception as error:
        storage = storage_error(error)
        if storage is not None and not debug:  # ENOSPC / EROFS anywhere a command writes
            print_error(safe_line(str(storage)))
            sys.exit(int(exit_code_for(storage)))
        if no_args_is_help is not None and isinstance(error, no_args_is_help):
            # `adapt` or `adapt base` alone: the help is the answer, not an error.
            typer.echo(error.format_message())  # type: ignore[attr-defined]
            sys.exit(int(ExitCode.OK))
        if isinstance(error, usage_error):
            print_error(safe_line(_usage_line(error)))
            sys.exit(int(ExitCode.USAGE))
        if isinstance(error, click_exception):  # e.g. FileError: a path the user gave
            print_error(safe_line(" ".join(error.format_message().split())))  # type: ignore[attr-defined]
            sys.exit(int(ExitCode.USAGE))
        if debug:
            raise
        print_error(
            safe_line(f"{type(error).__name__}: {error} "
                      "(a bug in adapt: rerun with ADAPT_DEBUG=1 for a traceback and report it)"),
            prefix="internal error",
        )
        sys.exit(int(ExitCode.INTERNAL))
    if isinstance(code, int) and code:  # click's ctx.exit(N) in non-standalone mode
        sys.exit(code)
