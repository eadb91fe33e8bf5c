"""The OTLP exporter's record path: span records as the SDK's ``ReadableSpan`` objects, encoded
by the SDK (``encode_spans``); records made valid for protobuf first (``encodable``). The span
path (``_otlp_proto``) is held equal to it by a property test.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from .._json import json_default, jsonable
from .._record import FIXED_KEYS, IDENTITY_KEYS, Record
from .._version import __version__
from ._otlp_genai import with_genai
from ._otlp_proto import RENAMED as _RENAMED

__all__ = ["SCOPE", "Times", "attributes", "encodable", "to_otel_spans"]

SCOPE = InstrumentationScope("obs_middleware", __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
# Record keys carried by the span itself (ids, times, status) rather than as attributes: the
# fixed keys not renamed into an attribute, and the kind and events.
# The identity keys live in the resource (encoded once), never per span.
_STRUCTURAL = (
    frozenset(FIXED_KEYS).difference(_RENAMED) | {"span.kind", "events"} | frozenset(IDENTITY_KEYS)
)


_SCALARS = (str, bool, int, float)


class Times:
    """RFC 3339 record times back to Unix ns, parsing each distinct second once."""

    __slots__ = ("epoch", "prefix")

    def __init__(self) -> None:
        self.prefix = ""
        self.epoch = 0

    def ns(self, text: str) -> int:
        """Unix ns of an RFC 3339 time."""
        prefix = text[:19]
        if prefix != self.prefix:
            self.prefix = prefix
            self.epoch = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
        frac = text[20:-1] if len(text) > 20 else ""
        return self.epoch * 1_000_000_000 + (int(frac.ljust(9, "0")[:9]) if frac else 0)


def _value(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
        # OTLP arrays are homogeneous: mixed ones become strings.
        return list(value) if len({type(v) for v in value}) <= 1 else [str(v) for v in value]
    if isinstance(value, dict):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def attributes(rec: Record) -> dict[str, Any]:
    """A record's attributes as OTLP names them (renamed; no structure, no identity, no None)."""
    attrs: dict[str, Any] = {}
    for key, value in rec.items():
        if value is None or key in _STRUCTURAL:
            continue
        attrs[_RENAMED.get(key, key)] = _value(value)
    return attrs


def to_otel_spans(
    records: Sequence[Record], resource_for: Any, times: Times | None = None
) -> list[ReadableSpan]:
    """Convert span records to SDK ``ReadableSpan`` objects (event records are skipped).

    ``resource_for(service, environment)`` returns the ``Resource`` for a record.
    """
    times = times or Times()
    spans: list[ReadableSpan] = []
    for rec in records:
        if rec.get("type") != "span":
            continue
        trace_id = int(rec["trace_id"], 16)
        context = SpanContext(trace_id, int(rec["span_id"], 16), False, _SAMPLED)
        parent_hex = rec.get("parent_id")
        parent = SpanContext(trace_id, int(parent_hex, 16), True, _SAMPLED) if parent_hex else None
        start = times.ns(rec["start"])
        end = start + round((rec.get("duration_ms") or 0.0) * 1_000_000)
        status_name = rec.get("status") or "ok"
        attrs = with_genai(rec, attributes(rec), _value)  # the GenAI conventions' names too
        events = [
            Event(
                ev.get("name", "event"),
                {
                    k: _value(v)
                    for k, v in ev.items()
                    if k not in ("name", "time") and v is not None
                },
                times.ns(ev["time"]) if ev.get("time") else start,
            )
            for ev in rec.get("events") or ()
            if isinstance(ev, dict)
        ]
        if status_name == "ok":
            status = Status(StatusCode.OK)
        elif status_name == "error":
            message = rec.get("error_message") or ""
            status = Status(StatusCode.ERROR, f"{rec.get('error_type') or 'error'}: {message}")
            events.append(
                Event(
                    "exception",
                    {"exception.type": rec.get("error_type") or "", "exception.message": message},
                    end,
                )
            )
        else:
            status = Status(StatusCode.UNSET)
            attrs["obs.status"] = status_name
        spans.append(
            ReadableSpan(
                rec["name"],
                context=context,
                parent=parent,
                resource=resource_for(rec.get("service"), rec.get("environment")),
                attributes=attrs,
                events=events,
                kind=_KINDS.get(rec.get("span.kind") or "", SpanKind.INTERNAL),
                status=status,
                start_time=start,
                end_time=end,
                instrumentation_scope=SCOPE,
            )
        )
    return spans


def encodable(records: Sequence[Record]) -> Sequence[Record]:
    """``records``, or copies where protobuf would refuse a value (text with lone surrogates,
    integers past 64 bits: the SDK drops the attribute, or the whole batch): made valid."""
    try:  # one C call per batch finds them
        orjson.dumps(records, json_default)
    except TypeError:
        return [jsonable(rec, strict=True) for rec in records]
    return records
