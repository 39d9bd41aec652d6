"""The CLI's contract, as a script or a user on a fresh install meets it.

Every test runs `adapt` in a real process. CI also runs this module in `.venv-latest` (the
newest releases pyproject.toml allows), so a dependency that changes typer/click's behaviour
shows up as a red CI rather than as exit 70 on a user's machine.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest

from registry.cli.exit_codes import ExitCode
from tests.cli import run_adapt
from tests.contract.conftest import ADAPTER_A, ADAPTER_B, BASE_NAME, Run, adapt

ESCAPE = "\x1b"


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group registered on the app, found from the app itself."""
    import typer.main

    from registry.cli.app import app

    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [path]
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found += walk(sub, (*path, name))
        return found

    return walk(typer.main.get_command(app), ())


def leaf_options() -> dict[tuple[str, ...], set[str]]:
    """Option names of every command that is not a group."""
    import typer.main

    from registry.cli.app import app

    out: dict[tuple[str, ...], set[str]] = {}

    def walk(command: object, path: tuple[str, ...]) -> None:
        subs = getattr(command, "commands", None)
        if subs is not None:
            for name, sub in subs.items():
                walk(sub, (*path, name))
            return
        out[path] = {opt for p in command.params for opt in p.opts}  # type: ignore[attr-defined]

    walk(typer.main.get_command(app), ())
    return out


def assert_one_line_error(done: Run) -> None:
    assert len(done.err_lines) == 1, done.err
    assert "Traceback" not in done.err and "internal error" not in done.err, done.err
    assert done.out == "", done.out


# -- help, version, no arguments ---------------------------------------------------------------
def test_every_command_and_group_has_help_that_exits_0(
    capsys: pytest.CaptureFixture[str], adapt_home: Path
) -> None:
    # In-process through the real entry point (main()): one process start per command would
    # take minutes on a loaded 2-core CI machine.
    paths = command_paths()
    assert ("list",) in paths and ("base", "rm") in paths and ("env",) in paths
    for path in paths:
        done = run_adapt(capsys, *path, "--help")
        assert done.code == 0, (path, done.err)
        assert "Usage:" in done.out and done.err == "", path
    assert not adapt_home.exists(), "--help must not create a registry"


def test_no_arguments_prints_help_and_exits_0(tmp_path: Path) -> None:
    for args in ((), ("base",), ("remote",)):
        done = adapt(*args, home=tmp_path)
        assert done.code == 0, (args, done.err)
        assert "Usage:" in done.out and "Commands" in done.out, args
        assert "error" not in done.err.lower(), done.err


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_adapt_and_the_packages_that_decide_its_behaviour(
    tmp_path: Path, flag: str
) -> None:
    from registry import __version__

    done = adapt(flag, home=tmp_path / "home")
    assert done.code == 0, done.err
    line = done.out.strip()
    assert line.startswith(f"adapt {__version__} (")
    for package in ("torch", "peft", "transformers", "bitsandbytes", "huggingface_hub"):
        assert f"{package} {metadata.version(package)}" in line, package
    assert not (tmp_path / "home").exists()


def test_every_command_takes_quiet() -> None:
    missing = [path for path, opts in leaf_options().items() if not {"-q", "--quiet"} <= opts]
    assert missing == []


# -- bad invocations: documented exit code, one line, no traceback ----------------------------
USAGE = int(ExitCode.USAGE)
BAD_INVOCATIONS = [
    pytest.param(("list", "--bogus"), USAGE, id="unknown-option"),
    pytest.param(("frobnicate",), USAGE, id="unknown-command"),
    pytest.param(("base", "frobnicate"), USAGE, id="unknown-subcommand"),
    pytest.param(("show",), USAGE, id="missing-argument"),
    pytest.param(("merge", "x", "--base", "b", "--out", "o", "--dtype", "fp12"), USAGE,
                 id="bad-enum-value"),
    pytest.param(("list", "--limit", "many"), USAGE, id="bad-number"),
    pytest.param(("score", "x", "--metric", "ppl", "--value", "nan"), USAGE, id="nan-score"),
    pytest.param(("score", "x", "--metric", "ppl", "--value", "inf"), USAGE, id="inf-score"),
    pytest.param(("show", "Not A Ref!"), USAGE, id="malformed-reference"),
    pytest.param(("show", "no-such-adapter"), int(ExitCode.NOT_FOUND), id="unknown-adapter"),
    pytest.param(("base", "show", "no-such-base"), int(ExitCode.NOT_FOUND), id="unknown-base"),
]


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An existing, empty registry (so no "created a new registry" note)."""
    home = tmp_path_factory.mktemp("empty") / "home"
    assert adapt("list", "-q", home=home).code == 0
    return home


@pytest.mark.parametrize(("args", "code"), BAD_INVOCATIONS)
def test_bad_invocation_exits_with_its_code_in_one_line(
    empty_home: Path, args: tuple[str, ...], code: int
) -> None:
    done = adapt(*args, home=empty_home)
    assert done.code == code, (done.code, done.err)
    assert_one_line_error(done)
    assert done.err.startswith("error: ")
    if code == USAGE and args[0] not in ("score", "show"):  # click's usage errors
        assert "--help" in done.err  # the usage hint


def test_unreachable_database_exits_9_without_showing_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://adapt:hunter2@127.0.0.1:9/adapt"  # port 9: nothing listens
    done = adapt("list", home=tmp_path / "home", env={"ADAPT_DB_URL": url})
    assert done.code == int(ExitCode.ENVIRONMENT), done.err
    assert_one_line_error(done)
    assert "hunter2" not in done.err and "adapt:***@127.0.0.1" in done.err


def test_missing_psycopg_exits_9_naming_the_extra(tmp_path: Path) -> None:
    # A stand-in package that fails to import the way an absent psycopg does.
    shim = tmp_path / "no-psycopg" / "psycopg"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    done = adapt("list", home=tmp_path / "home",
                 env={"ADAPT_DB_URL": "postgresql+psycopg://adapt@127.0.0.1:9/adapt",
                      "PYTHONPATH": str(shim.parent)})
    assert done.code == int(ExitCode.ENVIRONMENT), done.err
    assert_one_line_error(done)
    assert 'pip install "adapt[postgres]"' in done.err


def test_unwritable_adapt_home_exits_9(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = adapt("list", home=blocker / "registry")
    assert done.code == int(ExitCode.ENVIRONMENT), done.err
    assert_one_line_error(done)
    assert "ADAPT_HOME" in done.err


def test_adapt_debug_shows_the_traceback_of_an_adapt_error(tmp_path: Path) -> None:
    done = adapt("show", "no-such-adapter", home=tmp_path / "home", env={"ADAPT_DEBUG": "1"})
    assert done.code != 0 and "Traceback" in done.err


# -- --json everywhere, stdout holds only JSON ---------------------------------------------------
# Commands whose --json needs a Hub server or minutes of compute: their own test modules parse it
# (tests/hub, tests/merge, tests/quantize, tests/compose, tests/validate, tests/demo, ...).
JSON_ELSEWHERE = {("push",), ("pull",), ("remote", "status"), ("merge",), ("requantize",),
                  ("compose",), ("validate",), ("demo",), ("extract",), ("convert",),
                  ("init",), ("cache", "ls"), ("cache", "prune"), ("blobs", "migrate")}  # team/
# Commands whose exit status is a verdict (1: a rule or gate failed) even when all went well.
VERDICTS = {("check",), ("fsck",)}


def json_invocations(home: Path, tiny_base: Path, tiny_lora: Path) -> dict[tuple[str, ...],
                                                                          tuple[object, ...]]:
    out = home.parent / "exported"
    return {
        ("list",): ("list", "--all"),
        ("ls",): ("ls",),
        ("show",): ("show", ADAPTER_A),
        ("add",): ("add", tiny_lora, "--name", "another-lora"),
        ("tag",): ("tag", f"{ADAPTER_A}@1", "prod"),
        ("untag",): ("untag", ADAPTER_A, "staging"),
        ("score",): ("score", ADAPTER_B, "--metric", "accuracy", "--value", "0.5"),
        ("search",): ("search", "metric.accuracy > 0", "--order-by", "metric.accuracy desc"),
        ("best",): ("best", "accuracy"),  # after score: accuracy is recorded
        ("export",): ("export", ADAPTER_A, out),
        ("diff",): ("diff", ADAPTER_A, ADAPTER_B),
        ("runs",): ("runs", ADAPTER_A),
        ("gc",): ("gc", "--dry-run"),
        ("fsck",): ("fsck",),
        ("check",): ("check", ADAPTER_A, "--target", "peft"),
        ("env",): ("env",),
        ("base", "list"): ("base", "list"),
        ("base", "show"): ("base", "show", BASE_NAME),
        ("base", "add"): ("base", "add", tiny_base),
        ("base", "fingerprint"): ("base", "fingerprint", tiny_base),
        ("rm",): ("rm", f"{ADAPTER_B}@1", "--yes"),  # order matters: after diff and score
        ("base", "rm"): ("base", "rm", BASE_NAME, "--force"),
    }


def test_every_json_option_prints_only_json(populated: Path, tiny_base: Path,
                                            tiny_lora: Path) -> None:
    with_json = {path for path, opts in leaf_options().items() if "--json" in opts}
    invocations = json_invocations(populated, tiny_base, tiny_lora)
    unexercised = with_json - set(invocations) - JSON_ELSEWHERE
    assert unexercised == set(), "add these commands' --json to json_invocations"
    for path, args in invocations.items():
        if path not in with_json:
            pytest.fail(f"adapt {' '.join(path)} has no --json")
        done = adapt(*args, "--json", home=populated)
        assert done.code == 0 or (path in VERDICTS and done.code == 1), (path, done.err)
        assert ESCAPE not in done.out
        json.loads(done.out)  # stdout is one JSON document and nothing else


def test_commands_that_report_a_result_have_json() -> None:
    without = {path for path, opts in leaf_options().items() if "--json" not in opts}
    # Interactive or long-running front ends print no result to parse.
    assert without <= {("tui",), ("browse",)}, without


def test_json_keeps_full_digests_that_tables_shorten(populated: Path) -> None:
    full = json.loads(adapt("base", "list", "--json", home=populated).out)[0]["fingerprint"]
    table = adapt("base", "list", home=populated).out
    short = full[:full.index(":") + 9]  # algorithm and 8 hex digits
    assert full not in table and short in table


# -- quiet, colour, 80 columns ----------------------------------------------------------------
def test_quiet_prints_nothing_but_errors(populated: Path) -> None:
    done = adapt("list", "-q", home=populated)
    assert (done.code, done.out, done.err) == (0, "", "")
    done = adapt("tag", ADAPTER_B, "prod", "--quiet", home=populated)
    assert (done.code, done.out, done.err) == (0, "", "")
    assert f"{ADAPTER_B}:prod" in adapt("tag", ADAPTER_B, "prod", home=populated).out
    done = adapt("show", "no-such-adapter", "-q", home=populated)
    assert done.code == int(ExitCode.NOT_FOUND) and done.err.startswith("error: ")
    done = adapt("list", "-q", "--json", home=populated)
    assert len(json.loads(done.out)) == 2


def test_errors_are_red_on_a_terminal_and_plain_with_no_color_or_a_pipe(tmp_path: Path) -> None:
    args = ("show", "no-such-adapter")
    on_terminal = adapt(*args, home=tmp_path, env={"FORCE_COLOR": "1"})  # rich: act as a TTY
    assert "\x1b[1;31merror:" in on_terminal.err  # the oracle: colour does reach a terminal
    for env in ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, {}):
        done = adapt(*args, home=tmp_path, env=env)
        assert ESCAPE not in done.err and done.err.startswith("error: "), env


def test_no_color_output_has_no_escape_codes(populated: Path) -> None:
    env = {"FORCE_COLOR": "1", "NO_COLOR": "1"}
    for args in (("list",), ("show", ADAPTER_A), ("base", "list"), ("gc", "--dry-run"),
                 ("show", "missing")):
        done = adapt(*args, home=populated, env=env)
        assert ESCAPE not in done.out + done.err, args


@pytest.mark.parametrize("args", [
    ("list",), ("list", "--all"), ("show", ADAPTER_A), ("diff", ADAPTER_A, ADAPTER_B),
    ("base", "list"), ("base", "show", BASE_NAME),
    ("runs", ADAPTER_A), ("env",), ("search", "rank >= 4"),
], ids=lambda a: "-".join(a).replace(" ", ""))
def test_output_fits_80_columns(populated: Path, args: tuple[str, ...]) -> None:
    done = adapt(*args, home=populated)
    assert done.code == 0, done.err
    long = [line for line in (done.out + done.err).splitlines() if len(line) > 80]
    assert long == []


def test_list_at_80_columns_keeps_refs_whole_and_rows_distinct(populated: Path) -> None:
    done = adapt("list", home=populated)
    lines = done.out.splitlines()
    assert lines[0].split()[:4] == ["REF", "METHOD", "RANK", "BASE"]
    refs = [line.split()[0] for line in lines[1:]]
    assert sorted(refs) == sorted([f"{ADAPTER_A}@1", f"{ADAPTER_B}@1"])


def test_diff_drops_the_shared_prefix_not_the_distinguishing_tail(populated: Path) -> None:
    full = json.loads(adapt("diff", ADAPTER_A, ADAPTER_B, "--json", home=populated).out)
    modules = list(full["modules"])
    table = adapt("diff", ADAPTER_A, ADAPTER_B, home=populated).out
    rows = [line.split()[0] for line in table.splitlines()
            if line and line.split()[0] not in ("modules", "module")
            and re.match(r"^\S+\s+[+-]\d", line)]
    assert len(rows) == len(modules) == len(set(rows))
    for module in modules:
        assert any(module.endswith(row) for row in rows), module


# -- which registry, and what is in it -----------------------------------------------------------
def test_first_command_says_where_it_created_the_registry(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    first = adapt("list", home=home)
    assert first.code == 0
    assert f"created a new registry at {home}" in first.err
    second = adapt("list", home=home)
    assert "created" not in second.err
    assert "no adapters registered yet" in second.err


def test_list_with_filters_that_match_nothing_says_so(populated: Path) -> None:
    done = adapt("list", "--method", "loha", home=populated)
    assert done.code == 0 and done.out == ""
    assert "no adapters match" in done.err and "registered yet" not in done.err


def test_env_reports_the_registry_counts_device_and_versions(populated: Path) -> None:
    done = adapt("env", "--json", home=populated)
    assert done.code == 0, done.err
    data = json.loads(done.out)
    assert data["registry"]["home"] == str(populated)
    assert data["registry"]["counts"]["versions"] == 2
    assert data["registry"]["counts"]["base_models"] == 1
    assert data["registry"]["schema_version"]
    assert data["packages"]["torch"] == metadata.version("torch")
    assert isinstance(data["device"]["cuda"], bool)


def test_env_redacts_the_database_password_and_survives_an_unreachable_database(
    tmp_path: Path,
) -> None:
    url = "postgresql+psycopg://adapt:hunter2@127.0.0.1:9/adapt"
    done = adapt("env", "--json", home=tmp_path, env={"ADAPT_DB_URL": url})
    assert done.code == 0, done.err
    assert "hunter2" not in done.out + done.err
    registry = json.loads(done.out)["registry"]
    assert registry["database"] == "postgresql+psycopg://adapt:***@127.0.0.1:9/adapt"
    assert "cannot open the registry" in registry["error"]


def test_base_rm_is_refused_while_versions_use_it(populated: Path) -> None:
    refused = adapt("base", "rm", BASE_NAME, home=populated)
    assert refused.code == int(ExitCode.CONFLICT)
    assert_one_line_error(refused)
    assert f"{ADAPTER_A}@1" in refused.err and "--force" in refused.err
    assert adapt("base", "show", BASE_NAME, home=populated).code == 0
    removed = adapt("base", "rm", BASE_NAME, "--force", home=populated)
    assert removed.code == 0, removed.err
    assert adapt("base", "show", BASE_NAME, home=populated).code == int(ExitCode.NOT_FOUND)


# -- third-party noise ---------------------------------------------------------------------------
def test_bitsandbytes_kernel_notice_is_hidden_unless_adapt_debug(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("from registry.cli.output import quiet_third_party; quiet_third_party(); "
            "import bitsandbytes")
    notice = "Failed to load CPU gemm_4bit_forward"

    def stderr_of(debug: bool) -> str:
        env = {k: v for k, v in __import__("os").environ.items() if k != "ADAPT_DEBUG"}
        if debug:
            env["ADAPT_DEBUG"] = "1"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=300).stderr

    debug_err = stderr_of(True)
    if notice not in debug_err:
        pytest.skip("this machine's bitsandbytes prints no kernel notice")
    assert notice not in stderr_of(False)


# -- table fitting (the helpers every table goes through) ---------------------------------------
def test_fit_table_shortens_then_leaves_out_but_never_cuts_the_key_column() -> None:
    from registry.cli.output import fit_table

    rows = [["an-adapter-with-a-really-long-name@12", "LORA", "a-very-long-base-model-name-v2",
             "production,staging", "2026-12-02 19:40"],
            ["short@1", "DORA", "other-base", "-", "2026-12-01 08:00"]]
    headers = ["REF", "METHOD", "BASE", "TAGS", "CREATED"]
    wide = fit_table(headers, rows, shrink=(2, 3), optional=(4,), width=200)
    assert "a-very-long-base-model-name-v2" in wide and "CREATED" in wide
    for width in (80, 70, 66):  # 65: the key column and the shortest others
        text = fit_table(headers, rows, shrink=(2, 3), optional=(4,), width=width)
        assert max(map(len, text.splitlines())) <= width, (width, text)
        assert "an-adapter-with-a-really-long-name@12" in text and "short@1" in text
    narrow = fit_table(headers, rows, shrink=(2, 3), optional=(4,), width=66)
    assert "CREATED" not in narrow and "…" in narrow
    base_cell = narrow.splitlines()[1].split()[2]
    assert base_cell.startswith("a-v") and base_cell.endswith("-v2")  # start and end kept


def test_common_prefix_is_dropped_and_the_distinguishing_tail_kept() -> None:
    from registry.cli.output import shorten_common_prefix

    names = ["base_model.model.model.layers.0.self_attn.q_proj",
             "base_model.model.model.layers.0.self_attn.v_proj",
             "base_model.model.model.layers.11.mlp.down_proj"]
    prefix, short = shorten_common_prefix(names)
    assert prefix == "base_model.model.model.layers."
    assert short == ["0.self_attn.q_proj", "0.self_attn.v_proj", "11.mlp.down_proj"]
    assert shorten_common_prefix(["a.q_proj", "a.q_proj"]) == ("a.", ["q_proj", "q_proj"])
    assert shorten_common_prefix(["only.one"]) == ("", ["only.one"])


# -- reproducible installs ----------------------------------------------------------------------
def test_installs_use_the_tested_constraints_and_ci_guards_against_drift() -> None:
    root = Path(__file__).resolve().parents[2]
    pins = {name.lower().replace("_", "-"): version for name, version in (
        line.split("==", 1) for line in (root / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#"))}
    assert pins["torch"] == "2.13.0"  # the public release, not this machine's +cpu build
    # Every direct dependency is pinned (versions are not compared: this module also runs on
    # the newest releases in CI's drift step).
    for package in ("typer", "click", "rich", "transformers", "peft", "bitsandbytes",
                    "sqlalchemy", "sqlmodel", "textual", "huggingface-hub", "safetensors"):
        assert package in pins, package
    assert "adapt" not in pins
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)[:2]
    for block in blocks:
        assert block.count("-c constraints.txt") == 2, block
    assert "export ADAPT_HOME=" in blocks[0]
    ci = (root / ".ci" / "run").read_text()
    assert ".venv-latest/bin/python -m pytest tests/contract" in ci
    assert "DEPENDENCY DRIFT" in ci
