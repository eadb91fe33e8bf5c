"""HTTP facts shared by the middleware and the client integrations."""

from __future__ import annotations

import pytest

from obs_middleware._core.http import STATUS_CLASS, content_length


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("0", 0),
        ("1234", 1234),
        (b"1234", 1234),
        (None, None),
        ("", None),
        ("-1", None),
        ("12 ", None),
        ("1e3", None),
        ("²", None),  # str.isdigit() says yes; int() would raise
        ("١٢", None),  # Arabic-Indic digits: not what a header carries
        ("9" * 19, None),  # beyond any real body
    ],
)
def test_content_length_accepts_only_plain_decimal_numbers(
    value: str | bytes | None, parsed: int | None
) -> None:
    assert content_length(value) == parsed


def test_status_class_labels() -> None:
    assert [STATUS_CLASS.get(s // 100, "xxx") for s in (0, 101, 204, 302, 404, 503, 600)] == [
        "xxx",
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "xxx",
    ]
