"""Redaction: secret patterns, user patterns, truncation, the sensitive header list."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pydantic
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import obs_middleware as obs
from obs_middleware._core import redact
from obs_middleware._core.config import RedactionOptions
from obs_middleware._core.redact import (
    PRIVATE,
    SENSITIVE_HEADERS,
    compile_secret_patterns,
    error_message,
    query_keys,
    scrub,
    scrub_error,
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
    "Authorization: Token 0123456789abcdef",
    "token 0123456789abcdef0123456789abcdef01234567",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "sk_live_0123456789abcdefABCDEF",
    "rk_live_0123456789abcdefABCDEF",
    "xoxb-123456789012-abcdefghijkl",
    "AIzaSyA0123456789abcdefghijklmnopqrstuv",
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


_FOLDED = "\u0131\u017f\u212a\u0130\u00e9"  # non-ASCII letters, four of which match ASCII ones
_SECRETISH = st.text(
    alphabet=st.sampled_from(
        [*"abcdefghiklmnopqrstuvwxyzABEGIJKQSTZ0123456789_-=:./@'\"{} \t", *_FOLDED]
    ),
    max_size=80,
)


WHOLE = re.compile("|".join(redact._SECRET_PATTERNS))  # every pattern tried at every position


@given(st.lists(st.one_of(_SECRETISH, st.sampled_from(SECRETS)), max_size=4).map("".join))
def test_scrub_equals_the_full_search_whatever_the_text(text: str) -> None:
    # The anchors only decide whether, and for which patterns, to search: what gets redacted
    # never changes.
    assert scrub(text) == WHOLE.sub(redact.REDACTED, text)


def test_case_insensitive_variants_are_still_scrubbed() -> None:
    for text in (
        "\u017fecret=hunter22",
        "ap\u0131_key: abcdefgh",
        "TO\u212aEN=abcdefgh",
        "BEARER abcdefghij",
    ):
        assert "[REDACTED]" in scrub(text), text


def test_the_quick_look_knows_every_anchor_of_the_table() -> None:
    for _, anchors, needs in redact._PATTERNS:
        for anchor in anchors:
            text = f"x {anchor} {needs[0] if needs else ''}"
            assert redact._may_hold_secret(text, redact._lowered(text)), anchor


def test_text_without_any_anchor_is_not_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoSearch:
        def sub(self, *args: object) -> str:
            raise AssertionError("searched a text no pattern can match")

    monkeypatch.setattr(redact, "_subset", lambda mask, extra: NoSearch())
    prompt = "A photorealistic portrait of an astronaut riding a horse on the moon. " * 20
    assert scrub(prompt) == prompt
    assert scrub("Ends at 12:30, room 4f: bring notes") == "Ends at 12:30, room 4f: bring notes"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("{'password': 'x', 'user': 'bob'}", "'x'"),
        ('{"password": "hunter2", "user": "bob"}', "hunter2"),
        ('{"api_key":"k1"}', "k1"),
        ("{'client_secret': 'abc'}", "abc"),
        ("access_token=abcdef123456", "abcdef123456"),
        ("db_password: correcthorse", "correcthorse"),
        ("headers={'Authorization': 'Token 0123abcd'}", "0123abcd"),
        ("Authorization: Token 0123abcd", "0123abcd"),
        ("proxy-authorization: Digest abcd1234", "abcd1234"),
        ("Cookie: session=abc123; theme=dark", "abc123"),
        ("could not connect to postgresql://app:S3cr3t@db:5432/app", "S3cr3t"),
        ("redis://:p@ss@cache:6379/0 refused", "p@ss"),
        ("key AKIAIOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE"),
        ("token=ghs_0123456789abcdefghijABCDEF in header", "ghs_0123456789"),
        ("stripe: sk_test_0123456789abcdef failed", "sk_test_0123456789abcdef"),
        ("slack xoxp-1234-5678-abcdefabcdef rejected", "xoxp-1234-5678"),
        ("maps key=AIzaSyA0123456789abcdefghijklmnopqrstuv", "AIzaSyA0123456789"),
    ],
)
def test_scrub_catches_quoted_keys_headers_url_credentials_and_vendor_keys(
    text: str, secret: str
) -> None:
    out = scrub(text)
    assert secret not in out
    assert "[REDACTED]" in out


def test_url_credentials_keep_the_host() -> None:
    assert scrub("postgresql://app:S3cr3t@db:5432/app") == "postgresql://[REDACTED]@db:5432/app"
    assert scrub("https://example.com:8443/a@b") == "https://example.com:8443/a@b"


def test_ordinary_words_near_key_names_stay() -> None:
    for text in ("max_tokens: 1024", "tokenizer: bert", "Asia/Tokyo", "3 tokens left"):
        assert scrub(text) == text


def test_dotted_capital_i_cannot_hide_a_key_name() -> None:
    assert "0123abcd" not in scrub("AUTHOR\u0130ZAT\u0130ON: Token 0123abcd")


# -- error messages ------------------------------------------------------------------------------


def _db_error(statement: str, params: object, message: str) -> sa.exc.DBAPIError:
    """A real SQLAlchemy error around a real sqlite3 exception (what ``execute`` raises)."""
    return sa.exc.IntegrityError(statement, params, sqlite3.IntegrityError(message))


def test_sqlalchemy_message_keeps_the_statement_without_literals_and_no_parameters() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (email TEXT UNIQUE, pw TEXT)"))
        conn.execute(sa.text("INSERT INTO users VALUES ('bob@x', 'a')"))
        insert = sa.text("INSERT INTO users VALUES (:e, :p)")
        with pytest.raises(sa.exc.IntegrityError) as raised:
            conn.execute(insert, {"e": "bob@x", "p": "hunter2"})
        with pytest.raises(sa.exc.OperationalError) as missing:
            conn.execute(sa.text("SELECT * FROM nope WHERE email = 'alice@x'"))
    assert error_message(raised.value) == (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
        "[SQL: INSERT INTO users VALUES (?, ?)]\n"
        "[parameters: [REDACTED]]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    assert error_message(missing.value) == (
        "(sqlite3.OperationalError) no such table: nope\n"
        "[SQL: SELECT * FROM nope WHERE email = ?]\n"
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)"
    )


def test_sqlite_messages_lose_the_values_they_echo() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE u (pw TEXT CHECK (pw <> 'hunter2'))"))
        with pytest.raises(sa.exc.OperationalError) as token:
            conn.execute(sa.text("SELECT * FROM u WHERE pw = 'bob@x"))
        with pytest.raises(sa.exc.IntegrityError) as check:
            conn.execute(sa.text("INSERT INTO u VALUES (:pw)"), {"pw": "hunter2"})
    assert error_message(token.value).startswith(
        "(sqlite3.OperationalError) unrecognized token: ?\n[SQL: SELECT * FROM u WHERE pw = ?]"
    )
    assert error_message(check.value).startswith(
        "(sqlite3.IntegrityError) CHECK constraint failed: pw <> ?\n"
    )
    with pytest.raises(sqlite3.OperationalError) as raw:
        sqlite3.connect(":memory:").execute("SELECT bob@x")
    assert error_message(raw.value) == "near ?: syntax error"


def test_an_echoed_statement_line_and_its_caret_are_dropped_inside_sqlalchemys_layout() -> None:
    orig = "syntax error at or near \"AND\"\nLINE 1: ...ERE email = 'dave@x' AND AND\n          ^"
    exc = _db_error("SELECT * FROM t WHERE email = 'dave@x' AND AND", {}, orig)
    assert error_message(exc) == (
        "(sqlite3.IntegrityError) syntax error at or near ?\n"
        "[SQL: SELECT * FROM t WHERE email = ? AND AND]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )


def test_hidden_parameters_and_executemany_parameters() -> None:
    hidden = sa.exc.IntegrityError("INSERT INTO t VALUES (?)", ("x",), sqlite3.IntegrityError("e"))
    hidden.hide_parameters = True
    assert "[SQL parameters hidden due to hide_parameters=True]" in error_message(hidden)
    many = _db_error("INSERT INTO t VALUES (?)", [("SECRET-1",), ("SECRET-2",)], "e")
    assert "SECRET" not in error_message(many)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'duplicate key value violates unique constraint "users_email_key"\n'
            "DETAIL:  Key (email)=(bob@example.com) already exists.",
            "duplicate key value violates unique constraint ?\n"
            "DETAIL:  Key (email)=(?) already exists.",
        ),
        (
            'insert or update on table "orders" violates foreign key constraint "o_fk"\n'
            'DETAIL:  Key (user_id)=(42) is not present in table "users".',
            "insert or update on table ? violates foreign key constraint ?\n"
            "DETAIL:  Key (user_id)=(?) is not present in table ?.",
        ),
        (
            'null value in column "pw" violates not-null constraint\n'
            "DETAIL:  Failing row contains (7, bob@example.com, null).",
            "null value in column ? violates not-null constraint\n"
            "DETAIL:  Failing row contains (?).",
        ),
        (
            "DETAIL:  Key (lower(email::text))=(bob(at)\nexample) already exists.",
            "DETAIL:  Key (lower(email::text))=(?) already exists.",
        ),
        (
            'syntax error at or near "bob"\n'
            "LINE 1: ...ERE email = bob@example.com' AND pw = 'hunter2\n"
            "                      ^",
            "syntax error at or near ?",
        ),
        ("Duplicate entry 'bob@example.com' for key 'email'", "Duplicate entry ? for key ?"),
        (
            'invalid input syntax for type integer: "abc"',
            "invalid input syntax for type integer: ?",
        ),
        ("no such table: nope", "no such table: nope"),
    ],
)
def test_database_messages_keep_no_values(message: str, expected: str) -> None:
    assert scrub_error(message, database=True) == expected


def test_postgres_detail_is_cleaned_whatever_wraps_it() -> None:
    text = "save failed: DETAIL:  Key (email)=(bob@example.com) already exists."
    assert scrub_error(text) == "save failed: DETAIL:  Key (email)=(?) already exists."


@given(st.text(min_size=0, max_size=40))
def test_no_parameter_or_literal_of_a_sqlalchemy_error_is_kept(value: str) -> None:
    secret = "SECRET" + value
    quoted = "'" + secret.replace("'", "''") + "'"
    exc = _db_error(f"SELECT * FROM t WHERE a = {quoted} AND b = ?", (secret, 1), "boom")
    assert "SECRET" not in error_message(exc)


def test_url_query_values_in_messages_keep_only_their_keys() -> None:
    assert scrub_error(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
        "/x?email=bob%40x&page=2 (Caused by NewConnectionError('refused'))"
    ) == (
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
        "/x?email=&page= (Caused by NewConnectionError('refused'))"
    )
    status = "Server error '500 Internal Server Error' for url 'http://h:1/x?email=bob%40x#f'"
    assert (
        scrub_error(status)
        == "Server error '500 Internal Server Error' for url 'http://h:1/x?email='"
    )
    assert scrub_error("what? really? a=b") == "what? really? a=b"


def test_pydantic_validation_errors_lose_the_input_they_echo() -> None:
    class User(pydantic.BaseModel):
        age: int
        email: str

    with pytest.raises(pydantic.ValidationError) as raised:
        User(age="bob@x, input_type=str] x", email=["hunter2"])
    message = error_message(raised.value)
    assert "bob@x" not in message
    assert "hunter2" not in message
    assert "[type=int_parsing, input_value=?, input_type=str]" in message


def test_query_keys_keep_names_and_drop_values() -> None:
    assert query_keys("a=1&b=&c&&d=x=y") == "a=&b=&c=&d="


def test_an_unprintable_exception_gives_a_placeholder() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert error_message(Broken()) == "[REDACTED]"


def _recurse(n: int) -> None:
    if n == 0:
        raise RuntimeError("prompt: a cat in a hat, key sk-abcdefghijklmnopqrstuvwx")
    _recurse(n - 1)


def _caught(n: int) -> BaseException:
    try:
        _recurse(n)
    except RuntimeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_stack_trace_is_frames_only_outermost_first_without_message_or_source() -> None:
    text = redact.stack_trace(_caught(2))
    assert text is not None
    lines = text.splitlines()
    assert lines[0].endswith("in _caught") and lines[-1].endswith("in _recurse")
    assert len(lines) == 4
    assert all(re.fullmatch(r".+test_redact\.py:\d+ in _\w+", line) for line in lines)
    assert "cat" not in text and "sk-" not in text and "raise" not in text


def test_stack_trace_keeps_the_innermost_frames_under_both_caps() -> None:
    text = redact.stack_trace(_caught(100))
    assert text is not None
    first, *frames = text.splitlines()
    assert len(frames) == redact.MAX_STACK_FRAMES
    assert first == f"({101 + 1 - redact.MAX_STACK_FRAMES} outer frames omitted)"
    assert len(text) <= redact.MAX_STACK_CHARS + len(first) + 1


def test_stack_trace_scrubs_secrets_in_paths_and_is_none_without_traceback() -> None:
    code = compile("raise ValueError()", "/srv/app/token=sk-abcdefghijklmnopqrstuvwx/x.py", "exec")
    try:
        exec(code)
    except ValueError as exc:
        text = redact.stack_trace(exc)
    assert text is not None and "sk-abcdef" not in text and "[REDACTED]" in text
    assert redact.stack_trace(ValueError("never raised")) is None
