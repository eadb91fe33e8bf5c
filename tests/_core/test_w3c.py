"""The W3C Trace Context test suite's server-side cases, as parsing tests of ``_core/context.py``.

Taken from ``test/test.py`` of github.com/w3c/trace-context (commit acab820, "Fix tracestate key
grammar tests", STRICT_LEVEL 2, SPEC_LEVEL 1): each case is the header fields the harness sends to
a service, with header names lower-cased as ASGI servers pass them, and what the service must
continue: the caller's trace (its trace id and tracestate) or a fresh trace. Cases about what a
service sends to several callbacks (``AdvancedTest``) are covered by the client-span tests; level
2's random flag is not implemented.
"""

from __future__ import annotations

import pytest

from obs_middleware._core.context import parse_trace_fields

TRACE_ID = 0x12345678901234567890123456789012
PARENT = "00-12345678901234567890123456789012-1234567890123456-00"
FRESH = None  # the service must start a new trace: the caller's context is ignored

Fields = list[tuple[str, str]]


def fields(*pairs: tuple[str, str]) -> Fields:
    return list(pairs)


def parse(headers: Fields) -> tuple[int | None, str | None]:
    """(continued trace id or None, tracestate the service propagates)."""
    remote = parse_trace_fields((n.lower().encode(), v.encode("latin-1")) for n, v in headers)
    return (None, None) if remote is None else (remote.trace_id, remote.tracestate)


def tp(value: str) -> tuple[str, str]:
    return ("traceparent", value)


def ts(value: str) -> tuple[str, str]:
    return ("tracestate", value)


# (test.py's test name, headers, continued trace id or FRESH)
TRACEPARENT_CASES = [
    ("both_traceparent_and_tracestate_missing", [], FRESH),
    ("traceparent_included_tracestate_missing", [tp(PARENT)], TRACE_ID),
    (
        "traceparent_duplicated",
        [
            tp("00-12345678901234567890123456789011-1234567890123456-01"),
            tp("00-12345678901234567890123456789012-1234567890123456-01"),
        ],
        FRESH,
    ),
    ("traceparent_duplicated_same_value", [tp(PARENT), tp(PARENT)], FRESH),
    ("traceparent_header_name_dash", [("trace-parent", PARENT)], FRESH),
    ("traceparent_header_name_dot", [("trace.parent", PARENT)], FRESH),
    ("traceparent_header_name_valid_casing_1", [("TraceParent", PARENT)], TRACE_ID),
    ("traceparent_header_name_valid_casing_2", [("TrAcEpArEnT", PARENT)], TRACE_ID),
    ("traceparent_header_name_valid_casing_3", [("TRACEPARENT", PARENT)], TRACE_ID),
    ("traceparent_version_0x00_trailing_dot", [tp(PARENT + ".")], FRESH),
    (
        "traceparent_version_0x00_trailing_field",
        [tp(PARENT + "-what-the-future-will-be-like")],
        FRESH,
    ),
    ("traceparent_version_0xcc", [tp("cc" + PARENT[2:])], TRACE_ID),
    (
        "traceparent_version_0xcc_trailing_field",
        [tp("cc" + PARENT[2:] + "-what-the-future-will-be-like")],
        TRACE_ID,
    ),
    (
        "traceparent_version_0xcc_trailing_dot",
        [tp("cc" + PARENT[2:] + ".what-the-future-will-be-like")],
        FRESH,
    ),
    ("traceparent_version_0xff", [tp("ff" + PARENT[2:])], FRESH),
    ("traceparent_version_illegal_characters_1", [tp(".0" + PARENT[2:])], FRESH),
    ("traceparent_version_illegal_characters_2", [tp("0." + PARENT[2:])], FRESH),
    ("traceparent_version_too_long_1", [tp("000" + PARENT[2:])], FRESH),
    ("traceparent_version_too_long_2", [tp("0000" + PARENT[2:])], FRESH),
    ("traceparent_version_too_short", [tp("0" + PARENT[2:])], FRESH),
    ("traceparent_trace_id_all_zero", [tp("00-" + "0" * 32 + "-1234567890123456-01")], FRESH),
    (
        "traceparent_trace_id_illegal_characters_1",
        [tp("00-.2345678901234567890123456789012-1234567890123456-01")],
        FRESH,
    ),
    (
        "traceparent_trace_id_illegal_characters_2",
        [tp("00-1234567890123456789012345678901.-1234567890123456-01")],
        FRESH,
    ),
    (
        "traceparent_trace_id_too_long",
        [tp("00-123456789012345678901234567890123-1234567890123456-01")],
        FRESH,
    ),
    (
        "traceparent_trace_id_too_short",
        [tp("00-1234567890123456789012345678901-1234567890123456-01")],
        FRESH,
    ),
    # Not in test.py: the grammar's HEXDIGLC makes upper-case hex invalid.
    ("uppercase_hex", [tp("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")], FRESH),
    ("traceparent_parent_id_all_zero", [tp(PARENT[:36] + "0" * 16 + "-01")], FRESH),
    (
        "traceparent_parent_id_illegal_characters_1",
        [tp(PARENT[:36] + ".234567890123456-01")],
        FRESH,
    ),
    (
        "traceparent_parent_id_illegal_characters_2",
        [tp(PARENT[:36] + "123456789012345.-01")],
        FRESH,
    ),
    ("traceparent_parent_id_too_long", [tp(PARENT[:36] + "12345678901234567-01")], FRESH),
    ("traceparent_parent_id_too_short", [tp(PARENT[:36] + "123456789012345-01")], FRESH),
    ("traceparent_trace_flags_illegal_characters_1", [tp(PARENT[:-2] + ".0")], FRESH),
    ("traceparent_trace_flags_illegal_characters_2", [tp(PARENT[:-2] + "0.")], FRESH),
    ("traceparent_trace_flags_too_long", [tp(PARENT[:-2] + "001")], FRESH),
    ("traceparent_trace_flags_too_short", [tp(PARENT[:-2] + "1")], FRESH),
    ("traceparent_ows_handling_1", [tp(" " + PARENT)], TRACE_ID),
    ("traceparent_ows_handling_2", [tp("\t" + PARENT)], TRACE_ID),
    ("traceparent_ows_handling_3", [tp(PARENT + " ")], TRACE_ID),
    ("traceparent_ows_handling_4", [tp(PARENT + "\t")], TRACE_ID),
    ("traceparent_ows_handling_5", [tp("\t " + PARENT + " \t")], TRACE_ID),
    ("tracestate_included_traceparent_missing", [ts("foo=1,bar=2")], FRESH),
]


@pytest.mark.parametrize(
    ("headers", "trace_id"),
    [pytest.param(h, t, id=name) for name, h, t in TRACEPARENT_CASES],
)
def test_traceparent_continues_the_trace_only_when_valid(
    headers: Fields, trace_id: int | None
) -> None:
    assert parse(headers)[0] == trace_id


KEY = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"  # test_tracestate_all_allowed_characters
VALUE = "".join(map(chr, [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]))
COUNTED = [",".join(f"bar{i:02}={i:02}" for i in range(a, b)) for a, b in ((1, 11), (11, 21))]
THIRTY_TWO = [*COUNTED, ",".join(f"bar{i}={i}" for i in range(21, 31)), "bar31=31,bar32=32"]
THIRTY_THREE = [*THIRTY_TWO[:3], "bar31=31,bar32=32,bar33=33"]

# (test.py's test name, tracestate fields after a valid traceparent, tracestate propagated)
TRACESTATE_CASES = [
    ("tracestate_included_traceparent_included", ["foo=1,bar=2"], "foo=1,bar=2"),
    ("tracestate_header_name_valid_casing", ["foo=1"], "foo=1"),
    ("tracestate_empty_header", [""], None),
    ("tracestate_empty_header_after", ["foo=1", ""], "foo=1"),
    ("tracestate_empty_header_before", ["", "foo=1"], "foo=1"),
    (
        "tracestate_multiple_headers_different_keys",
        ["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
        "foo=1,bar=2,rojo=1,congo=2,baz=3",
    ),
    ("tracestate_duplicated_keys_same_value", ["foo=1,foo=1"], "foo=1,foo=1"),
    ("tracestate_duplicated_keys_other_value", ["foo=1,foo=2"], "foo=1,foo=2"),
    ("tracestate_duplicated_keys_in_two_headers", ["foo=1", "foo=1"], "foo=1,foo=1"),
    ("tracestate_duplicated_keys_other_value_in_two_headers", ["foo=1", "foo=2"], "foo=1,foo=2"),
    ("tracestate_all_allowed_characters", [f"{KEY}={VALUE}"], f"{KEY}={VALUE}"),
    (
        "tracestate_all_allowed_characters_vendor",
        [f"{KEY}@a-z0-9_-*/={VALUE}"],
        f"{KEY}@a-z0-9_-*/={VALUE}",
    ),
    ("tracestate_ows_handling_spaces", ["foo=1 \t , \t bar=2, \t baz=3"], "foo=1,bar=2,baz=3"),
    ("tracestate_ows_handling_tabs", ["foo=1\t \t,\t \tbar=2,\t \tbaz=3"], "foo=1,bar=2,baz=3"),
    ("tracestate_ows_handling_leading_space", [" foo=1"], "foo=1"),
    ("tracestate_ows_handling_leading_tab", ["\tfoo=1"], "foo=1"),
    ("tracestate_ows_handling_trailing_space", ["foo=1 "], "foo=1"),
    ("tracestate_ows_handling_trailing_tab", ["foo=1\t"], "foo=1"),
    ("tracestate_ows_handling_both", ["\t foo=1 \t"], "foo=1"),
    ("tracestate_key_illegal_characters_space", ["foo =1"], None),
    ("tracestate_key_illegal_characters_uppercase", ["FOO=1"], None),
    ("tracestate_key_illegal_characters_dot", ["foo.bar=1"], None),
    ("tracestate_key_vendor_trailing_at", ["foo@=1,bar=2"], "foo@=1,bar=2"),
    ("tracestate_key_vendor_leading_at", ["@foo=1,bar=2"], None),
    ("tracestate_key_vendor_double_at", ["foo@@bar=1,bar=2"], "foo@@bar=1,bar=2"),
    ("tracestate_key_vendor_two_ats", ["foo@bar@baz=1,bar=2"], "foo@bar@baz=1,bar=2"),
    ("tracestate_member_count_limit_32", THIRTY_TWO, ",".join(THIRTY_TWO)),
    ("tracestate_member_count_limit_33", THIRTY_THREE, None),
    ("tracestate_key_length_256", ["foo=1", "z" * 256 + "=1"], "foo=1," + "z" * 256 + "=1"),
    ("tracestate_key_length_257", ["foo=1", "z" * 257 + "=1"], None),
    (
        "tracestate_key_length_tenant_241_vendor_14",
        ["foo=1", "t" * 241 + "@" + "v" * 14 + "=1"],
        "foo=1," + "t" * 241 + "@" + "v" * 14 + "=1",
    ),
    (
        "tracestate_key_length_tenant_242",
        ["foo=1", "t" * 242 + "@v=1"],
        "foo=1," + "t" * 242 + "@v=1",
    ),
    (
        "tracestate_key_length_vendor_15",
        ["foo=1", "t@" + "v" * 15 + "=1"],
        "foo=1,t@" + "v" * 15 + "=1",
    ),
    ("tracestate_value_illegal_characters_equals", ["foo=bar=baz"], None),
    ("tracestate_value_illegal_characters_empty", ["foo=,bar=3"], None),
]


@pytest.mark.parametrize(
    ("tracestates", "expected"),
    [pytest.param(s, e, id=name) for name, s, e in TRACESTATE_CASES],
)
def test_tracestate_is_combined_validated_and_propagated(
    tracestates: list[str], expected: str | None
) -> None:
    headers = [tp(PARENT), *map(ts, tracestates)]
    assert parse(headers) == (TRACE_ID, expected)  # an invalid tracestate never loses the parent


def test_tracestate_header_with_wrong_name_is_not_read() -> None:
    assert parse([tp(PARENT), ("trace-state", "foo=1"), ("trace.state", "foo=1")]) == (
        TRACE_ID,
        None,
    )


def test_tracestate_over_512_characters_drops_long_members_then_from_the_end() -> None:
    long = "long=" + "x" * 200  # over 128 characters: the first to go
    small = [f"k{i:02}=" + "v" * 40 for i in range(12)]  # 44 characters each
    headers = [tp(PARENT), ts(",".join(small[:6])), ts(long), ts(",".join(small[6:]))]
    # 12 small members take 539 characters with their commas: one more must go, from the end.
    assert parse(headers) == (TRACE_ID, ",".join(small[:11]))
