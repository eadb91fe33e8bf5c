"""Redaction: secret patterns, user patterns, truncation, the sensitive header list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

import obs_middleware as obs
from obs_middleware._core import redact
from obs_middleware._core.config import RedactionOptions
from obs_middleware._core.redact import (
    PRIVATE,
    SENSITIVE_HEADERS,
    compile_secret_patterns,
    scrub,
    truncate,
)
from obs_middleware.testing import capture


@pytest.fixture(autouse=True)
def default_patterns() -> Iterator[None]:
    compile_secret_patterns()
    yield
    compile_secret_patterns()


SECRETS = [
    "Bearer eyJhbGciOiJIUzI1NiJ9",
    "bearer abcdefgh12345678",
    "sk-proj-0123456789abcdefghijkl",
    "sk-ant-api03-0123456789abcdefgh",
    "r8_0123456789abcdefghijABCD",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
    "ak-0123456789abcdefXYZ",
    "as-0123456789abcdefXYZ",
    "0b5a8c2e-1f3d-4e6a-9b7c-2d4e6f8a0b1c:0123456789abcdef0123456789abcdef",
    "api_key=hunter2hunter2",
    "API-KEY: hunter2hunter2",
    "password=correct-horse",
    "token: abcd1234",
    "secret=s3cr3tvalue",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_scrub_replaces_known_secret_shapes(secret: str) -> None:
    out = scrub(f"failed calling provider with {secret} (retrying)")
    assert "[REDACTED]" in out
    assert secret.rsplit(maxsplit=1)[-1].rsplit("=", maxsplit=1)[-1] not in out
    assert out.startswith("failed calling provider with ")
    assert out.endswith(" (retrying)")


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "model sdxl timed out after 30s (tokens used: 12, user 42)"
    assert scrub(text) == text


def test_scrub_removes_basic_auth_credentials() -> None:
    out = scrub("upstream rejected Authorization: Basic dXNlcjpodW50ZXIy")
    assert "dXNlcjpodW50ZXIy" not in out


def test_extra_patterns_are_scrubbed_too() -> None:
    compile_secret_patterns([r"acct-\d{6}"])
    assert scrub("charge acct-123456 failed") == "charge [REDACTED] failed"
    assert scrub("sk-0123456789abcdefghij") == "[REDACTED]"


def test_configured_extra_patterns_apply_to_exception_messages() -> None:
    with capture(redaction=RedactionOptions(extra_patterns=(r"acct-\d{6}",))) as cap:
        with pytest.raises(RuntimeError), obs.span("charge"):
            raise RuntimeError("card declined for acct-123456")
        assert cap.span("charge")["error_message"] == "card declined for [REDACTED]"


def test_truncate() -> None:
    assert truncate("hello", 10) == "hello"
    assert truncate("hello world", 5) == "hello…"
    assert truncate("hello", 0) == ""


def test_sensitive_headers_cover_credentials_and_client_ips() -> None:
    assert {
        "authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
    } <= SENSITIVE_HEADERS
    assert all(h == h.lower() for h in SENSITIVE_HEADERS)


def test_private_marker() -> None:
    assert PRIVATE == "[PRIVATE]"


_SECRETISH = st.text(
    alphabet=st.sampled_from(
        [*"abcdefikmnoprstwyzABEJKST0123456789_-=:./ \t\u0131\u017f\u212a\u0130\u00e9"]
    ),
    max_size=80,
)


@given(st.lists(st.one_of(_SECRETISH, st.sampled_from(SECRETS)), max_size=4).map("".join))
def test_scrub_equals_the_full_search_whatever_the_text(text: str) -> None:
    # The anchors only decide whether to search: what gets redacted never changes.
    assert scrub(text) == redact._compiled.sub(redact.REDACTED, text)


def test_case_insensitive_variants_are_still_scrubbed() -> None:
    for text in (
        "\u017fecret=hunter22",
        "ap\u0131_key: abcdefgh",
        "TO\u212aEN=abcdefgh",
        "BEARER abcdefghij",
    ):
        assert "[REDACTED]" in scrub(text), text


def test_text_without_any_anchor_is_not_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoSearch:
        def sub(self, *args: object) -> str:
            raise AssertionError("searched a text no pattern can match")

    monkeypatch.setattr(redact, "_compiled", NoSearch())
    prompt = "A photorealistic portrait of an astronaut riding a horse on the moon. " * 20
    assert scrub(prompt) == prompt
    assert scrub("Ends at 12:30, room 4f: bring notes") == "Ends at 12:30, room 4f: bring notes"
