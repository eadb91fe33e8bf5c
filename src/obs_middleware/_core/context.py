"""W3C Trace Context (``traceparent``/``tracestate``) and correlation ids.

Parsing never raises: malformed, oversized or all-zero values yield None, and the caller starts a
fresh trace.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable

from .span import RemoteParent

__all__ = [
    "EXPORTING",
    "format_traceparent",
    "parse_trace_fields",
    "parse_traceparent",
    "parse_tracestate",
    "valid_request_id",
]

# True while our own exporters make a request: HTTP client instrumentation must not trace it.
EXPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("obs_exporting", default=False)

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_OWS = b" \t"
# Longer input is not parsed at all: 32 members of the longest valid form fit in it only with
# little whitespace, and no HTTP server passes a longer header.
_TRACESTATE_INPUT_MAX = 8192
_TRACESTATE_KEEP = 512  # characters propagated: the spec's minimum, whole members only
_TRACESTATE_MEMBERS = 32
_TRACESTATE_LONG_MEMBER = 128  # the first to go when the whole is over the limit
# The key grammar of the current spec (an "@" anywhere after the first character), which accepts
# every key of the older tenant@system form too.
_MEMBER = re.compile(
    rb"[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]\Z"
)
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-+/=@]{1,128}\Z")


def parse_trace_fields(fields: Iterable[tuple[bytes, bytes]]) -> RemoteParent | None:
    """Parse the trace context of raw header fields (lower-case names, as ASGI passes them).

    More than one ``traceparent`` field makes the context invalid (a fresh trace starts); several
    ``tracestate`` fields are combined in order, as one comma-separated value.
    """
    traceparent: list[bytes] = []
    tracestate: list[bytes] = []
    for name, value in fields:
        if name == b"traceparent":
            traceparent.append(value)
        elif name == b"tracestate":
            tracestate.append(value)
    if len(traceparent) != 1:
        return None
    return parse_traceparent(traceparent[0], b",".join(tracestate) if tracestate else None)


def parse_traceparent(value: bytes | None, tracestate: bytes | None = None) -> RemoteParent | None:
    """Parse a ``traceparent`` header value; None if absent or invalid.

    A comma means several ``traceparent`` fields were combined into one (WSGI servers join
    repeated headers so): invalid, like any other malformed value.
    """
    if not value or len(value) > 256 or b"," in value:
        return None
    m = _TRACEPARENT.match(value.strip(_OWS))
    if m is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    # Version ff is forbidden; version 00 has no trailing fields; later versions may add them.
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return RemoteParent(
        trace_id, span_id, bool(int(flags_hex, 16) & 1), parse_tracestate(tracestate)
    )


def parse_tracestate(value: bytes | None) -> str | None:
    """Validate a ``tracestate`` value for pass-through; None if absent, empty or invalid.

    Empty members (from combining fields) are dropped; more than 32 members or one invalid member
    invalidates the whole value. Over 512 characters, whole members are dropped as the spec says:
    those over 128 characters first, then from the end.
    """
    if not value or len(value) > _TRACESTATE_INPUT_MAX:
        return None
    members = [m for m in (p.strip(_OWS) for p in value.split(b",")) if m]
    if not members or len(members) > _TRACESTATE_MEMBERS:
        return None
    for member in members:
        if _MEMBER.match(member) is None:
            return None
    joined = b",".join(members)
    if len(joined) > _TRACESTATE_KEEP:
        joined = _truncate(members)
        if not joined:
            return None
    return joined.decode("ascii")


def _truncate(members: list[bytes]) -> bytes:
    kept = list(members)
    size = sum(map(len, kept)) + len(kept) - 1
    for i in range(len(kept) - 1, -1, -1):  # long members first, from the end
        if size <= _TRACESTATE_KEEP:
            break
        if len(kept[i]) > _TRACESTATE_LONG_MEMBER:
            size -= len(kept.pop(i)) + 1
    while kept and size > _TRACESTATE_KEEP:
        size -= len(kept.pop()) + 1
    return b",".join(kept)


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """Format a version-00 ``traceparent`` value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def valid_request_id(value: bytes | None) -> str | None:
    """An incoming ``X-Request-ID`` if safe to echo (≤128 printable token chars), else None."""
    if value and _REQUEST_ID.match(value):
        return value.decode("ascii")
    return None
