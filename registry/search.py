"""Filter strings for `adapt search`, in the spirit of MLflow's `search_model_versions`.

    metric.accuracy > 0.8 and method = 'LORA' and (tag = 'staging' or tag = 'prod')

Parsed by a small tokenizer and a recursive-descent parser into a tree of comparisons; nothing
is evaluated as code and values are never spliced into SQL. Unknown fields and malformed input
are UsageErrors (exit 2) that name what is known.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.errors import UsageError

FIELDS = {
    "name": "adapter name",
    "version": "version number",
    "ref": "NAME@VERSION",
    "method": "PEFT method (LORA, DORA, ...)",
    "rank": "rank r",
    "alpha": "lora_alpha",
    "base": "registered base name or fingerprint",
    "base_model": "base model id from the adapter config",
    "tag": "a tag of the version",
    "dtype": "weights dtype",
    "task_type": "PEFT task type",
    "params": "trainable parameters",
    "size_bytes": "bytes of the adapter files",
    "created": "creation time (ISO 8601 text compares in time order)",
}
OPS = ("=", "!=", ">=", "<=", ">", "<", "like")
MAX_FILTER_CHARS = 4096
MAX_DEPTH = 32

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<op>!=|>=|<=|=|>|<|\(|\))
    | (?P<word>[A-Za-z_][A-Za-z0-9_@.:/*-]*)
    )""", re.X)


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: str | float


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Comparison | BoolOp | Not


def _tokens(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_FILTER_CHARS:
        raise UsageError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UsageError(f"cannot read the filter at character {pos + 1}: "
                             f"{text[pos:pos + 20]!r}", "see `adapt search --help`")
        kind = next(k for k, v in m.groupdict().items() if v is not None)
        value = m.group(kind)
        if kind == "word" and value.lower() in ("and", "or", "not", "like"):
            kind, value = "kw", value.lower()
        out.append((kind, value))
        pos = m.end()
    return out


def known_field(name: str) -> bool:
    return name in FIELDS or (name.startswith("metric.") and len(name) > len("metric."))


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise UsageError("the filter ends too early", "see `adapt search --help`")
        self.i += 1
        return tok

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise UsageError(f"the filter nests deeper than {MAX_DEPTH} levels")
        items = [self.term()]
        while self.peek() == ("kw", "or"):
            self.take()
            items.append(self.term())
        self.depth -= 1
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def term(self) -> Node:
        items = [self.factor()]
        while self.peek() == ("kw", "and"):
            self.take()
            items.append(self.factor())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def factor(self) -> Node:
        tok = self.take()
        if tok == ("kw", "not"):
            return Not(self.factor())
        if tok == ("op", "("):
            node = self.expr()
            if self.take() != ("op", ")"):
                raise UsageError("a '(' in the filter is not closed")
            return node
        if tok[0] != "word":
            raise UsageError(f"expected a field name in the filter, found {tok[1]!r}")
        field = tok[1]
        if not known_field(field):
            raise UsageError(f"unknown field {field!r} in the filter",
                             "known: " + ", ".join([*FIELDS, "metric.NAME"]))
        op_tok = self.take()
        op = op_tok[1]
        if op_tok[0] not in ("op", "kw") or op not in OPS:
            raise UsageError(f"expected one of {' '.join(OPS)} after {field!r}, found {op!r}")
        kind, raw = self.take()
        if kind == "str":
            value: str | float = bytes(raw[1:-1], "utf-8").decode("unicode_escape") \
                if "\\" in raw else raw[1:-1]
        elif kind == "num":
            value = float(raw)
            if not math.isfinite(value):
                raise UsageError(f"{raw!r} is not a finite number")
        else:
            raise UsageError(f"expected a quoted string or a number after {field} {op}, "
                             f"found {raw!r}")
        return Comparison(field, op, value)


def parse_filter(text: str) -> Node | None:
    """The filter's tree (None for an empty filter); UsageError on anything malformed."""
    tokens = _tokens(text or "")
    if not tokens:
        return None
    parser = _Parser(tokens)
    node = parser.expr()
    if parser.peek() is not None:
        raise UsageError(f"unexpected {parser.peek()[1]!r} in the filter",  # type: ignore[index]
                         "join conditions with `and` / `or`")
    return node


def metric_names(node: Node | None) -> set[str]:
    if node is None:
        return set()
    if isinstance(node, Comparison):
        return {node.field[len("metric."):]} if node.field.startswith("metric.") else set()
    if isinstance(node, Not):
        return metric_names(node.item)
    return set().union(*(metric_names(n) for n in node.items))


def _compare(left: Any, op: str, right: str | float) -> bool:
    if left is None:
        return False
    if op == "like":
        return fnmatch.fnmatchcase(str(left), str(right).replace("%", "*").replace("_", "?"))
    if isinstance(right, float):
        try:
            left = float(left)
        except (TypeError, ValueError):
            return False
    else:
        left = str(left)
        if op in ("=", "!="):  # names are lowercase, methods uppercase: either spelling matches
            return (left.lower() == right.lower()) == (op == "=")
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    }
    return ops[op](left, right)


def matches(node: Node | None, row: dict[str, Any], tags: set[str],
            metrics: dict[str, float]) -> bool:
    """Whether a version (its fields, tags and metric values) satisfies the filter."""
    if node is None:
        return True
    if isinstance(node, Not):
        return not matches(node.item, row, tags, metrics)
    if isinstance(node, BoolOp):
        results = (matches(n, row, tags, metrics) for n in node.items)
        return all(results) if node.op == "and" else any(results)
    if node.field == "tag":
        if node.op == "=":
            return str(node.value) in tags
        if node.op == "!=":
            return str(node.value) not in tags
        return any(_compare(t, node.op, node.value) for t in tags)
    if node.field.startswith("metric."):
        return _compare(metrics.get(node.field[len("metric."):]), node.op, node.value)
    return _compare(row.get(node.field), node.op, node.value)


def parse_order(text: str | None) -> tuple[str, bool]:
    """`FIELD [asc|desc]` -> (field, descending)."""
    if not text:
        return "name", False
    parts = text.split()
    if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
        raise UsageError(f"cannot read --order-by {text!r}", "use FIELD or 'FIELD asc|desc'")
    if not known_field(parts[0]) or parts[0] == "tag":
        raise UsageError(f"unknown --order-by field {parts[0]!r}",
                         "known: " + ", ".join([f for f in FIELDS if f != "tag"] +
                                               ["metric.NAME"]))
    return parts[0], len(parts) == 2 and parts[1].lower() == "desc"
