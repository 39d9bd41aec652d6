"""Real `adapt` processes against temporary registries, with a controlled environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Variables that change how adapt prints or where it looks; each test sets what it needs.
_CONTROLLED = ("ADAPT_HOME", "ADAPT_DB_URL", "ADAPT_DEBUG", "NO_COLOR", "FORCE_COLOR", "COLUMNS",
               "LINES", "TERM", "PYTHONPATH", "TTY_COMPATIBLE", "TTY_INTERACTIVE")

ADAPTER_A = "customer-support-reply-lora"  # long names make the 80-column checks bite
ADAPTER_B = "sql-lora"
BASE_NAME = "tiny-llama-base-for-contract-tests"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def adapt(*args: object, home: Path, env: dict[str, str] | None = None,
          timeout: float = 300) -> Run:
    """`adapt ARGS` in a new process (stdout and stderr are pipes, as in a script)."""
    base_env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED}
    base_env.update({"ADAPT_HOME": str(home), "COLUMNS": "80"})
    base_env.update(env or {})
    done = subprocess.run([sys.executable, "-m", "registry.cli", *map(str, args)],
                          capture_output=True, text=True, env=base_env, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def populated_template(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path,
                       tiny_lora: Path, tiny_lora_r8: Path) -> Path:
    """A registry with a named base, two LoRA adapters on it, tags and a score."""
    home = tmp_path_factory.mktemp("contract") / "home"
    steps = [
        ("base", "add", tiny_base, "--name", BASE_NAME),
        ("add", tiny_lora, "--name", ADAPTER_A, "--base", BASE_NAME, "--tag", "staging",
         "--tag", "release-candidate"),
        ("add", tiny_lora_r8, "--name", ADAPTER_B, "--base", tiny_base),
        ("score", ADAPTER_A, "--metric", "ppl", "--value", "7.25", "--dataset", "support-eval"),
    ]
    for step in steps:
        done = adapt(*step, home=home)
        assert done.code == 0, (step, done.err)
    return home


@pytest.fixture
def populated(populated_template: Path, tmp_path: Path) -> Path:
    """A private copy of the populated registry that a test may change."""
    home = tmp_path / "populated-home"
    shutil.copytree(populated_template, home)
    return home
