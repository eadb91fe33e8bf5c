"""The unified record: one flat dict per finished span or event (docs/ARCHITECTURE.md).

Built on the export worker, once per item, and shared read-only by every exporter.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any

from ._core import span as _span
from ._core.forks import renew_after_fork

__all__ = [
    "FIXED_KEYS",
    "IDENTITY_KEYS",
    "Record",
    "Resource",
    "event_dicts",
    "instance_id",
    "rfc3339",
    "set_process_identity",
    "to_records",
]

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


# The process identity every record carries after its fixed keys (when set): OpenTelemetry's
# resource attribute names, and ours for the worker and machine a deployment names.
IDENTITY_KEYS = ("service.version", "host.name", "service.instance.id", "worker.id", "machine.id")


def _new_instance_id() -> str:
    return secrets.token_hex(8)


# This process's instance id: random, renewed in a forked child (a child is another instance).
# ``host`` is read once; tests (``testing.deterministic``) may pin both.
_process: dict[str, str] = {"instance_id": _new_instance_id(), "host": socket.gethostname()}
renew_after_fork(_process, "instance_id", _new_instance_id)


def instance_id() -> str:
    """The instance id of this process (16 hex digits, new in every forked child)."""
    return _process["instance_id"]


def set_process_identity(host: str, instance: str) -> tuple[str, str]:
    """Replace this process's host name and instance id (``testing.deterministic``); returns
    the previous pair, to restore."""
    previous = (_process["host"], _process["instance_id"])
    _process["host"], _process["instance_id"] = host, instance
    return previous


class Resource:
    """What every record of this process carries: service, environment, version, and identity.

    ``identity()`` gives the per-process keys of ``IDENTITY_KEYS`` that have a value (version,
    worker and machine ids only when set), built once per process: OTLP encodes it once in its
    resource message; records and column-store rows carry a copy each.
    """

    __slots__ = (
        "_identity",
        "_made_for",
        "environment",
        "machine_id",
        "service",
        "version",
        "worker_id",
    )

    def __init__(
        self,
        service: str,
        environment: str,
        version: str | None,
        *,
        worker_id: str | None = None,
        machine_id: str | None = None,
    ) -> None:
        self.service = service
        self.environment = environment
        self.version = version
        self.worker_id = worker_id
        self.machine_id = machine_id
        self._made_for: tuple[str, str] | None = None
        self._identity: dict[str, str] = {}

    @property
    def host(self) -> str:
        """The host name of this process."""
        return _process["host"]

    def identity(self) -> dict[str, str]:
        """The identity keys and values of this process (one dict, rebuilt after a fork).

        The caller must not change it.
        """
        made_for = (_process["instance_id"], _process["host"])
        if made_for != self._made_for:
            values = (self.version, made_for[1], made_for[0], self.worker_id, self.machine_id)
            self._identity = {k: v for k, v in zip(IDENTITY_KEYS, values, strict=True) if v}
            self._made_for = made_for
        return self._identity


# Keys user attributes may not overwrite: they identify the record. An event's fields may set
# its status, duration and error (that is how ``emit`` reports an outcome).
_EVENT_IDENTITY = frozenset((*FIXED_KEYS[: FIXED_KEYS.index("duration_ms")], *IDENTITY_KEYS))
_SPAN_IDENTITY = frozenset((*FIXED_KEYS, *IDENTITY_KEYS))


def _merge(rec: Record, attrs: dict[str, Any], protected: frozenset[str]) -> None:
    if protected.isdisjoint(attrs):
        rec.update(attrs)
    else:
        rec.update({k: v for k, v in attrs.items() if k not in protected})


class _Seconds:
    """The RFC 3339 text of the last whole second seen (timestamps share it within a second)."""

    second = -1
    prefix = ""


def _second_prefix(second: int) -> str:
    if second != _Seconds.second:
        _Seconds.second = second
        _Seconds.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return _Seconds.prefix


def rfc3339(clock_ns: int) -> str:
    """RFC 3339 UTC timestamp (µs) of a span clock reading."""
    second, us = divmod((_span.wall_anchor_ns + clock_ns) // 1000, 1_000_000)
    return "%s.%06dZ" % (_second_prefix(second), us)


def event_dicts(events: list[tuple[str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """A span's events as the record's ``events`` list (name, RFC 3339 time, fields)."""
    return [{"name": name, "time": rfc3339(t), **fields} for name, t, fields in events]


def to_records(items: Iterable[_span.Span | _span.Event], resource: Resource) -> list[Record]:
    """Convert finished spans and events to records (ids as hex, times as RFC 3339).

    Runs on the export worker. Hex ids are formatted once (``int.to_bytes().hex()``, cheaper
    than ``"%x"``): the trace id per trace (``Span.trace_hex``), a span id once per batch (a
    child's ``parent_id`` is its parent's ``span_id``). The resource's identity follows the
    fixed keys.
    """
    service = resource.service
    environment = resource.environment
    identity = resource.identity()
    anchor = _span.wall_anchor_ns
    Span = _span.Span
    span_hex: dict[int, str] = {}
    last_second = -1
    prefix = ""
    out: list[Record] = []
    for item in items:
        if type(item) is Span:
            local = item.local
            trace_hex = local.trace_hex  # Span.trace_hex inlined: the call cost 1.6 % here
            if trace_hex is None:
                trace_hex = local.trace_hex = item.trace_id.to_bytes(16, "big").hex()
            sid = item.span_id
            own = span_hex.get(sid)
            if own is None:
                own = span_hex[sid] = sid.to_bytes(8, "big").hex()
            pid = item.parent_id
            if pid:
                parent = span_hex.get(pid)
                if parent is None:
                    parent = span_hex[pid] = pid.to_bytes(8, "big").hex()
            else:
                parent = None
            start_ns = item.start_ns
            second, us = divmod((anchor + start_ns) // 1000, 1_000_000)
            if second != last_second:
                last_second, prefix = second, _second_prefix(second)
            rec: Record = {
                "type": "span",
                "name": item.name,
                "trace_id": trace_hex,
                "span_id": own,
                "parent_id": parent,
                "service": service,
                "environment": environment,
                "start": "%s.%06dZ" % (prefix, us),
                "duration_ms": (item.end_ns - start_ns) // 1000 / 1000,
                "status": item.status,
                "error_type": item.error_type,
                "error_message": item.error_message,
                "user_id": local.user_id,
                "tier": local.tier,
                "request_id": local.request_id,
            }
            rec.update(identity)
            if item.kind != "internal":
                rec["span.kind"] = item.kind
            attrs = item.attrs
            if _SPAN_IDENTITY.isdisjoint(attrs):
                rec.update(attrs)
            else:
                _merge(rec, attrs, _SPAN_IDENTITY)
            if item.events:
                rec["events"] = event_dicts(item.events)
        else:
            assert type(item) is _span.Event
            event_local = item.local
            rec = {
                "type": "event",
                "name": item.name,
                "trace_id": item.trace_id.to_bytes(16, "big").hex() if item.trace_id else None,
                "span_id": item.span_id.to_bytes(8, "big").hex() if item.span_id else None,
                "parent_id": None,
                "service": service,
                "environment": environment,
                "start": rfc3339(item.time_ns),
                "duration_ms": item.fields.get("duration_ms"),
                "status": item.status,
                "error_type": item.fields.get("error_type"),
                "error_message": item.fields.get("error_message"),
                "user_id": event_local.user_id if event_local else None,
                "tier": event_local.tier if event_local else None,
                "request_id": event_local.request_id if event_local else None,
            }
            rec.update(identity)
            _merge(rec, item.fields, _EVENT_IDENTITY)
        out.append(rec)
    return out
