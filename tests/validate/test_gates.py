"""Gate expressions: parsed with ast, evaluated without eval(), unsafe input refused."""

from __future__ import annotations

import pytest

from registry.errors import UsageError
from registry.validation.gates import MissingFigure, parse_gate

FIGS = {"ppl": 10.0, "base_ppl": 9.8, "parity_max_abs": 2e-4, "kl_quant": 0.01,
        "tokens_per_s": 1000.0}


@pytest.mark.parametrize(
    ("expr", "holds"),
    [
        ("ppl <= 1.05 * base_ppl", True),
        ("ppl <= 1.01 * base_ppl", False),
        ("parity_max_abs < 1e-3", True),
        ("kl_quant < 0.05 and tokens_per_s > 500", True),
        ("kl_quant > 0.05 or tokens_per_s >= 1000", True),
        ("not ppl > base_ppl", False),
        ("0 < parity_max_abs < 1e-3", True),
        ("(ppl - base_ppl) / base_ppl < 0.05", True),
        ("-ppl < -9", True),
        ("ppl != base_ppl", True),
    ],
)
def test_gate_evaluates_arithmetic_comparisons(expr: str, holds: bool) -> None:
    assert parse_gate(expr).evaluate(FIGS) is holds


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "ppl.real < 1",
        "ppl ** 2 < 1",
        "[ppl][0] < 1",
        "(lambda: 1)() < 2",
        "ppl < 'a'",
        "ppl if ppl else base_ppl",
        "ppl < True",
        "ppl // 2 < 1",
        "open('/etc/passwd')",
        "ppl; base_ppl",
        "ppl",
        "x := 1",
    ],
)
def test_gate_parser_refuses_unsafe_expressions(expr: str) -> None:
    with pytest.raises(UsageError):
        parse_gate(expr)


def test_unknown_figure_is_one_line_usage_error_listing_known_names() -> None:
    with pytest.raises(UsageError) as info:
        parse_gate("perplexity < 10")
    message = str(info.value)
    assert "\n" not in message
    assert "unknown figure 'perplexity'" in message
    for name in ("ppl", "base_ppl", "parity_max_abs", "kl_quant", "tokens_per_s"):
        assert name in message


def test_gate_names_its_figures_and_reports_missing_ones() -> None:
    gate = parse_gate("ppl <= 1.05 * base_ppl and ppl < 100")
    assert gate.names == ("ppl", "base_ppl")
    with pytest.raises(MissingFigure):
        gate.evaluate({"ppl": 1.0, "base_ppl": None})
