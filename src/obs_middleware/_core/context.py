"""W3C Trace Context (``traceparent``/``tracestate``) and correlation ids.

Parsing never raises: malformed, oversized or all-zero values yield None, and the caller starts a
fresh trace.
"""

from __future__ import annotations

import re

from .span import RemoteParent

__all__ = [
    "format_traceparent",
    "parse_traceparent",
    "parse_tracestate",
    "valid_request_id",
]

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_TRACESTATE_MAX = 512
_TRACESTATE_MEMBERS = 32
_MEMBER = re.compile(
    rb"\s*(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    rb"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]\s*\Z"
)
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-+/=@]{1,128}\Z")


def parse_traceparent(value: bytes | None, tracestate: bytes | None = None) -> RemoteParent | None:
    """Parse a ``traceparent`` header value; None if absent or invalid."""
    if not value or len(value) > 256:
        return None
    m = _TRACEPARENT.match(value.strip())
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
    """Validate a ``tracestate`` value for pass-through; None if absent, oversized or invalid."""
    if not value or len(value) > _TRACESTATE_MAX:
        return None
    members = [m for m in value.split(b",") if m.strip()]
    if not members or len(members) > _TRACESTATE_MEMBERS:
        return None
    if not all(_MEMBER.match(m) for m in members):
        return None
    return b",".join(m.strip() for m in members).decode("ascii")


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """Format a version-00 ``traceparent`` value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def valid_request_id(value: bytes | None) -> str | None:
    """An incoming ``X-Request-ID`` if safe to echo (≤128 printable token chars), else None."""
    if value and _REQUEST_ID.match(value):
        return value.decode("ascii")
    return None
