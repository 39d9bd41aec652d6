"""Hostile inputs against the real `adapt` command, each run as its own process.

Every case runs `python -m registry.cli ...` with ADAPT_HOME, TMPDIR, HOME and the working
directory inside the test's temp dir, so anything written outside them would show. A case
asserts its exit code, exactly one stderr line, no traceback, the inputs untouched and the
registry (database rows and blobs) unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float


@dataclass
class Sandbox:
    """One case's world: a registry copy, an empty cwd, TMPDIR and HOME."""

    root: Path
    home: Path

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def run(self, *args: str, timeout: float = 180, env: dict[str, str] | None = None,
            preexec: Callable[[], None] | None = None) -> Outcome:
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("ADAPT_DEBUG", "ADAPT_DB_URL") and not k.startswith("PYTEST")}
        full_env.update({
            "ADAPT_HOME": str(self.home), "TMPDIR": str(self.tmp), "HOME": str(self.root / "user"),
            "HF_HOME": str(self.root / "hf"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
            "PYTHONPATH": str(REPO), "COLUMNS": "200",
        })
        full_env.update(env or {})
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "registry.cli", *args], cwd=self.cwd, env=full_env,
            capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
        )
        return Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)


def registry_state(home: Path) -> tuple[str, list[tuple[str, int]]]:
    """The database's rows (as SQL) and the blob store's files: what 'unchanged' means."""
    db = home / "registry.db"
    dump = ""
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            dump = "\n".join(con.iterdump())
        finally:
            con.close()
    blobs = sorted((str(p.relative_to(home)), p.stat().st_size)
                   for p in (home / "blobs").rglob("*") if p.is_file())
    return dump, blobs


def tree_state(root: Path) -> list[tuple[str, str]]:
    """Every file under `root` with its sha256 (inputs must come out as they went in)."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out.append((str(p.relative_to(root)), "link:" + os.readlink(p)))
        elif p.is_file():
            out.append((str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest()))
        elif p.is_dir():
            out.append((str(p.relative_to(root)), "dir"))
    return out


@pytest.fixture(scope="session")
def seeded_home(tmp_path_factory: pytest.TempPathFactory, tiny_lora: Path) -> Path:
    """A registry holding one version (`good@1`, tagged prod), copied for each case."""
    from registry import Registry

    home = tmp_path_factory.mktemp("hostile-seed") / "home"
    reg = Registry(home=home)
    try:
        reg.add(tiny_lora, name="good", tags=["prod"])
    finally:
        reg.close()
    return home


@pytest.fixture
def sandbox(tmp_path: Path, seeded_home: Path) -> Sandbox:
    home = tmp_path / "home"
    shutil.copytree(seeded_home, home)
    for sub in ("cwd", "tmp", "user", "hf"):
        (tmp_path / sub).mkdir()
    return Sandbox(tmp_path, home)


def assert_refused(box: Sandbox, outcome: Outcome, code: int, inputs: Path,
                   before: tuple[object, object], *, max_chars: int = 400) -> None:
    """The shared verdict: exit `code`, one short stderr line, nothing written or registered."""
    registry_before, inputs_before = before
    assert outcome.code == code, (outcome.code, outcome.err[-2000:])
    lines = outcome.err.strip("\n").split("\n")
    assert len(lines) == 1, outcome.err[-2000:]
    assert lines[0].startswith("error: "), lines[0][:300]
    assert len(lines[0]) <= max_chars, lines[0][:300]
    assert "Traceback" not in outcome.err and "\x1b" not in outcome.err
    assert outcome.out == ""
    assert registry_state(box.home) == registry_before
    assert tree_state(inputs) == inputs_before
    assert list(box.cwd.iterdir()) == [] and list(box.tmp.iterdir()) == []
