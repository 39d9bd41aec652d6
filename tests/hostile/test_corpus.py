"""The hostile-input corpus (issue 20, items 5, 6, 8, 9 and 11): one case per finding.

Each case builds its input in the test's temp dir from the tiny LoRA and tiny Llama, runs the
real `adapt` as a process, and asserts the exit code, one short stderr line without a
traceback or an escape sequence, inputs untouched, nothing written outside the sandbox and the
registry unchanged (tests/hostile/conftest.py). README's "Reliability" section counts them.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.conftest import Sandbox, assert_refused, registry_state, tree_state

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
Q_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
DEEP = 10_000


def raw_safetensors(path: Path, header: str, data: bytes = b"") -> None:
    """A safetensors file with exactly this header text (no library would write a bad one)."""
    blob = header.encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


@dataclass
class Inputs:
    root: Path
    tiny_lora: Path
    tiny_base: Path

    def lora(self, name: str, edit: Callable[[dict[str, Any]], Any] | None = None,
             config_text: str | None = None, header: str | None = None) -> Path:
        """A copy of the tiny LoRA with its config edited or replaced, or its header replaced."""
        out = self.root / name
        shutil.copytree(self.tiny_lora, out)
        if edit is not None:
            config = json.loads((out / CONFIG).read_text())
            edit(config)
            (out / CONFIG).write_text(json.dumps(config))
        if config_text is not None:
            (out / CONFIG).write_text(config_text)
        if header is not None:
            raw_safetensors(out / WEIGHTS, header)
        return out

    def base_with_index(self, name: str, index: Any) -> Path:
        """The tiny Llama with a (hostile) shard index next to its weights."""
        out = self.root / name
        shutil.copytree(self.tiny_base, out)
        (out / "model.safetensors.index.json").write_text(
            index if isinstance(index, str) else json.dumps(index))
        return out

    def text(self, name: str, content: str) -> Path:
        out = self.root / name
        out.write_text(content)
        return out


def _set(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: config.update(fields)


def _header_entry(**fields: Any) -> str:
    entry = {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 1024]}
    entry.update(fields)
    return json.dumps({Q_A: entry})


def _dangling(link: Path) -> Path:
    link.symlink_to(link.parent / "missing" / "target")
    return link


BILLION_LAUGHS = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["inputs: [*l8]", "method: cat", "name: laughs"]
) + "\n"

# (id, how to build the command from the inputs, expected exit code)
CASES: list[tuple[str, Callable[[Inputs], list[str]], int]] = [
    # 5. regular expressions from a file
    ("5-rank-pattern-invalid-regex",
     lambda i: ["add", str(i.lora("a", _set(rank_pattern={"(": 4}))), "--name", "x"], 6),
    ("5-rank-pattern-backreference",
     lambda i: ["add", str(i.lora("a", _set(rank_pattern={r"(q)\1": 4}))), "--name", "x"], 6),
    ("5-alpha-pattern-lookahead",
     lambda i: ["add", str(i.lora("a", _set(alpha_pattern={"(?=q)q_proj": 4}))), "--name", "x"],
     6),
    ("5-pattern-expands-too-far",
     lambda i: ["add", str(i.lora("a", _set(rank_pattern={"((q{100}){100}){9}": 4}))),
                "--name", "x"], 6),
    # 6. JSON and YAML parsed with limits
    ("6-billion-laughs-recipe",
     lambda i: ["compose", "-f", str(i.text("laughs.yaml", BILLION_LAUGHS))], 2),
    ("6-recipe-nested-10k-deep",
     lambda i: ["compose", "-f", str(i.text("deep.yaml", "inputs: " + "[" * DEEP + "]" * DEEP
                                           + "\nmethod: cat\nname: x\n"))], 2),
    ("6-config-nested-10k-deep",
     lambda i: ["add", str(i.lora("a", config_text='{"peft_type": "LORA", "x": '
                                  + "[" * DEEP + "]" * DEEP + "}")), "--name", "x"], 6),
    ("6-config-over-16mb",
     lambda i: ["add", str(i.lora("a", _set(padding="x" * (17 * 1024 * 1024)))),
                "--name", "x"], 6),
    ("6-spec-with-yaml-alias",
     lambda i: ["validate", "good", "--base", str(i.tiny_base), "--spec",
                str(i.text("spec.yaml", "gates: [&g 'ppl < 1e9', *g]\n"))], 2),
    # 8. non-finite and absurd numbers
    ("8-score-nan", lambda i: ["score", "good", "--metric", "ppl", "--value", "nan"], 2),
    ("8-score-inf", lambda i: ["score", "good", "--metric", "ppl", "--value", "inf"], 2),
    ("8-lora-alpha-infinity",
     lambda i: ["add", str(i.lora("a", config_text=(i.tiny_lora / CONFIG).read_text()
                                  .replace('"lora_alpha": 8', '"lora_alpha": Infinity'))),
                "--name", "x"], 6),
    ("8-lora-alpha-1e999",
     lambda i: ["add", str(i.lora("a", config_text=(i.tiny_lora / CONFIG).read_text()
                                  .replace('"lora_alpha": 8', '"lora_alpha": 1e999'))),
                "--name", "x"], 6),
    ("8-r-zero-with-empty-factors",
     lambda i: ["add", str(i.lora("a", _set(r=0), header=json.dumps({
         Q_A: {"dtype": "F32", "shape": [0, 64], "data_offsets": [0, 0]},
         Q_B: {"dtype": "F32", "shape": [64, 0], "data_offsets": [0, 0]}}))), "--name", "x"], 6),
    ("8-recipe-rank-1e20",
     lambda i: ["compose", "-f", str(i.text("r.yaml", "inputs: [{ref: good}]\nmethod: svd\n"
                                           "rank: 100000000000000000000\nname: x\n"))], 2),
    ("8-cli-rank-1e20",
     lambda i: ["compose", "good", "--method", "svd", "--rank", "100000000000000000000",
                "--name", "x"], 2),
    ("8-ref-version-21-digits", lambda i: ["show", "good@999999999999999999999"], 2),
    ("8-ref-version-2^63", lambda i: ["show", "good@2^63"], 2),
    ("8-ref-version-arabic-indic-digit", lambda i: ["show", "good@\u0661"], 2),
    # 9. malformed inputs never reach exit 70
    ("9-header-nested-10k-deep",
     lambda i: ["add", str(i.lora("a", header='{"t": ' + "[" * DEEP + "]" * DEEP + "}")),
                "--name", "x"], 6),
    ("9-header-dtype-a-list",
     lambda i: ["add", str(i.lora("a", header=_header_entry(dtype=["F32"]))), "--name", "x"], 6),
    ("9-header-metadata-a-list",
     lambda i: ["add", str(i.lora("a", header=json.dumps({"__metadata__": ["x"]}))),
                "--name", "x"], 6),
    ("9-header-shape-1e999",
     lambda i: ["add", str(i.lora("a", header=_header_entry().replace("[4, 64]", "[1e999, 64]"))),
                "--name", "x"], 6),
    ("9-header-offsets-1e999",
     lambda i: ["add", str(i.lora("a", header=_header_entry().replace("1024]", "1e999]"))),
                "--name", "x"], 6),
    ("9-header-offsets-floats",
     lambda i: ["add", str(i.lora("a", header=_header_entry(data_offsets=[0.0, 1024.5]))),
                "--name", "x"], 6),
    ("9-config-rank-pattern-a-list",
     lambda i: ["add", str(i.lora("a", _set(rank_pattern=["q_proj"]))), "--name", "x"], 6),
    ("9-config-rank-pattern-value-a-string",
     lambda i: ["add", str(i.lora("a", _set(rank_pattern={"q_proj": "4"}))), "--name", "x"], 6),
    ("9-config-r-a-string",
     lambda i: ["add", str(i.lora("a", _set(r="4"))), "--name", "x"], 6),
    ("9-modules-to-save-a-string",
     lambda i: ["add", str(i.lora("a", _set(modules_to_save="lm_head"))), "--name", "x"], 6),
    ("9-base-index-weight-map-a-list",
     lambda i: ["base", "fingerprint", str(i.base_with_index("b", {"weight_map": ["x"]}))], 6),
    ("9-base-index-shard-outside-the-dir",
     lambda i: ["base", "fingerprint", str(i.base_with_index(
         "b", {"weight_map": {"w": "../../outside.safetensors"}}))], 6),
    ("9-base-index-shard-a-number",
     lambda i: ["base", "fingerprint", str(i.base_with_index("b", {"weight_map": {"w": 7}}))],
     6),
    ("9-base-index-nested-10k-deep",
     lambda i: ["base", "fingerprint", str(i.base_with_index(
         "b", '{"weight_map": ' + "[" * DEEP + "]" * DEEP + "}"))], 6),
    ("9-validate-data-line-100k-deep",
     lambda i: ["validate", "good", "--base", str(i.tiny_base), "--data",
                str(i.text("deep.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n"))],
     2),
    ("9-export-to-a-dangling-symlink",
     lambda i: ["export", "good", str(_dangling(i.root / "out"))], 2),
    # 11. terminal safety
    ("11-tensor-name-with-escape-sequences",
     lambda i: ["add", str(i.lora("a", header=json.dumps({
         Q_A.replace("q_proj", "q_proj\x1b]52;c;aGk=\x07"): {
             "dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}))), "--name", "x"], 6),
    ("11-escape-sequence-in-a-ref", lambda i: ["show", "x\x1b]52;c;aGk=\x07\x1b[2J"], 2),
]


def _limit_memory() -> None:
    """Address space of the child capped: an expanding document would die, not swap."""
    cap = 3 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@pytest.mark.parametrize("build, code", [(b, c) for _, b, c in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(
    build: Callable[[Inputs], list[str]], code: int, sandbox: Sandbox, tmp_path: Path,
    tiny_lora: Path, tiny_base: Path,
) -> None:
    inputs = Inputs(tmp_path / "inputs", tiny_lora, tiny_base)
    inputs.root.mkdir()
    args = build(inputs)
    before = (registry_state(sandbox.home), tree_state(inputs.root))
    outcome = sandbox.run(*args, preexec=_limit_memory)
    assert_refused(sandbox, outcome, code, inputs.root, before)
    assert outcome.seconds < 60, f"took {outcome.seconds:.1f} s"


def test_catastrophic_rank_pattern_registers_quickly(sandbox: Sandbox, tmp_path: Path,
                                                     tiny_lora: Path) -> None:
    """`(.*)*X` hangs Python's re on `model.layers.0.self_attn.q_proj`; adapt's matcher is
    linear, so the add finishes and the pattern (which matches no module) is recorded."""
    src = tmp_path / "inputs" / "lora"
    shutil.copytree(tiny_lora, src)
    config = json.loads((src / CONFIG).read_text())
    config["rank_pattern"] = {"(.*)*X": 4}
    (src / CONFIG).write_text(json.dumps(config))
    outcome = sandbox.run("add", str(src), "--name", "patterned", "--json", timeout=120)
    assert outcome.code == 0, outcome.err
    assert json.loads(outcome.out)["rank_pattern"] == {"(.*)*X": 4}
    assert outcome.seconds < 60


def test_token_echoed_in_an_error_is_redacted(sandbox: Sandbox) -> None:
    token = "hf_" + "Q7x" * 12
    before = registry_state(sandbox.home)
    outcome = sandbox.run("show", token.lower(), env={"HF_TOKEN": token.lower()})
    assert outcome.code == 3
    assert token.lower() not in outcome.err and "***" in outcome.err
    assert outcome.err.count("\n") == 1
    assert registry_state(sandbox.home) == before


def test_notes_and_config_text_print_without_escape_sequences(sandbox: Sandbox, tmp_path: Path,
                                                              tiny_lora: Path) -> None:
    """A note (OSC 52 clipboard write, Rich link markup) and a base_model from the config (a
    screen clear) are shown escaped by `show` and `list`, never as raw escape sequences."""
    src = tmp_path / "inputs" / "lora"
    shutil.copytree(tiny_lora, src)
    config = json.loads((src / CONFIG).read_text())
    config["base_model_name_or_path"] = "evil\x1b[2J\x1b[Hbase"
    (src / CONFIG).write_text(json.dumps(config))
    note = "ok\x1b]52;c;aGVsbG8=\x07 [link=https://evil.example]click[/link] \u202etxt"
    assert sandbox.run("add", str(src), "--name", "noted", "--note", note).code == 0
    shown = sandbox.run("show", "noted")
    listed = sandbox.run("list")
    for outcome in (shown, listed):
        assert outcome.code == 0, outcome.err
        assert "\x1b" not in outcome.out and "\x07" not in outcome.out
        assert "\u202e" not in outcome.out
    assert "\\x1b]52" in shown.out and "[link=https://evil.example]" in shown.out
    assert "evil\\x1b[2J" in listed.out
