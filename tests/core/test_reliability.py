"""Concurrency, crashes, and start-up cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path

import pytest

from tests.factories import make_lora

HEAVY = ("torch", "peft", "transformers", "bitsandbytes", "textual")


def _adapt(args: list[str], home: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *map(str, args)],
        env={**os.environ, "ADAPT_HOME": str(home), **(env or {})},
        capture_output=True, text=True, timeout=300,
    )


def _add_in_process(args: tuple[str, str, str]) -> tuple[int, str]:
    path, name, home = args
    p = _adapt(["add", path, "--name", name], Path(home))
    return p.returncode, p.stderr


@pytest.fixture(scope="module")
def eight_loras(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("eight")
    return [make_lora(tiny_base, root / f"l{i}", r=2, seed=100 + i, targets=["q_proj"])
            for i in range(8)]


def test_eight_concurrent_adds_give_eight_versions(eight_loras: list[Path],
                                                   adapt_home: Path) -> None:
    jobs = [(str(p), f"lora-{i}", str(adapt_home)) for i, p in enumerate(eight_loras)]
    # an existing registry: the first command in a new one says where it created it
    from registry import Registry

    Registry(home=adapt_home).close()
    with get_context("spawn").Pool(8) as pool:
        results = pool.map(_add_in_process, jobs)
    assert [code for code, _ in results] == [0] * 8, [err for _, err in results]
    assert all(err.strip() == "" for _, err in results)
    listed = json.loads(_adapt(["list", "--json"], adapt_home).stdout)
    assert sorted(x["ref"] for x in listed) == sorted(f"lora-{i}@1" for i in range(8))
    assert len({x["digest"] for x in listed}) == 8


@pytest.mark.parametrize("point", ["before_blobs", "after_blobs", "before_commit"])
def test_crash_during_add_leaves_fsck_clean(point: str, tiny_lora: Path, adapt_home: Path) -> None:
    crashed = _adapt(["add", tiny_lora, "-n", "c"], adapt_home, {"ADAPT_CRASH_AT": point})
    assert crashed.returncode == 137
    fsck = json.loads(_adapt(["fsck", "--json"], adapt_home).stdout)
    assert fsck["ok"] and fsck["problems"] == []
    assert json.loads(_adapt(["list", "--json"], adapt_home).stdout) == []
    orphans = len(fsck["orphan_blobs"])
    assert orphans == (0 if point == "before_blobs" else 2)
    gc = json.loads(_adapt(["gc", "--json"], adapt_home).stdout)
    assert len(gc["removed_blobs"]) == orphans
    # and the registry still works: the same add now succeeds
    assert _adapt(["add", tiny_lora, "-n", "c"], adapt_home).returncode == 0
    assert json.loads(_adapt(["fsck", "--json"], adapt_home).stdout)["orphan_blobs"] == []


def test_kill_during_blob_write_leaves_only_a_temp_file(tiny_lora: Path, adapt_home: Path) -> None:
    # a SIGKILL in the middle of put_file: only a .tmp- file may remain, never a named blob
    code = (
        "import os, registry.store as st\n"
        "orig = st.os.replace\n"
        "def boom(*a, **k):\n"
        "    os._exit(137)\n"
        "st.os.replace = boom\n"
        "from registry.cli.app import main\n"
        "import sys; sys.argv=['adapt','add',sys.argv[1]]; main()\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(tiny_lora)],
                       env={**os.environ, "ADAPT_HOME": str(adapt_home)}, capture_output=True)
    assert p.returncode == 137
    fsck = json.loads(_adapt(["fsck", "--json"], adapt_home).stdout)
    assert fsck["ok"] and fsck["checked_blobs"] == 0


def test_import_registry_and_help_load_no_heavy_packages(tmp_path: Path) -> None:
    code = (
        "import sys, registry, registry.cli.app\n"
        "from registry.cli.app import app\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == ""
    code = (
        "import sys\nfrom registry.cli.app import main\nsys.argv=['adapt','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules), "
        "file=sys.stderr)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "ADAPT_HOME": str(tmp_path)})
    assert "Usage" in p.stdout
    assert p.stderr.strip().endswith("LOADED:"), p.stderr
    # every subcommand's help too
    for group in ("base", "remote"):
        q = subprocess.run([sys.executable, "-m", "registry.cli", group, "--help"],
                           capture_output=True, text=True)
        assert q.returncode == 0, q.stderr
