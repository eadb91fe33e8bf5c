"""The unified record (DESIGN.md §7): one flat dict per finished span or event.

Built on the export worker, once per item, and shared read-only by every exporter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ._core import span as _span

__all__ = ["FIXED_KEYS", "Record", "Resource", "to_records"]

Record = dict[str, Any]

FIXED_KEYS = (
    "type",
    "name",
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "environment",
    "start",
    "duration_ms",
    "status",
    "error_type",
    "error_message",
    "user_id",
    "tier",
    "request_id",
)


class Resource:
    """What every record of this process carries: service, environment, version."""

    __slots__ = ("environment", "service", "version")

    def __init__(self, service: str, environment: str, version: str | None) -> None:
        self.service = service
        self.environment = environment
        self.version = version


class _Clock:
    """RFC 3339 UTC timestamps (µs) from span clock readings, caching the per-second prefix."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def rfc3339(self, clock_ns: int) -> str:
        sec, us = divmod((_span.wall_anchor_ns + clock_ns) // 1000, 1_000_000)
        if sec != self.second:
            self.second = sec
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self.prefix}.{us:06d}Z"


_clock = _Clock()


def to_records(items: Iterable[_span.Span | _span.Event], resource: Resource) -> list[Record]:
    """Convert finished spans and events to records (ids as hex, times as RFC 3339)."""
    service = resource.service
    environment = resource.environment
    rfc3339 = _clock.rfc3339
    out: list[Record] = []
    for item in items:
        local = item.local
        if type(item) is _span.Span:
            rec: Record = {
                "type": "span",
                "name": item.name,
                "trace_id": f"{item.trace_id:032x}",
                "span_id": f"{item.span_id:016x}",
                "parent_id": f"{item.parent_id:016x}" if item.parent_id else None,
                "service": service,
                "environment": environment,
                "start": rfc3339(item.start_ns),
                "duration_ms": (item.end_ns - item.start_ns) // 1000 / 1000,
                "status": item.status,
                "error_type": item.error_type,
                "error_message": item.error_message,
                "user_id": local.user_id,
                "tier": local.tier,
                "request_id": local.request_id,
            }
            if item.kind != "internal":
                rec["span.kind"] = item.kind
            rec.update(item.attrs)
            if item.events:
                rec["events"] = [
                    {"name": name, "time": rfc3339(t), **fields} for name, t, fields in item.events
                ]
        else:
            assert type(item) is _span.Event
            rec = {
                "type": "event",
                "name": item.name,
                "trace_id": f"{item.trace_id:032x}" if item.trace_id else None,
                "span_id": f"{item.span_id:016x}" if item.span_id else None,
                "parent_id": None,
                "service": service,
                "environment": environment,
                "start": rfc3339(item.time_ns),
                "duration_ms": item.fields.get("duration_ms"),
                "status": item.status,
                "error_type": item.fields.get("error_type"),
                "error_message": item.fields.get("error_message"),
                "user_id": local.user_id if local else None,
                "tier": local.tier if local else None,
                "request_id": local.request_id if local else None,
            }
            rec.update(item.fields)
        out.append(rec)
    return out
