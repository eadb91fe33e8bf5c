"""W3C Trace Context (``traceparent``/``tracestate``) and correlation ids.

Parsing never raises: malformed, oversized or all-zero values yield None, and the caller starts a
fresh trace.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TypeVar

from .span import RemoteParent, current_span

__all__ = [
    "EXPORTING",
    "extract",
    "format_traceparent",
    "inject",
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


_Carrier = TypeVar("_Carrier", bound=MutableMapping[str, Any])


def inject(carrier: _Carrier) -> _Carrier:
    """Write the current trace context into ``carrier`` (job payload, message headers); returns it.

    Sets ``traceparent`` (W3C, version 00) and, when the trace came with one, ``tracestate``.
    Outside any span the carrier is returned unchanged. Pass what it holds to the worker and
    continue the trace there with ``obs.job(..., context=obs.extract(carrier))``. The sampled flag
    travels too, so a worker keeps or drops the job's spans as the enqueuing request did.
    """
    span = current_span()
    if span is None or not span.trace_id or not span.span_id:
        return carrier
    carrier["traceparent"] = format_traceparent(span.trace_id, span.span_id, span.sampled)
    tracestate = span.local.tracestate if span.local is not None else None
    if tracestate:
        carrier["tracestate"] = tracestate
    return carrier


def extract(carrier: Mapping[str, Any] | None) -> RemoteParent | None:
    """Read the trace context ``inject`` wrote (any W3C ``traceparent``/``tracestate`` pair).

    Keys match case-insensitively (message headers are often re-cased); values may be ``str`` or
    ``bytes``. Returns an opaque context for ``obs.job(..., context=...)``, or None when the
    carrier holds none or an invalid one (the job then starts its own trace). Never raises.
    """
    if not carrier:
        return None
    found: dict[str, bytes] = {}
    for key, value in carrier.items():
        name = key.lower() if isinstance(key, str) else ""
        if name in ("traceparent", "tracestate"):
            if name in found:  # two spellings of one key: ambiguous, as a repeated header
                return None
            if isinstance(value, bytes):
                found[name] = value
            elif isinstance(value, str) and value.isascii():
                found[name] = value.encode("ascii")
            else:
                return None
    return parse_traceparent(found.get("traceparent"), found.get("tracestate"))


def valid_request_id(value: bytes | None) -> str | None:
    """An incoming ``X-Request-ID`` if safe to echo (≤128 printable token chars), else None."""
    if value and _REQUEST_ID.match(value):
        return value.decode("ascii")
    return None
