"""Protobuf wire pieces of OTLP requests, written by hand: varints, length prefixes, ``AnyValue``
and ``KeyValue`` messages as the SDK's encoder writes them, the ``Resource`` and
``InstrumentationScope`` messages, and the ``ExportTraceServiceRequest`` framing of encoded spans.
Shared by the span path (``_otlp_proto``), the log records (``_otlp_logs``) and the exporter.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MASK64",
    "SMALL",
    "any_value",
    "double",
    "key_value",
    "length",
    "request",
    "resource_message",
    "scope_message",
    "varint",
    "varints",
]

MASK64 = (1 << 64) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of ``n`` (a negative ``n`` as its 64-bit two's complement)."""
    if n < 0:
        n &= MASK64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints of lengths below SMALL, by index (every length of a usual field).
SMALL = 4096
varints = [varint(i) for i in range(SMALL)]


def length(n: int) -> bytes:
    """The varint of a field's length (precomputed below ``SMALL``)."""
    return varints[n] if n < SMALL else varint(n)


double = struct.Struct("<d").pack  # a float's 8 bytes, little-endian


def any_value(value: Any) -> bytes:  # noqa: PLR0911 - one return per AnyValue type
    """The ``AnyValue`` message of ``value``, as the SDK's encoder writes it.

    Raises ``ValueError`` or ``TypeError`` where the SDK's encoder raises (it drops the attribute).
    """
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        data = value.encode()
        return b"\x0a" + length(len(data)) + data
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"integer out of int64 range: {value}")
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + double(value)
    if isinstance(value, bytes):
        return b"\x3a" + length(len(value)) + value
    if isinstance(value, Sequence):
        body = b"".join([b"\x0a" + length(len(v)) + v for v in map(any_value, value)])
        return b"\x2a" + length(len(body)) + body
    if isinstance(value, Mapping):
        body = b"".join(
            [
                b"\x0a" + length(len(kv)) + kv
                for kv in (key_value(str(k), v) for k, v in value.items())
            ]
        )
        return b"\x32" + length(len(body)) + body
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """The ``KeyValue`` message of one attribute."""
    data = key.encode()
    av = any_value(value)
    # An empty key is protobuf's default: left out, as the SDK's encoder leaves it.
    head = b"\x0a" + length(len(data)) + data if data else b""
    return head + b"\x12" + length(len(av)) + av


def _attributes(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    # Attributes as repeated ``tag`` fields; one the SDK would drop is left out.
    parts = []
    for key, value in attributes.items():
        try:
            kv = key_value(key, value)
        except (TypeError, ValueError):
            continue
        parts.append(tag + length(len(kv)) + kv)
    return b"".join(parts)


def resource_message(attributes: Mapping[str, Any]) -> bytes:
    """The ``Resource`` message of a resource's attributes."""
    return _attributes(b"\x0a", attributes)


def scope_message(name: str, version: str | None) -> bytes:
    """The ``InstrumentationScope`` message (name, version)."""
    data = name.encode()
    out = b"\x0a" + length(len(data)) + data if data else b""
    if version:
        v = version.encode()
        out += b"\x12" + length(len(v)) + v
    return out


def request(resource: bytes, scope: bytes, spans: Sequence[str], schema_url: str = "") -> bytes:
    """The ``ExportTraceServiceRequest`` of one resource and scope holding ``spans``.

    ``resource`` and ``scope``: messages (``resource_message``, ``scope_message``); ``spans``:
    ``ScopeSpans.spans`` entries as ``SpanEncoder.encode`` gives them (bytes as latin-1 text).
    """
    span_bytes = sum(map(len, spans))
    scope_field = b"\x0a" + length(len(scope)) + scope
    scope_spans = len(scope_field) + span_bytes
    resource_field = b"\x0a" + length(len(resource)) + resource
    schema = b""
    if schema_url:
        url = schema_url.encode()
        schema = b"\x1a" + length(len(url)) + url
    scope_spans_field = b"\x12" + length(scope_spans)
    resource_spans = len(resource_field) + len(scope_spans_field) + scope_spans + len(schema)
    head = b"\x0a" + length(resource_spans) + resource_field + scope_spans_field + scope_field
    parts = [head.decode("latin-1"), *spans, schema.decode("latin-1")]
    return "".join(parts).encode("latin-1")
