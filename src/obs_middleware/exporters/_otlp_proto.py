"""OTLP trace requests (``ExportTraceServiceRequest`` protobuf) written from finished spans.

The OTLP exporter's span path: each finished span becomes the bytes of one ``ScopeSpans.spans``
entry, without records, SDK ``ReadableSpan`` objects or protobuf message objects (the SDK's encoding
was the export's bottleneck: BENCHMARKS.md). What a span records is exactly what the record
path gives (``_otlp_records.to_otel_spans`` over ``to_records``, encoded by the SDK): the same
attributes in the same order (renamed to current semantic conventions, ``error.type``,
``enduser.id``, ``obs.tier``, ``obs.request_id``, ``obs.status``), times at µs precision, the status
and the ``exception`` event, and an AI span's ``gen_ai.*`` attributes (``_otlp_genai``). Two fields
say more than the record path can: ``flags`` marks a parent as remote only when it came over the
wire (the record path marks every parent remote), and ``trace_state`` carries the ``tracestate``
received with it. A test decodes the bytes with the official generated classes and compares them
with the SDK's on arbitrary spans.

Cost: encoded (key, value) pairs of attributes are cached per key (bounded), so a low-cardinality
attribute costs one dict lookup, and text met once (a request id) one concatenation to a head
cached per key and length; what a trace's spans share is encoded once per batch; ids and times
are packed with ``struct``; each span is one ``b"".join``. A span this path does not take
exactly as the record path would (an attribute named like a fixed or renamed key or
``gen_ai.*``, a value of an unusual type, text with lone surrogates, an integer past 64 bits) is
handed to the exporter's fallback: the record path for that one span.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .._core import span as _span
from .._record import FIXED_KEYS, IDENTITY_KEYS
from ._otlp_genai import OPERATION, TRIGGER, TWINS, operation_name, twin_value
from ._otlp_wire import INT64_MAX as _INT64_MAX
from ._otlp_wire import INT64_MIN as _INT64_MIN
from ._otlp_wire import MASK64 as _MASK64
from ._otlp_wire import SMALL as _SMALL
from ._otlp_wire import double as _DOUBLE
from ._otlp_wire import length as _len
from ._otlp_wire import varint, varints

__all__ = ["RENAMED", "SpanEncoder"]

# Record keys renamed to current semantic conventions on the way to OTLP.
RENAMED: dict[str, str] = {
    "http.method": "http.request.method",
    "http.status_code": "http.response.status_code",
    "http.request_size": "http.request.body.size",
    "http.response_size": "http.response.body.size",
    "error_type": "error.type",
    "user_id": "enduser.id",
    "tier": "obs.tier",
    "request_id": "obs.request_id",
}
# Attribute keys whose span takes the fallback: fixed keys (the record drops them), keys the
# record path reads as structure, and every key an attribute is renamed to (two attributes
# would then share a name: the record path keeps the last value at the first one's place).
_SPECIAL = (
    frozenset(FIXED_KEYS)
    | frozenset(IDENTITY_KEYS)
    | {"span.kind", "events", "obs.status"}
    | set(RENAMED.values())
)

# ``ScopeSpans.spans`` field headers (tag and length) of spans below _SMALL bytes.
_SPAN_HEADS = [b"\x12" + v for v in varints]


# Span fields 1 (trace_id) and 2 (span_id), with 4 (parent_span_id); 7 and 8 (start/end).
_IDS = struct.Struct(">HQQHQ").pack
_IDS_PARENT = struct.Struct(">HQQHQHQ").pack
_TIMES = struct.Struct("<BQBQ").pack
_EVENT_TIME = struct.Struct("<BQ").pack
_KINDS = {
    "internal": b"\x30\x01",
    "server": b"\x30\x02",
    "client": b"\x30\x03",
    "producer": b"\x30\x04",
    "consumer": b"\x30\x05",
}
_INTERNAL = _KINDS["internal"]
_STATUS_OK = b"\x7a\x02\x18\x01"  # Status{code: OK}
_STATUS_UNSET = b"\x7a\x00"  # Status{} (the SDK writes it present and empty)
# Span.flags (field 16, fixed32): "has is-remote" always, "is remote" for a parent received.
_FLAGS = b"\x85\x01\x00\x01\x00\x00"
_FLAGS_REMOTE = b"\x85\x01\x00\x03\x00\x00"
_FLAG_BITS = 0x100
_FLAG_BITS_REMOTE = 0x300
_EXCEPTION = b"\x12\x09exception"
_SCALAR_TYPES = frozenset((str, bool, int, float))

# Cache bounds: keys cached, values cached per key and type, longest text value cached.
_MAX_KEYS = 512
_MAX_VALUES = 128
_MAX_CACHED_TEXT = 256
_MAX_NAMES = 1024
_EXACT_US = 1 << 40
_PREFIXED = 128  # text values shorter than this (bytes) have their field's head cached


class _Fallback(Exception):
    """Raised where a span takes the record path."""


# -- spans ---------------------------------------------------------------------------------------
# A key's cache entry: its ``KeyValue.key`` field, its encoded span-attribute fields by text, int
# and float value (apart: 1 == 1.0 == True as dict keys), and its GenAI twins (each twin's encoded
# name and ``TWINS`` rule), whose fields a cached field includes, and the heads of its text
# fields by the text's length in bytes (``_text_head``).
_Entry = tuple[
    bytes,
    dict[str, bytes],
    dict[int, bytes],
    dict[float, bytes],
    tuple[tuple[bytes, str], ...],
    dict[int, bytes],
]
Fallback = Callable[["_span.Span", int, "str | None"], "bytes | None"]


def _entry(name: str, twins: tuple[tuple[str, str], ...] = ()) -> _Entry:
    data = name.encode()
    return (
        b"\x0a" + _len(len(data)) + data,
        {},
        {},
        {},
        tuple((_entry(twin)[0], rule) for twin, rule in twins),
        {},
    )


_OPERATION = _entry(OPERATION)[0]


def _text(value: str) -> bytes:
    data = value.encode()
    return b"\x0a" + _len(len(data)) + data


def _scalar(value: Any, kind: type) -> bytes:
    # The AnyValue of an exact str, bool, int or float (an int past int64: the record path).
    if kind is str:
        return _text(value)
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _Fallback
        return b"\x18" + varint(value)
    return b"\x21" + _DOUBLE(value)


def _value(value: Any) -> bytes:
    """The AnyValue the record path gives a value (``_otlp_records._value``): usual types."""
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return _scalar(value, kind)
    if kind is list or kind is tuple:
        kinds = set(map(type, value))
        if not kinds <= _SCALAR_TYPES:
            raise _Fallback
        if len(kinds) > 1:  # OTLP arrays are homogeneous: a mixed one becomes text
            values = [_text(str(v)) for v in value]
        else:
            values = [_scalar(v, kind) for kind in kinds for v in value]
        body = b"".join([b"\x0a" + _len(len(v)) + v for v in values])
        return b"\x2a" + _len(len(body)) + body
    if kind is dict:
        try:
            text = orjson.dumps(value)
        except TypeError:  # what orjson needs a default for: the record path decides
            raise _Fallback from None
        return b"\x0a" + _len(len(text)) + text
    raise _Fallback


def _text_head(key: bytes, n: int) -> bytes:
    # What precedes the ``n`` bytes of a text value in the span attribute field of ``key``.
    vn = _len(n)
    inner = n + 1 + len(vn)
    vi = _len(inner)
    return b"\x4a" + _len(len(key) + 1 + len(vi) + inner) + key + b"\x12" + vi + b"\x0a" + vn


def _field(tag: bytes, key: bytes, value: bytes) -> bytes:
    kv = key + b"\x12" + _len(len(value)) + value
    return tag + _len(len(kv)) + kv


class SpanEncoder:
    """Finished spans to OTLP ``Span`` fields (``ScopeSpans.spans`` entries), with caches.

    ``fallback(span, flags, trace_state)`` encodes a span this encoder leaves to the record path
    (the whole field, or None when that fails too). One encoder per exporter; the export
    worker's thread only.
    """

    def __init__(self, fallback: Fallback) -> None:
        self.fallback = fallback
        self.fallbacks = 0  # spans handed to ``fallback`` (tests read it)
        self._keys: dict[str, _Entry] = {}
        self._names: dict[str, bytes] = {}
        self._cached = 0
        self._error_type = _entry("error.type")
        self._user = _entry("enduser.id")
        self._tier = _entry("obs.tier")
        self._request = _entry("obs.request_id")
        self._status = _entry("obs.status")
        self._genai_operations: dict[tuple[Any, Any], bytes] = {}

    def encode(
        self,
        items: Iterable[_span.Span | _span.Event],
        events: list[_span.Event] | None = None,
    ) -> list[str]:
        """The ``ScopeSpans.spans`` field of each span, as latin-1 text (point events are
        appended to ``events`` when given, else skipped).

        Text, so the delivery layer can spool a batch as JSON; ``request`` joins them.
        """
        anchor = _span.wall_anchor_ns
        span_type = _span.Span
        keys = self._keys
        names = self._names
        operations = self._genai_operations
        heads = _SPAN_HEADS
        ids, ids_parent, times, kinds, mask = _IDS, _IDS_PARENT, _TIMES, _KINDS, _MASK64
        traces: dict[_span.LocalTrace, bytes] = {}  # per batch: what a trace's spans share
        out: list[str] = []
        append = out.append
        for item in items:
            if type(item) is not span_type:
                if events is not None:
                    events.append(item)  # type: ignore[arg-type]
                continue
            local = item.local
            pid = item.parent_id
            remote = bool(pid) and local.root_id == item.span_id
            try:
                name = item.name
                nf = names.get(name)
                if nf is None:
                    nf = self._name(name)
                tid = item.trace_id
                start_ns = item.start_ns
                start = (anchor + start_ns) // 1000 * 1000
                us = (item.end_ns - start_ns) // 1000
                # The record path's float ms, back to ns: exactly ``us`` µs below 2**40 µs (~12
                # days; the float's error stays under 0.5 ns there), without the float and round.
                end = start + (us * 1000 if 0 <= us < _EXACT_US else round(us / 1000 * 1_000_000))
                p = [
                    ids_parent(0x0A10, tid >> 64, tid & mask, 0x1208, item.span_id, 0x2208, pid)
                    if pid
                    else ids(0x0A10, tid >> 64, tid & mask, 0x1208, item.span_id),
                    nf,
                    kinds.get(item.kind, _INTERNAL),
                    times(0x39, start, 0x41, end),
                ]
                add = p.append
                error_type = item.error_type
                if error_type is not None:
                    add(self._local(self._error_type, error_type))
                shared = traces.get(local)
                if shared is None:
                    shared = traces[local] = self._trace(local)
                add(shared)
                attrs = item.attrs
                for key, value in attrs.items():
                    entry = keys.get(key)
                    if entry is None:
                        entry = self._key(key)
                    kind = type(value)
                    if kind is str:
                        f = entry[1].get(value)
                    elif kind is int:
                        f = entry[2].get(value)
                    elif kind is float:
                        f = entry[3].get(value)
                    elif value is None:
                        continue
                    else:
                        f = None
                    add(f if f is not None else self._attribute(entry, value, kind))
                if TRIGGER in attrs:  # an AI span: its gen_ai.operation.name
                    try:
                        f = operations.get((attrs.get("ai.operation"), attrs.get("ai.modality")))
                    except TypeError:  # an unhashable value: not cached
                        f = None
                    add(f if f is not None else self._genai_operation(attrs))
                status = item.status
                if status == "ok" or status is None or status == "":
                    status_field = _STATUS_OK
                elif status == "error":
                    status_field = self._error(item, error_type, end, add)
                elif type(status) is str:
                    add(self._local(self._status, status))
                    status_field = _STATUS_UNSET
                else:
                    raise _Fallback
                if item.events:
                    # Before the exception event (the record path appends that one last).
                    p.insert(len(p) - (status == "error"), self._events(item.events, anchor))
                add(status_field)
                add(_FLAGS_REMOTE if remote else _FLAGS)
                body = b"".join(p)
                n = len(body)
                data = heads[n] + body if n < _SMALL else b"\x12" + varint(n) + body
            except (_Fallback, ArithmeticError, struct.error, TypeError, ValueError):
                self.fallbacks += 1
                fb = self.fallback(
                    item,
                    _FLAG_BITS_REMOTE if remote else _FLAG_BITS,
                    local.tracestate if isinstance(local.tracestate, str) else None,
                )
                if fb is None:
                    continue
                data = fb
            append(data.decode("latin-1"))
        return out

    # -- pieces off the hot path ------------------------------------------------------------------
    def _name(self, name: Any) -> bytes:
        if type(name) is not str:
            raise _Fallback
        field = b"\x2a" + _text(name)[1:]
        if len(self._names) < _MAX_NAMES:
            self._names[name] = field
        return field

    def _key(self, key: str) -> _Entry:
        if type(key) is not str or key in _SPECIAL:
            raise _Fallback
        if key.startswith("gen_ai."):  # the span's own: it wins over a twin (record path)
            raise _Fallback
        entry = _entry(RENAMED.get(key, key), TWINS.get(key, ()))
        if len(self._keys) < _MAX_KEYS:
            self._keys[key] = entry
        return entry

    def _attribute(self, entry: _Entry, value: Any, kind: type) -> bytes:
        # An attribute field not in the cache: encoded, and cached if its value is likely to recur.
        if kind is str:
            data: bytes = value.encode()
            n = len(data)
            head = entry[5].get(n)
            if head is None:  # cached by length: text met once (a request id) is one concatenation
                head = _text_head(entry[0], n)
                if n < _PREFIXED:
                    entry[5][n] = head
            field = head + data
        else:
            field = _field(b"\x4a", entry[0], _value(value))
        for name, rule in entry[4]:  # the GenAI twins, cached with their source
            twinned = twin_value(rule, value)
            if twinned is not None:
                field += _field(b"\x4a", name, _value(twinned))
        if self._cached < _MAX_KEYS * 8:
            if kind is str:
                cache: dict[Any, bytes] | None = entry[1]
                if len(value) > _MAX_CACHED_TEXT:
                    cache = None
            elif kind is int:
                cache = entry[2]
            elif kind is float and value and not math.isnan(value):  # not ±0.0 (equal), not NaN
                cache = entry[3]
            else:
                cache = None
            if cache is not None and len(cache) < _MAX_VALUES:
                cache[value] = field
                self._cached += 1
        return field

    def _genai_operation(self, attrs: dict[str, Any]) -> bytes:
        # ``gen_ai.operation.name`` reads two attributes: encoded once per such pair.
        operation = attrs.get("ai.operation")
        modality = attrs.get("ai.modality")
        field = (
            _field(b"\x4a", _OPERATION, _text(operation_name(operation, modality)))
            if type(operation) is str
            else b""
        )
        # Values equal across types (1, 1.0, True) are not text: they give the same field.
        if len(self._genai_operations) < _MAX_VALUES:
            with contextlib.suppress(TypeError):  # an unhashable value
                self._genai_operations[operation, modality] = field
        return field

    def _trace(self, local: _span.LocalTrace) -> bytes:
        # The fields a trace's spans share: its user, tier and request id attributes (in the
        # record path's order, after ``error.type``), and its ``tracestate``.
        user, tier, request_id = local.user_id, local.tier, local.request_id
        if type(user) is str and type(tier) is str and type(request_id) is str:
            # The usual trace, inlined (a call per field cost ~6 % of the export): a user and
            # tier that recur, a request id met once (its bytes after a head cached by length).
            f = self._user[1].get(user)
            if f is None:
                f = self._attribute(self._user, user, str)
            g = self._tier[1].get(tier)
            if g is None:
                g = self._attribute(self._tier, tier, str)
            data = request_id.encode()
            head = self._request[5].get(len(data))
            h = head + data if head is not None else self._attribute(self._request, request_id, str)
            trace_state = local.tracestate
            if not trace_state:
                return f + g + h
            if type(trace_state) is not str:
                raise _Fallback
            return b"".join((f, g, h, b"\x1a", _text(trace_state)[1:]))
        parts = []
        for entry, value in (
            (self._user, local.user_id),
            (self._tier, local.tier),
            (self._request, local.request_id),
        ):
            if value is not None:
                parts.append(self._local(entry, value))
        trace_state = local.tracestate
        if trace_state:
            if type(trace_state) is not str:
                raise _Fallback
            parts.append(b"\x1a" + _text(trace_state)[1:])
        return b"".join(parts)

    def _local(self, entry: _Entry, value: Any) -> bytes:
        # A field of the trace (user, tier, request id) or the span's error type or status.
        kind = type(value)
        if kind is str:
            f = entry[1].get(value)
            if f is not None:
                return f
        return self._attribute(entry, value, kind)

    def _events(self, events: list[tuple[str, int, dict[str, Any]]], anchor: int) -> bytes:
        parts = []
        for name, t, fields in events:
            if type(name) is not str or "name" in fields or "time" in fields:
                raise _Fallback
            body = [_EVENT_TIME(0x09, (anchor + t) // 1000 * 1000), b"\x12" + _text(name)[1:]]
            for key, value in fields.items():
                if value is None:
                    continue
                if type(key) is not str:
                    raise _Fallback
                body.append(_field(b"\x1a", _text(key), _value(value)))
            event = b"".join(body)
            parts.append(b"\x5a" + _len(len(event)) + event)
        return b"".join(parts)

    def _error(
        self, item: _span.Span, error_type: Any, end: int, add: Callable[[bytes], None]
    ) -> bytes:
        # The ERROR status ("Type: message") and the ``exception`` event, added last; the status.
        message = item.error_message
        if not (error_type is None or type(error_type) is str) or not (
            message is None or type(message) is str
        ):
            raise _Fallback
        message = message or ""
        event = b"".join(
            [
                _EVENT_TIME(0x09, end),
                _EXCEPTION,
                _field(b"\x1a", _text("exception.type"), _text(error_type or "")),
                _field(b"\x1a", _text("exception.message"), _text(message)),
            ]
        )
        add(b"\x5a" + _len(len(event)) + event)
        status = _text(f"{error_type or 'error'}: {message}")
        body = b"\x12" + status[1:] + b"\x18\x02"
        return b"\x7a" + _len(len(body)) + body
