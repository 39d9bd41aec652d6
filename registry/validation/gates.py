"""Gates: small arithmetic comparisons over run figures, parsed with `ast` and never eval'd.

Allowed: numbers, figure names, + - * /, unary -, comparisons (< <= > >= == !=), and/or/not,
parentheses. Anything else (calls, attributes, subscripts, ** ...) is refused when parsed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from registry.errors import UsageError
from registry.validation.figures import FIGURES

MAX_GATE_CHARS = 500

_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class MissingFigure(Exception):
    """A gate needs a figure that this run did not measure."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)


@dataclass(frozen=True)
class Gate:
    """A parsed gate: its source text, the figures it reads, and its checked syntax tree."""

    expr: str
    names: tuple[str, ...]
    tree: ast.Expression = field(repr=False, compare=False)

    def evaluate(self, figures: Mapping[str, float | int | None]) -> bool:
        """True when the gate holds. Raises MissingFigure, ZeroDivisionError."""
        return bool(_eval(self.tree.body, figures))


def parse_gate(expr: str, known: Mapping[str, object] = FIGURES) -> Gate:
    """Parse and check `expr`; UsageError for anything but the allowed grammar or names."""
    text = expr.strip()
    if not text:
        raise UsageError("empty gate expression", "write e.g. 'ppl <= 1.05 * base_ppl'")
    if len(text) > MAX_GATE_CHARS:
        raise UsageError(f"gate expression longer than {MAX_GATE_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise UsageError(f"gate {text!r} is not a valid expression: {error.msg}") from None
    names: list[str] = []
    _check(tree.body, text, names, known)
    if not isinstance(tree.body, ast.Compare | ast.BoolOp) and not (
        isinstance(tree.body, ast.UnaryOp) and isinstance(tree.body.op, ast.Not)
    ):
        raise UsageError(f"gate {text!r} must be a comparison, e.g. 'ppl <= 1.05 * base_ppl'")
    return Gate(text, tuple(dict.fromkeys(names)), tree)


def _check(node: ast.AST, text: str, names: list[str], known: Mapping[str, object]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise UsageError(f"gate {text!r}: only numbers are allowed as constants, "
                             f"not {node.value!r}")
        return
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise UsageError(f"gate {text!r}: unknown figure {node.id!r}; known figures: "
                             + ", ".join(sorted(known)))
        names.append(node.id)
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left, text, names, known)
        _check(node.right, text, names, known)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        _check(node.operand, text, names, known)
        return
    if isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        _check(node.left, text, names, known)
        for comparator in node.comparators:
            _check(comparator, text, names, known)
        return
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And | ast.Or):
        for value in node.values:
            _check(value, text, names, known)
        return
    what = type(node).__name__
    if isinstance(node, ast.BinOp | ast.UnaryOp | ast.BoolOp):
        what = type(node.op).__name__
    elif isinstance(node, ast.Compare):
        what = type(node.ops[0]).__name__
    raise UsageError(f"gate {text!r}: {what} is not allowed; use numbers, figure names, "
                     "+ - * /, comparisons, and/or/not")


def _eval(node: ast.AST, figures: Mapping[str, float | int | None]) -> float | bool:
    # Only the node types _check admitted can reach here.
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return node.value
    if isinstance(node, ast.Name):
        value = figures.get(node.id)
        if value is None:
            raise MissingFigure(node.id)
        return float(value)
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, figures), _eval(node.right, figures))
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, figures)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.Compare):
        left = _eval(node.left, figures)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, figures)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, figures) for v in node.values)
        return any(_eval(v, figures) for v in node.values)
    raise AssertionError(f"unchecked node {type(node).__name__}")
