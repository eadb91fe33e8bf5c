"""OTLP exporter: spans, point events (as log records) and metrics to an OpenTelemetry collector,
over OTLP/HTTP (``[otlp]`` extra) or OTLP/gRPC (``[otlp-grpc]``).

The pipeline hands the exporter its finished spans (``export_spans``): ``_otlp_proto`` writes the
``ExportTraceServiceRequest`` protobuf straight from them, on the export thread, and we send it
(OTLP/HTTP ``application/x-protobuf`` posts, or a gRPC call: ``_otlp_grpc``). Records given to
``export`` (and spans that encoder leaves to it) take the record path: converted into the
OpenTelemetry SDK's own ``ReadableSpan`` objects (``to_otel_spans``) and encoded by the SDK; a test
holds both paths equal. Point events (``obs.emit``, job lifecycle, application logs: the events
named ``log``) become OTLP log records (``/v1/logs`` or the gRPC ``LogsService``; ``_otlp_logs``
says how), in the trace of the span they happened in. The metrics core's snapshot becomes SDK
``MetricsData`` (``_otlp_metrics``) for ``OTLPMetricExporter``, or the SDK's encoder over gRPC.
Every request is one attempt (``_otlp_session``, ``_otlp_grpc``), its timeout ours; our delivery
layer retries, adds the circuit breaker and the optional disk spool, and stops waiting at
shutdown.

Mapping: ids, parent links, kind, start/end, ``ok``/``error`` status (other statuses, such as
``content_violation``, are UNSET with ``obs.status``), span events, the error as an ``exception``
event, attributes as they are except a few renamed to current semantic conventions
(``http.method`` → ``http.request.method``, ``user_id`` → ``enduser.id``…), and an AI span's
``gen_ai.*`` copies of its ``ai.*`` attributes (``_otlp_genai``: OTel GenAI conventions); from
spans, the ``tracestate`` received and a parent marked remote only if it came over the wire.
Resource: ``service.name``, ``service.version``, ``deployment.environment.name``,
``service.instance.id`` (unique per process), ``host.name``, ``process.pid``, plus
``resource_attributes`` and ``OTEL_RESOURCE_ATTRIBUTES``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

try:
    import requests
    from opentelemetry import context as otel_context
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import (
        MetricExportResult,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.resources import Resource
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the OTLP exporter needs the OpenTelemetry SDK: pip install 'obs-middleware[otlp]'"
    ) from exc

from .._core import span as _span
from .._core.context import EXPORTING
from .._core.metrics import dropped, registry
from .._delivery import AUTO_SPOOL, OK, Delivery, DeliveryOptions, Outcome, Result, classify_status
from .._json import valid_text
from .._record import Record, instance_id, to_records
from .._record import Resource as RecordResource
from .._version import __version__
from . import _otlp_logs
from ._otlp_metrics import metric
from ._otlp_proto import SpanEncoder
from ._otlp_records import SCOPE as _SCOPE
from ._otlp_records import Times as _Times
from ._otlp_records import attributes as _attributes
from ._otlp_records import encodable as _encodable
from ._otlp_records import to_otel_spans
from ._otlp_session import (
    OtlpSession,
    Unanswered,
    abort_all,
    compress,
    quiet_sdk_logs,
    trace_settings,
)
from ._otlp_wire import request, resource_message, scope_message, varint

__all__ = ["PROTOCOLS", "OTLPExporter", "to_otel_spans"]

_log = logging.getLogger("obs_middleware")
_SCOPE_MESSAGE = scope_message(_SCOPE.name, _SCOPE.version)
_SCOPE_NAME = (_SCOPE.name, _SCOPE.version or "")
PROTOCOLS = ("http/protobuf", "grpc")


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


def _protocol(endpoint: str | None, protocol: str | None) -> str:
    # A ``grpc://``/``grpcs://`` endpoint says gRPC; else the argument, else the OTel variables.
    if endpoint and endpoint.lower().startswith(("grpc://", "grpcs://")):
        return "grpc"
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"OTLP protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
        return protocol
    env = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if env not in PROTOCOLS:
        _log.warning("obs-middleware: OTLP protocol %r is not supported: using http/protobuf", env)
        return "http/protobuf"
    return env


class OTLPExporter:
    """Send spans, point events (as log records) and, every ``metrics_interval_s``, metrics to
    an OTLP collector over HTTP or gRPC.

    ``endpoint``: the collector's base URL (default ``OTEL_EXPORTER_OTLP_ENDPOINT``, else
    ``http://localhost:4318``, or ``http://localhost:4317`` for gRPC); over HTTP ``/v1/traces``,
    ``/v1/logs`` and ``/v1/metrics`` are appended. ``protocol``: ``http/protobuf`` or ``grpc``
    (default ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``, else HTTP; a ``grpc://`` or ``grpcs://``
    endpoint means gRPC, ``https://``/``grpcs://`` with TLS). ``headers``: e.g. an API key for a
    hosted backend (gRPC metadata). ``resource_attributes``: added to the resource (a worker or
    machine id, …). ``metrics=False`` sends no metrics, ``logs=False`` no point events.
    ``timeout_s``: per request. Delivery (retry, breaker, spool) follows ``delivery`` or the
    ``OBS_*`` variables, for spans and for events alike (one spool each).

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
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        metrics: bool = True,
        logs: bool = True,
        metrics_interval_s: float = 10.0,
        timeout_s: float = 5.0,
        delivery: DeliveryOptions | None = None,
    ) -> None:
        self.protocol = _protocol(endpoint, protocol)
        grpc = self.protocol == "grpc"
        default = "http://localhost:4317" if grpc else "http://localhost:4318"
        base = (endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or default).rstrip("/")
        self.endpoint = base
        self._headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.logs = logs
        self._response = _LastResponse()
        self._urls = {signal: f"{base}/v1/{signal}" for signal in ("traces", "logs")}
        self._grpc: Any = None
        if grpc:
            from ._otlp_grpc import GrpcChannel  # noqa: PLC0415 - the optional extra

            self._grpc = GrpcChannel(base, self._headers)
        self._metrics_on = metrics
        self._session, self._metrics = self._clients()
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
            self.name, self.send, options, interrupt=self._interrupt, destination=destination
        )
        # Events: a delivery and spool of their own (their items are another message); a spool
        # folder given outright gets a ``logs`` folder inside for them.
        log_options = options
        if options.spool_dir and options.spool_dir != AUTO_SPOOL:
            log_options = replace(options, spool_dir=os.path.join(options.spool_dir, "logs"))
        self.log_delivery = Delivery(
            self.name,
            self.send_logs,  # type: ignore[arg-type]  # takes the encoded items it is given
            log_options,
            interrupt=self._interrupt,
            destination=destination + "\nlogs",
        )
        # One collector: one breaker, and one warning about its failures.
        self.log_delivery.breaker = self.delivery.breaker
        self.log_delivery._warn = self.delivery._warn  # type: ignore[method-assign]

    def _clients(self) -> tuple[OtlpSession, OTLPMetricExporter | None]:
        # Our session for the traces and logs we post, the SDK's exporter for metrics (HTTP).
        session = _session(self._response, self._request_timeout)
        self._post_headers, self._compression = trace_settings(session, self._headers)
        if not self._metrics_on or self._grpc is not None:
            return session, None
        return session, OTLPMetricExporter(
            endpoint=f"{self.endpoint}/v1/metrics",
            headers=dict(self._headers),
            timeout=self.timeout_s,
            session=_session(_LastResponse(), self._request_timeout),
        )

    def _interrupt(self) -> None:
        # Cut what is in flight (shutdown): HTTP connections, gRPC calls.
        abort_all()
        if self._grpc is not None:
            from ._otlp_grpc import abort_all as abort_calls  # noqa: PLC0415

            abort_calls()

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

    def _resource_message(self) -> tuple[bytes, str]:
        bound = self._bound
        key = (bound.service, bound.environment) if bound is not None else (None, None)
        message = self._resource_messages.get(key)
        if message is None:
            resource = self.resource(*key)
            message = (resource_message(resource.attributes), resource.schema_url or "")
            self._resource_messages[key] = message
        return message

    # -- sending ---------------------------------------------------------------------------------
    def send(self, items: Sequence[Record] | Sequence[str], timeout: float) -> Result:
        """Send one batch of spans (called by the delivery layer): span records, or encoded
        spans (``export_spans``; spooled as they are)."""
        if not items:
            return OK
        if isinstance(items[0], str):
            body = self._request(items)  # type: ignore[arg-type]
        else:
            spans = to_otel_spans(_encodable(items), self.resource, self._times)  # type: ignore[arg-type]
            if not spans:
                return OK
            body = encode_spans(spans).SerializeToString()
        return self._send("traces", body, timeout)

    def send_logs(self, items: Sequence[str], timeout: float) -> Result:
        """Send one batch of encoded log records (called by the events' delivery layer)."""
        if not items:
            return OK
        resource, schema_url = self._resource_message()
        return self._send("logs", _otlp_logs.request(resource, items, schema_url), timeout)

    def _send(self, signal: str, body: bytes, timeout: float) -> Result:
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        try:
            if self._grpc is not None:
                result: Result = self._grpc.call(signal, body, timeout)
                return result
            self._response.status = None
            try:
                body = compress(body, self._compression)
                self._session.post_body(self._urls[signal], self._post_headers, body, timeout)
            except Unanswered:  # failed: the status (if any) says how
                pass
        finally:
            otel_context.detach(token)
        status = self._response.status
        if status is None:  # no answer at all: refused, reset, timed out
            return Result(Outcome.RETRY, None, "OTLP export failed (no response)")
        if status < 300:
            return OK
        return classify_status(status, self._response.retry_after, f"OTLP HTTP {status}")

    def _request(self, spans: Sequence[str]) -> bytes:
        message = self._resource_message()
        return request(message[0], _SCOPE_MESSAGE, spans, message[1])

    # -- the pipeline's calls --------------------------------------------------------------------
    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch of records (spans; events as log records); send metrics when due."""
        spans = [rec for rec in records if rec.get("type") != "event"]
        if spans:  # events go by the logs' delivery only: counted, spooled and sent once
            self.delivery.deliver(spans)
        if self.logs and len(spans) < len(records):
            self.log_delivery.deliver(self._log_items(records))  # type: ignore[arg-type]
        self._metrics_due()

    def export_spans(
        self, items: Iterable[_span.Span | _span.Event], resource: RecordResource
    ) -> None:
        """Deliver one batch of finished spans and events (the pipeline's span path); send
        metrics when due."""
        if resource is not self._bound:
            self.bind(resource)
        events: list[_span.Event] = []
        # Delivery takes any JSON-able items (spooled as JSON): here encoded spans as text.
        self.delivery.deliver(self._encoder.encode(items, events))  # type: ignore[arg-type]
        if events and self.logs:
            logs = self._log_items(to_records(events, resource))
            self.log_delivery.deliver(logs)  # type: ignore[arg-type]
        self._metrics_due()

    def _log_items(self, records: Sequence[Record]) -> list[str]:
        try:
            return _otlp_logs.log_items(
                _encodable(records), _SCOPE_NAME, _attributes, self._times.ns
            )
        except Exception:  # as a span that cannot be encoded: lost, and counted
            _log.debug("obs-middleware: OTLP could not encode events", exc_info=True)
            lost = sum(1 for rec in records if rec.get("type") == "event")
            dropped.add((f"exporter_error:{self.name}",), lost)
            return []

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
        if self._metrics_on:
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
            if (m := metric(snap, self._start_ns, now)) is not None
        ]
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(_SCOPE, metrics, "")], "")])

    def send_metrics(self) -> bool:
        """Export the metrics now; False if the collector did not take them."""
        if not self._metrics_on or not self.delivery.breaker.allow():
            return False
        data = self.metrics_data()
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        exporting = EXPORTING.set(True)
        try:
            if self._grpc is not None:
                body = encode_metrics(data).SerializeToString()
                result = self._grpc.call("metrics", body, self._request_timeout())
                ok = result.outcome is Outcome.OK
            else:
                assert self._metrics is not None
                exported = self._metrics.export(data, timeout_millis=self.timeout_s * 1000)
                ok = exported is MetricExportResult.SUCCESS
        except Exception:  # metrics are cumulative: the next export carries them
            ok = False
        finally:
            EXPORTING.reset(exporting)
            otel_context.detach(token)
        if not ok and not self._metrics_warned:
            self._metrics_warned = True
            _log.warning("obs-middleware: OTLP metrics export to %s failed", self.endpoint)
        return ok

    def _request_timeout(self) -> float:
        # Shorter once the process stops waiting on backends (see ``Delivery.timeout``).
        return min(self.timeout_s, self.delivery.timeout())

    def flush(self) -> None:
        """Replay the spools, send the metrics."""
        self.delivery.flush()
        self.log_delivery.flush()
        if self._metrics_on:
            self._metrics_sent = time.monotonic()
            self.send_metrics()

    def shutdown(self) -> None:
        """Seal the spools; close the session, the gRPC channel, the SDK's metric exporter."""
        self.delivery.close()
        self.log_delivery.close()
        self._session.close()
        if self._grpc is not None:
            self._grpc.close()
        if self._metrics is not None:
            self._metrics.shutdown()

    def after_fork(self) -> None:
        """In a forked child: a new session, channel and metric exporter, and a new instance
        whose metrics start now.

        ``requests`` sessions (ours, the SDK's) would share the parent's pooled connections (and
        pool locks), a gRPC channel its threads. The parent's are dropped unused, which closes
        only the child's copies of their sockets. The child is a new ``service.instance.id``
        with its own ``process.pid``, and its cumulative metrics (reset in the child) start at
        the fork.
        """
        self._session, self._metrics = self._clients()
        if self._grpc is not None:
            self._grpc.after_fork()
        self._resources = {}
        self._resource_messages = {}
        self._start_ns = time.time_ns()
        self._metrics_sent = time.monotonic()
        self.delivery.after_fork()
        self.log_delivery.after_fork()


def from_spec(arg: str) -> OTLPExporter:
    """``otlp`` or ``otlp:<base URL>``; ``otlp:grpc://host:4317`` (``grpcs://``: TLS) for gRPC,
    as is any URL when ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``."""
    return OTLPExporter(arg or None)
