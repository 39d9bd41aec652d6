"""The bounded parsers and matcher behind the corpus, against their oracles (PEFT, Python's re,
json) and against the hostile documents the review used."""

from __future__ import annotations

import json
import re
import time

import pytest

from registry.manifest import parse_manifest
from registry.patterns import PatternError, _nfa_matches, compile_pattern_key, fullmatch
from registry.safeparse import ParseLimitError, load_json, load_yaml
from registry.terminal import printable, redact_secrets, safe_line

KEYS = ["q_proj", "model.layers.0.self_attn.q_proj", r"layers\.[0-3]\.mlp\..*", "^model.*q_proj",
        "(q|k|v)_proj", r"layers.\d+.self_attn.(q|v)_proj", "(?i:Q_PROJ)", "a{2,3}", "x?", "",
        ".*", r"\bq_proj", r"[^.]+_proj", "model.layers.1[0-9].mlp.down_proj", "a|", "(?:ab)*",
        "a{0,2}b", r"\w+\.\w+", r"\S+", "(q_proj|)", "layers.*?proj", "(?a:\\d)", "[^a-c]",
        "\\Aq_proj\\Z", "(?m:q_proj$)", "(ab|a)(bc|c)?", "(a*)+$", "[A-Z]_proj"]
NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.12.mlp.down_proj", "q_proj", "Q_PROJ",
         "aa", "aaaa", "aab", "", "model.layers.1.mlp.up_proj", "abab", "ababa",
         "layers.3.mlp.gate", "v_proj\n", "a.b", "xq_proj", "\u0661", "abc", "q_proj\nx", "d"]


def test_pattern_key_matches_peft_get_pattern_key() -> None:
    """PEFT's own function is the oracle, for each key alone and for the first-match order."""
    from peft.utils.other import get_pattern_key

    from registry.peft_dir import pattern_key

    for name in NAMES:
        for key in KEYS:
            assert pattern_key([key], name) == get_pattern_key([key], name), (key, name)
            # the NFA itself (not only the fast path through re) agrees
            assert _nfa_matches(compile_pattern_key(key).start, name) == bool(
                re.match(rf"(.*\.)?({key})$", name)), (key, name)
        assert pattern_key(KEYS, name) == get_pattern_key(KEYS, name)


def test_fullmatch_matches_re_fullmatch() -> None:
    for key in KEYS:
        for name in NAMES:
            assert fullmatch(key, name) == bool(re.fullmatch(key, name)), (key, name)


def test_catastrophic_pattern_is_linear() -> None:
    start = time.perf_counter()
    assert not compile_pattern_key("(.*)*X").matches("a" * 20_000)
    assert not fullmatch("(a|aa)*b", "a" * 20_000)
    assert time.perf_counter() - start < 10  # re would need longer than the universe's age


@pytest.mark.parametrize("key", ["(", r"(q)\1", "(?=q)q", "(?<=a)b", "(?>a)", "a++",
                                 "(?P<x>a)(?(x)b|c)", "((a{100}){100}){9}", "x" * 2000])
def test_patterns_adapt_will_not_run_are_refused(key: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern_key(key)


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000, '{"a": NaN}', '{"a": -Infinity}', '{"a": 1e999}',
    '{"a": ' + "9" * 30 + "}", '{"a": ', b'{"a": "\xff"}',
])
def test_load_json_refuses_in_one_short_line(text: str | bytes) -> None:
    with pytest.raises(ParseLimitError) as caught:
        load_json(text)
    assert len(str(caught.value)) < 200 and "\n" not in str(caught.value)


def test_load_json_agrees_with_json_on_ordinary_documents() -> None:
    doc = {"a": [1, 2.5, {"b": "[[{{\\\"", "c": None}], "d": True, "e": -3, "f": 2**63}
    assert load_json(json.dumps(doc)) == doc
    assert load_json(json.dumps(doc).encode()) == doc


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    doc = "a: &a [lol, lol]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    with pytest.raises(ParseLimitError, match="anchors"):
        load_yaml(doc)
    with pytest.raises(ParseLimitError, match="aliases"):
        load_yaml("a: 1\nb: *a\n")


@pytest.mark.parametrize("text, what", [
    ("x: " + "[" * 5000 + "]" * 5000, "nested"), ("w: .nan", "non-finite"),
    ("w: -.inf", "non-finite"), ("r: 100000000000000000000000", "out of range"),
    ("x: !!python/object/apply:os.system [ls]", "constructor"),
])
def test_load_yaml_refuses(text: str, what: str) -> None:
    with pytest.raises(ParseLimitError, match=what):
        load_yaml(text)


def _manifest(**changes: object) -> dict:
    base = {"manifest_version": 1, "name": "x", "version": 1, "digest": "sha256:" + "0" * 64,
            "method": "LORA", "peft_type": "LORA",
            "files": [{"path": "adapter_config.json", "sha256": "0" * 64, "size": 1}],
            "parents": [], "scores": [], "validation_runs": [], "tags": []}
    base.update(changes)
    return base


@pytest.mark.parametrize("text, what", [
    (json.dumps(_manifest(recipe={})).replace('"recipe": {}', '"recipe": ' + "[" * 1000
                                              + "]" * 1000), "nested"),
    (json.dumps(_manifest(scores=[{"metric": "ppl", "value": 1.5}])).replace("1.5", "NaN"),
     "non-finite"),
    (json.dumps(_manifest(created_at="yesterday")), "ISO 8601"),
    (json.dumps(_manifest()).replace('"version": 1', '"version": 1e30'), "64-bit"),
    (json.dumps(_manifest(params=2**64)), "64-bit"),
    (json.dumps(_manifest(name="x" * 100_000)), "does not match"),
])
def test_parse_manifest_refuses_hostile_manifests(text: str, what: str) -> None:
    with pytest.raises(ValueError, match=what) as caught:
        parse_manifest(text)
    assert len(str(caught.value)) <= 300


def test_parse_manifest_accepts_a_valid_one() -> None:
    assert parse_manifest(json.dumps(_manifest(created_at="2026-12-02T19:00:00+00:00")))["name"] \
        == "x"


def test_terminal_text_is_escaped_and_tokens_redacted() -> None:
    assert printable("a\x1b[2Jb\x07\u202ec\x9b") == "a\\x1b[2Jb\\x07\\u202ec\\x9b"
    assert printable("a\nb", keep_newlines=True) == "a\nb"
    assert redact_secrets("echo hf_abcdefghijklmnop!", []) == "echo hf_***!"
    assert redact_secrets("Authorization: Bearer abc.def-ghi_jkl", []) == \
        "Authorization: Bearer ***"
    assert redact_secrets("my secret-token-1234 leaked", ["secret-token-1234"]) == \
        "my *** leaked"
    assert safe_line("two\nlines\x1b]52;c;x\x07") == "two lines\\x1b]52;c;x\\x07"
