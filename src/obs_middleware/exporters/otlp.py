"""OTLP exporter: spans and metrics to an OpenTelemetry collector over OTLP/HTTP (``[otlp]`` extra).

The pipeline hands the exporter its finished spans (``export_spans``): ``_otlp_proto`` writes the
``ExportTraceServiceRequest`` protobuf straight from them, on the export thread, and we post it
(OTLP/HTTP, ``application/x-protobuf``). Records given to ``export`` (and spans that encoder leaves
to it) take the record path: converted into the OpenTelemetry SDK's own ``ReadableSpan`` objects
(``to_otel_spans``) and encoded by the SDK; a test holds both paths equal. The metrics core's
snapshot becomes SDK ``MetricsData`` for ``OTLPMetricExporter`` (cumulative sums, gauges and
explicit-bucket histograms, names and units as in the core). Every request goes through our
session (``_otlp_session``): one request per export, its timeout ours; our delivery layer retries,
adds the circuit breaker and the optional disk spool, and stops waiting at shutdown.

Mapping: ids, parent links, kind, start/end, ``ok``/``error`` status (other statuses, such as
``content_violation``, are UNSET with ``obs.status``), span events, the error as an ``exception``
event, attributes as they are except a few renamed to current semantic conventions
(``http.method`` → ``http.request.method``, ``user_id`` → ``enduser.id``…); from spans, the
``tracestate`` received and a parent marked remote only if it came over the wire. Resource:
``service.name``, ``service.version``, ``deployment.environment.name``, ``service.instance.id``
(unique per process), ``host.name``, ``process.pid``, plus ``resource_attributes`` and
``OTEL_RESOURCE_ATTRIBUTES``. Point events (``obs.emit``) are not sent: OTLP has no span for them.
"""

from __future__ import annotations

import calendar
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

try:
    import requests
    from opentelemetry import context as otel_context
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricExportResult,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the OTLP exporter needs the OpenTelemetry SDK: pip install 'obs-middleware[otlp]'"
    ) from exc

from .._core import span as _span
from .._core.context import EXPORTING
from .._core.metrics import HistogramPoint, MetricSnapshot, dropped, registry
from .._delivery import Delivery, DeliveryOptions, Outcome, Result, classify_status
from .._json import json_default, jsonable, valid_text
from .._record import FIXED_KEYS, IDENTITY_KEYS, Record, instance_id, to_records
from .._record import Resource as RecordResource
from .._version import __version__
from ._otlp_genai import TRIGGER, genai_attributes
from ._otlp_proto import RENAMED as _RENAMED
from ._otlp_proto import SpanEncoder, request, resource_message, scope_message, varint
from ._otlp_session import (
    OtlpSession,
    Unanswered,
    abort_all,
    compress,
    quiet_sdk_logs,
    trace_settings,
)

__all__ = ["OTLPExporter", "to_otel_spans"]

_log = logging.getLogger("obs_middleware")
_SCOPE = InstrumentationScope("obs_middleware", __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_SCOPE_MESSAGE = scope_message(_SCOPE.name, _SCOPE.version)
# Record keys carried by the span itself (ids, times, status) rather than as attributes: the
# fixed keys not renamed into an attribute, and the kind and events.
# The identity keys live in the resource (encoded once), never per span.
_STRUCTURAL = (
    frozenset(FIXED_KEYS).difference(_RENAMED) | {"span.kind", "events"} | frozenset(IDENTITY_KEYS)
)


_SCALARS = (str, bool, int, float)


class _Times:
    """RFC 3339 record times back to Unix ns, parsing each distinct second once."""

    __slots__ = ("epoch", "prefix")

    def __init__(self) -> None:
        self.prefix = ""
        self.epoch = 0

    def ns(self, text: str) -> int:
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


def _attributes(rec: Record) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, value in rec.items():
        if value is None or key in _STRUCTURAL:
            continue
        attrs[_RENAMED.get(key, key)] = _value(value)
    return attrs


def to_otel_spans(
    records: Sequence[Record], resource_for: Any, times: _Times | None = None
) -> list[ReadableSpan]:
    """Convert span records to SDK ``ReadableSpan`` objects (event records are skipped).

    ``resource_for(service, environment)`` returns the ``Resource`` for a record.
    """
    times = times or _Times()
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
        attrs = _attributes(rec)
        if TRIGGER in rec:  # an AI span: the GenAI conventions' names too
            for key, value in genai_attributes(rec):
                if key not in attrs:
                    attrs[key] = _value(value)
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
                instrumentation_scope=_SCOPE,
            )
        )
    return spans


class _LastResponse:
    """A ``requests`` response hook remembering the last status and ``Retry-After``."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.retry_after: str | None = None

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.status = response.status_code
        self.retry_after = response.headers.get("retry-after")


def _session(hook: _LastResponse, timeout: Callable[[], float]) -> OtlpSession:
    session = OtlpSession(timeout)
    session.hooks["response"].append(hook)
    session.headers["User-Agent"] = f"obs-middleware/{__version__}"
    return session


class OTLPExporter:
    """Send spans (and, every ``metrics_interval_s``, metrics) to an OTLP/HTTP endpoint.

    ``endpoint``: the collector's base URL (default ``OTEL_EXPORTER_OTLP_ENDPOINT``, else
    ``http://localhost:4318``); ``/v1/traces`` and ``/v1/metrics`` are appended. ``headers``:
    e.g. an API key for a hosted backend. ``resource_attributes``: added to the resource (a
    worker or machine id, …). ``metrics=False`` sends spans only. ``timeout_s``: per request.
    Delivery (retry, breaker, spool) follows ``delivery`` or the ``OBS_*`` variables.

    With the collector down (connections refused), ``obs.flush()`` returns promptly: a batch
    costs one round of delivery retries (``backoff_s``, doubling, ``max_attempts``), and nothing
    once the breaker is open; never a request timeout. Failures are counted in ``obs.dropped``
    and warned about once; the SDK's own loggers stay quiet about our exports.
    """

    name = "otlp"

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        metrics: bool = True,
        metrics_interval_s: float = 10.0,
        timeout_s: float = 5.0,
        delivery: DeliveryOptions | None = None,
    ) -> None:
        base = (
            endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
        ).rstrip("/")
        self.endpoint = base
        self._headers = dict(headers or {})
        self.timeout_s = timeout_s
        self._response = _LastResponse()
        self._traces_url = f"{base}/v1/traces"
        self._session, self._metrics = self._clients(metrics)
        quiet_sdk_logs(OTLPSpanExporter, OTLPMetricExporter)
        self.metrics_interval_s = metrics_interval_s
        self.extra_resource = dict(resource_attributes or {})
        self._resources: dict[tuple[str | None, str | None], Resource] = {}
        self._resource_messages: dict[tuple[str | None, str | None], tuple[bytes, str]] = {}
        self._encoder = SpanEncoder(self._sdk_span)
        self._bound: RecordResource | None = None
        self._times = _Times()
        self._start_ns = time.time_ns()
        self._metrics_sent = time.monotonic()
        self._metrics_warned = False  # per exporter, as ``Delivery``'s warning (see there)
        options = delivery or DeliveryOptions.from_env(self.name)
        destination = "\n".join([base, *sorted(f"{k}:{v}" for k, v in self._headers.items())])
        self.delivery = Delivery(
            self.name, self.send, options, interrupt=abort_all, destination=destination
        )

    def _clients(self, metrics: bool) -> tuple[OtlpSession, OTLPMetricExporter | None]:
        # Our session for the traces we post, the SDK's exporter for metrics.
        session = _session(self._response, self._request_timeout)
        self._post_headers, self._compression = trace_settings(session, self._headers)
        if not metrics:
            return session, None
        return session, OTLPMetricExporter(
            endpoint=f"{self.endpoint}/v1/metrics",
            headers=dict(self._headers),
            timeout=self.timeout_s,
            session=_session(_LastResponse(), self._request_timeout),
        )

    # -- resource --------------------------------------------------------------------------------
    def bind(self, resource: RecordResource) -> None:
        """Take the pipeline's service identity (the metrics' resource, ``service.version``)."""
        self._bound = resource
        self._resources.clear()
        self._resource_messages.clear()

    def resource(self, service: str | None, environment: str | None) -> Resource:
        """Return the ``Resource`` of records of ``service`` in ``environment`` (cached)."""
        key = (service, environment)
        res = self._resources.get(key)
        if res is None:
            attrs: dict[str, Any] = {
                "service.name": service or "app",
                "deployment.environment.name": environment or "development",
                "service.instance.id": instance_id(),
                "host.name": socket.gethostname(),
            }
            if self._bound is not None:
                attrs.update(self._bound.identity())
            attrs["process.pid"] = os.getpid()
            attrs.update(self.extra_resource)
            res = self._resources[key] = Resource.create(attrs)
        return res

    # -- spans -----------------------------------------------------------------------------------
    def send(self, items: Sequence[Record] | Sequence[str], timeout: float) -> Result:
        """Post one batch (called by the delivery layer): span records, or encoded spans
        (``export_spans``; spooled as they are)."""
        if not items:
            return Result(Outcome.OK)
        if isinstance(items[0], str):
            body = self._request(items)  # type: ignore[arg-type]
        else:
            spans = to_otel_spans(_encodable(items), self.resource, self._times)  # type: ignore[arg-type]
            if not spans:
                return Result(Outcome.OK)
            body = encode_spans(spans).SerializeToString()
        self._response.status = None
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        try:
            body = compress(body, self._compression)
            self._session.post_body(self._traces_url, self._post_headers, body, timeout)
        except Unanswered:  # failed: the status (if any) says how
            pass
        finally:
            otel_context.detach(token)
        status = self._response.status
        if status is None:  # no answer at all: refused, reset, timed out
            return Result(Outcome.RETRY, None, "OTLP export failed (no response)")
        if status < 300:
            return Result(Outcome.OK)
        return classify_status(status, self._response.retry_after, f"OTLP HTTP {status}")

    def _request(self, spans: Sequence[str]) -> bytes:
        bound = self._bound
        key = (bound.service, bound.environment) if bound is not None else (None, None)
        message = self._resource_messages.get(key)
        if message is None:
            resource = self.resource(*key)
            message = (resource_message(resource.attributes), resource.schema_url or "")
            self._resource_messages[key] = message
        return request(message[0], _SCOPE_MESSAGE, spans, message[1])

    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch of span records; send metrics when due."""
        self.delivery.deliver(records)
        self._metrics_due()

    def export_spans(
        self, items: Iterable[_span.Span | _span.Event], resource: RecordResource
    ) -> None:
        """Deliver one batch of finished spans (the pipeline's span path); send metrics when due.

        Point events are skipped, as in ``to_otel_spans``.
        """
        if resource is not self._bound:
            self.bind(resource)
        # Delivery takes any JSON-able items (spooled as JSON): here encoded spans as text.
        self.delivery.deliver(self._encoder.encode(items))  # type: ignore[arg-type]
        self._metrics_due()

    def _sdk_span(self, span: _span.Span, flags: int, trace_state: str | None) -> bytes | None:
        # A span the encoder leaves to the record path: its ``ScopeSpans.spans`` field.
        assert self._bound is not None
        try:
            records = _encodable(to_records((span,), self._bound))
            message = encode_spans(to_otel_spans(records, self.resource, self._times))
            (scope_spans,) = message.resource_spans[0].scope_spans
            encoded = scope_spans.spans[0]
            encoded.flags = flags
            if trace_state:
                encoded.trace_state = valid_text(trace_state)
            data: bytes = encoded.SerializeToString()
        except Exception:  # as the record path: a span it cannot encode is lost, and counted
            _log.debug("obs-middleware: OTLP could not encode a span", exc_info=True)
            dropped.add((f"exporter_error:{self.name}",), 1)
            return None
        return b"\x12" + varint(len(data)) + data

    def _metrics_due(self) -> None:
        if self._metrics is not None:
            now = time.monotonic()
            if now - self._metrics_sent >= self.metrics_interval_s:
                self._metrics_sent = now
                self.send_metrics()

    # -- metrics ---------------------------------------------------------------------------------
    def metrics_data(self) -> MetricsData:
        """Convert the metrics core's current values to SDK ``MetricsData`` (cumulative)."""
        now = time.time_ns()
        bound = self._bound
        resource = self.resource(*((bound.service, bound.environment) if bound else (None, None)))
        metrics = [
            m
            for snap in registry.snapshot().values()
            if (m := _metric(snap, self._start_ns, now)) is not None
        ]
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(_SCOPE, metrics, "")], "")])

    def send_metrics(self) -> bool:
        """Export the metrics now; False if the collector did not take them."""
        if self._metrics is None or not self.delivery.breaker.allow():
            return False
        data = self.metrics_data()
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        exporting = EXPORTING.set(True)
        try:
            ok = self._metrics.export(data, timeout_millis=self.timeout_s * 1000)
        except Exception:  # metrics are cumulative: the next export carries them
            ok = MetricExportResult.FAILURE
        finally:
            EXPORTING.reset(exporting)
            otel_context.detach(token)
        if ok is not MetricExportResult.SUCCESS and not self._metrics_warned:
            self._metrics_warned = True
            _log.warning("obs-middleware: OTLP metrics export to %s failed", self.endpoint)
        return ok is MetricExportResult.SUCCESS

    def _request_timeout(self) -> float:
        # Shorter once the process stops waiting on backends (see ``Delivery.timeout``).
        return min(self.timeout_s, self.delivery.timeout())

    def flush(self) -> None:
        """Replay the spool, send the metrics."""
        self.delivery.flush()
        if self._metrics is not None:
            self._metrics_sent = time.monotonic()
            self.send_metrics()

    def shutdown(self) -> None:
        """Seal the spool; close the session and the SDK's metric exporter."""
        self.delivery.close()
        self._session.close()
        if self._metrics is not None:
            self._metrics.shutdown()

    def after_fork(self) -> None:
        """In a forked child: a new session and metric exporter, and a new instance whose metrics
        start now.

        ``requests`` sessions (ours, the SDK's) would share the parent's pooled connections (and
        pool locks). The parent's are dropped unused, which closes only the child's copies of
        their sockets. The child is a new
        ``service.instance.id`` with its own ``process.pid``, and its cumulative metrics (reset in
        the child) start at the fork.
        """
        self._session, self._metrics = self._clients(self._metrics is not None)
        self._resources = {}
        self._resource_messages = {}
        self._start_ns = time.time_ns()
        self._metrics_sent = time.monotonic()
        self.delivery.after_fork()


def _encodable(records: Sequence[Record]) -> Sequence[Record]:
    """``records``, or copies where protobuf would refuse a value (text with lone surrogates,
    integers past 64 bits: the SDK drops the attribute, or the whole batch): made valid."""
    try:  # one C call per batch finds them
        orjson.dumps(records, json_default)
    except TypeError:
        return [jsonable(rec, strict=True) for rec in records]
    return records


def _labels(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {
        name: valid_text(v) if isinstance(v, str) else v
        for name, v in zip(names, values, strict=False)
    }


def _metric(snap: MetricSnapshot, start: int, now: int) -> Metric | None:
    names = snap.label_names
    if not snap.points:
        return None
    if snap.kind == "histogram":
        points = [
            HistogramDataPoint(
                _labels(names, labels),
                start,
                now,
                p.count,
                p.sum,
                list(p.counts),
                list(p.bounds),
                None,  # type: ignore[arg-type]  # min/max are optional in OTLP; not tracked
                None,  # type: ignore[arg-type]
            )
            for labels, p in snap.points.items()
            if isinstance(p, HistogramPoint)
        ]
        data: Any = Histogram(points, AggregationTemporality.CUMULATIVE)
    else:
        numbers = [
            NumberDataPoint(_labels(names, labels), start, now, value)
            for labels, value in snap.points.items()
            if not isinstance(value, HistogramPoint)
        ]
        if snap.kind == "gauge":
            data = Gauge(numbers)
        else:
            data = Sum(numbers, AggregationTemporality.CUMULATIVE, snap.kind == "counter")
    return Metric(snap.name, snap.description, snap.unit, data)


def from_spec(arg: str) -> OTLPExporter:
    """``otlp`` or ``otlp:<base URL>``."""
    return OTLPExporter(arg or None)
