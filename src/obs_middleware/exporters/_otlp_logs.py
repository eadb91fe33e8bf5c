"""Point events (``obs.emit``, job lifecycle, application logs) as OTLP log records.

OTLP has no span for a point event; each becomes one ``LogRecord`` (``/v1/logs``, or the
``LogsService`` over gRPC), encoded with opentelemetry-proto's generated classes (events are few):

- time: the event's (µs); ``trace_id``/``span_id`` of the span it happened in (none outside a
  trace), flags sampled;
- an event named ``log`` (an application log record, made by the logging handler) is a log:
  ``body`` = ``log.message`` (already scrubbed), ``severity_text``/``severity_number`` from
  ``log.level`` as OpenTelemetry's Python logging bridge maps them (DEBUG 5, INFO 9, WARNING 13
  as ``WARN``, ERROR 17, CRITICAL 21 as ``FATAL``), ``log.logger`` as the instrumentation scope's
  name (where the bridge puts the logger name), the other fields (``exception.*``, ``code.*``) as
  attributes; no event name;
- any other event: ``event_name`` (the LogRecord field, where the proto has it) and the
  ``event.name`` attribute, severity INFO, or ERROR when its status is a service failure
  (``_core/status.py``), no body; scope ``obs_middleware``;
- attributes: the event record's, as the span path names them (``enduser.id``, ``error.type``…;
  the process identity is in the resource), plus ``duration_ms``, ``error.message`` and
  ``obs.status`` (any status but ``ok``) when the event has them.

Each item is one ``ResourceLogs.scope_logs`` field (its scope and one record), as latin-1 text
so the delivery layer can spool it; ``request`` wraps a batch with the resource.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs

from .._core.status import is_service_failure
from .._record import Record
from ._otlp_wire import any_value, key_value, varint

__all__ = ["SEVERITY", "log_items", "request"]

# stdlib level name → (severity_text, severity_number), as OpenTelemetry's logging bridge.
SEVERITY = {
    "DEBUG": ("DEBUG", 5),
    "INFO": ("INFO", 9),
    "WARNING": ("WARN", 13),
    "WARN": ("WARN", 13),
    "ERROR": ("ERROR", 17),
    "CRITICAL": ("FATAL", 21),
    "FATAL": ("FATAL", 21),
}
_INFO, _ERROR = 9, 17
_LOG_FIELDS = frozenset({"log.level", "log.logger", "log.message"})
_HAS_EVENT_NAME = "event_name" in LogRecord.DESCRIPTOR.fields_by_name


def _field(data: bytes) -> str:
    return (b"\x12" + varint(len(data)) + data).decode("latin-1")


def log_items(
    records: Sequence[Record],
    scope: tuple[str, str],
    attributes_of: Callable[[Record], dict[str, Any]],
    ns: Callable[[str], int],
) -> list[str]:
    """The ``scope_logs`` field of each event record (span records are skipped).

    ``scope``: our instrumentation scope (name, version); ``attributes_of``: a record's
    attributes as the span path gives them; ``ns``: an RFC 3339 time to Unix ns.
    """
    out: list[str] = []
    for rec in records:
        if rec.get("type") != "event":
            continue
        name = str(rec.get("name"))
        attrs = attributes_of(rec)
        at = ns(rec["start"])
        record = LogRecord(time_unix_nano=at, observed_time_unix_nano=at)
        trace_hex, span_hex = rec.get("trace_id"), rec.get("span_id")
        if trace_hex and span_hex:
            record.trace_id = bytes.fromhex(trace_hex)
            record.span_id = bytes.fromhex(span_hex)
            record.flags = 1
        scope_name, scope_version = scope
        if name == "log":
            level = str(attrs.get("log.level") or "")
            text, number = SEVERITY.get(level.upper(), (level, 0))
            record.severity_text, record.severity_number = text, number  # type: ignore[assignment]
            message = attrs.get("log.message")
            if message is not None:
                record.body.MergeFromString(any_value(message))
            logger = attrs.get("log.logger")
            if isinstance(logger, str) and logger:
                scope_name, scope_version = logger, ""
            attrs = {k: v for k, v in attrs.items() if k not in _LOG_FIELDS}
        else:
            if _HAS_EVENT_NAME:
                record.event_name = name
            attrs = {"event.name": name, **attrs}
            status = rec.get("status") or "ok"
            failed = isinstance(status, str) and is_service_failure(status)
            record.severity_text = "ERROR" if failed else "INFO"
            record.severity_number = _ERROR if failed else _INFO  # type: ignore[assignment]
        for key, value in _extra(rec):
            attrs.setdefault(key, value)
        for key, value in attrs.items():
            try:
                kv = key_value(key, value)
            except (TypeError, ValueError):  # as the SDK: an attribute it cannot encode is left out
                continue
            record.attributes.add().MergeFromString(kv)
        scope_logs = ScopeLogs(
            scope=InstrumentationScope(name=scope_name, version=scope_version),
            log_records=[record],
        )
        out.append(_field(scope_logs.SerializeToString()))
    return out


def _extra(rec: Record) -> list[tuple[str, Any]]:
    # Fixed keys an event may carry that the span path puts elsewhere (the span's times, status).
    out: list[tuple[str, Any]] = []
    if rec.get("duration_ms") is not None:
        out.append(("duration_ms", rec["duration_ms"]))
    if rec.get("error_message"):
        out.append(("error.message", rec["error_message"]))
    status = rec.get("status")
    if status and status != "ok":
        out.append(("obs.status", status))
    return out


def request(resource: bytes, items: Sequence[str], schema_url: str = "") -> bytes:
    """The ``ExportLogsServiceRequest`` of one resource holding ``items`` (``log_items``)."""
    body = b"\x0a" + varint(len(resource)) + resource + "".join(items).encode("latin-1")
    if schema_url:
        url = schema_url.encode()
        body += b"\x1a" + varint(len(url)) + url
    return b"\x0a" + varint(len(body)) + body
