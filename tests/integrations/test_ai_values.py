"""What an SDK hands an AI span goes through: text cleaned within bounds, base64 found wherever it
can match, extractors that never raise."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obs_middleware._core.redact import scrub, truncate
from obs_middleware.integrations._ai_values import BASE64, clean_text, safe


def test_clean_text_bounds_work_on_huge_inputs() -> None:
    text = "describe: " + "QUJD" * 1_000_000  # 4 MB of base64
    assert clean_text(text, 200) == "describe: [BASE64]…"
    assert clean_text("x" * 10, 0) == ""
    assert clean_text(b"bytes", 10) == "[bytes]"


@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.sampled_from([*"aZ09+/_-= \n"]), max_size=60),
            st.sampled_from(["A" * 100, "data:image/png;base64,", "QUJD" * 30, " " * 100]),
        ),
        max_size=5,
    ).map("".join)
)
def test_base64_is_searched_wherever_it_can_match(text: str) -> None:
    # Whatever the cheap checks skip, the full search would have left unchanged.
    assert clean_text(text, 1000) == truncate(scrub(BASE64.sub("[BASE64]", text)), 1000)


def test_safe_swallows_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    def extractor_bug(value: int) -> int:
        raise AttributeError(value)

    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        assert safe(extractor_bug, 1) is None
        assert safe(extractor_bug, 2) is None
    assert len(caplog.records) == 1
    assert "extractor_bug" in caplog.records[0].getMessage()
    assert safe(lambda x: x + 1, 1) == 2
