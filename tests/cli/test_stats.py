"""Text tables and dollars: a cost is written with the digits it needs, never ``$0.0000``."""

from __future__ import annotations

import pytest

from obs_middleware.cli._stats import table, usd

COSTS = [
    (0.0, "$0"),
    (3.6e-05, "$0.000036"),
    (9e-06, "$0.0000090"),
    (0.00108, "$0.0011"),
    (0.0099, "$0.0099"),
    (0.0338, "$0.0338"),
    (0.425, "$0.4250"),
    (1.0, "$1.00"),
    (1234.5, "$1,234.50"),
    (1e-10, "$0.00000000010"),
    (1e-12, "<$0.0000000001"),
    (-0.5, "-$0.5000"),
]


@pytest.mark.parametrize(("value", "text"), COSTS)
def test_usd_keeps_two_significant_digits_below_a_cent(value: float, text: str) -> None:
    assert usd(value) == text


def test_table_right_aligns_numbers_and_says_none_when_empty() -> None:
    text = table(["name", "n"], [["a", 1], ["bb", 1234]], "T")
    assert text.splitlines() == ["T", "name      n", "────  ─────", "a         1", "bb    1,234"]
    assert table(["x"], []).endswith("(none)")
