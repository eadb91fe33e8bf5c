"""OTLP exporter: records → SDK spans and metrics, and the OTLP/HTTP protobuf request.

The receiving end here is a loopback stub that decodes the request with the official protobuf
classes; the real peer (rotel → Phoenix) is in integrations/otlp.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind, StatusCode

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.metrics import http_duration, registry
from obs_middleware._delivery import DeliveryOptions, stop_waiting
from obs_middleware._record import Record, to_records
from obs_middleware._spool import Spool
from obs_middleware.exporters.otlp import OTLPExporter, to_otel_spans

from ._identity import RESOURCE, finished, identity, stack_ok


class Collector:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.script: list[int] = []
        c = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = c.script.pop(0) if c.script else 200
                if status == 200 and self.path == "/v1/traces":
                    c.traces.append(ExportTraceServiceRequest.FromString(body))
                elif status == 200 and self.path == "/v1/metrics":
                    c.metrics.append(ExportMetricsServiceRequest.FromString(body))
                elif status == 200 and self.path == "/v1/logs":
                    c.logs.append(ExportLogsServiceRequest.FromString(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


def trace(cap) -> list[dict]:
    with obs.span("GET /items/{id}", _kind="server", **{"http.method": "GET", "http.route": "/x"}):
        obs.set_user("u1")
        with obs.span("render", model="sdxl", tags=["a", "b"], extra={"k": 1}) as s:
            s.event("queued", position=3)
        try:
            with obs.span("ai.request", _kind="client"):
                raise ValueError("boom")
        except ValueError:
            pass
        with obs.span("moderated") as m:
            m.status = "content_violation"
    obs.emit("job.completed")
    return cap.records


def test_records_become_sdk_spans_with_links_kinds_status_and_events(obs_capture):
    records = trace(obs_capture)
    exporter = OTLPExporter("http://127.0.0.1:9", metrics=False)
    spans = {s.name: s for s in to_otel_spans(records, exporter.resource)}
    assert sorted(spans) == ["GET /items/{id}", "ai.request", "moderated", "render"]  # no event
    root, render = spans["GET /items/{id}"], spans["render"]
    assert root.context.trace_id == 1 and root.parent is None
    assert render.parent.span_id == root.context.span_id == 1
    assert render.context.trace_id == 1
    assert root.kind is SpanKind.SERVER and spans["ai.request"].kind is SpanKind.CLIENT
    assert root.attributes["http.request.method"] == "GET"
    assert root.attributes["enduser.id"] == "u1"
    assert list(render.attributes["tags"]) == ["a", "b"]
    assert render.attributes["extra"] == '{"k":1}'
    assert [e.name for e in render.events] == ["queued"]
    assert render.events[0].attributes["position"] == 3
    assert root.status.status_code is StatusCode.OK
    failed = spans["ai.request"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: boom"
    assert failed.events[-1].name == "exception"
    assert spans["moderated"].status.status_code is StatusCode.UNSET
    assert spans["moderated"].attributes["obs.status"] == "content_violation"
    # Deterministic clock: start 2026-01-01T00:00:00.001Z (+1 ms per reading).
    assert root.start_time == 1_767_225_600_000_000_000 + 1_000_000
    assert root.end_time - root.start_time == round(
        next(r for r in records if r["name"] == "GET /items/{id}")["duration_ms"] * 1e6
    )
    assert root.resource.attributes["service.name"] == "app"
    assert root.resource.attributes["deployment.environment.name"] == "development"
    assert "service.instance.id" in root.resource.attributes


def test_export_posts_protobuf_to_v1_traces(collector, obs_capture):
    records = trace(obs_capture)
    exporter = OTLPExporter(collector.url, metrics=False, resource_attributes={"worker.id": "w-3"})
    exporter.export(records)
    (request,) = collector.traces
    (rs,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
    assert resource["worker.id"] == "w-3"
    spans = rs.scope_spans[0].spans
    assert rs.scope_spans[0].scope.name == "obs_middleware"
    assert len(spans) == 4
    by_name = {s.name: s for s in spans}
    assert by_name["render"].parent_span_id == by_name["GET /items/{id}"].span_id


def test_failures_are_retried_by_delivery_and_spooled(collector, tmp_path, obs_capture):
    records = trace(obs_capture)
    registry.reset()
    collector.script = [500]
    options = DeliveryOptions(
        max_attempts=1, breaker_failures=1, breaker_cooldown_s=0, spool_dir=str(tmp_path)
    )
    exporter = OTLPExporter(collector.url, metrics=False, delivery=options)
    exporter.export(records)
    assert collector.traces == []
    exporter.flush()
    assert len(collector.traces) == 1
    assert registry.snapshot()["obs.dropped"].points == {}


def test_client_errors_are_not_retried(collector):
    registry.reset()
    collector.script = [400]
    exporter = OTLPExporter(collector.url, metrics=False)
    exporter.export(
        [
            {
                "type": "span",
                "name": "a",
                "trace_id": "1" * 32,
                "span_id": "2" * 16,
                "start": "2026-01-01T00:00:00.000001Z",
                "duration_ms": 1.0,
            }
        ]
    )
    assert registry.snapshot()["obs.dropped"].points == {("rejected:otlp",): 1}


def test_metrics_become_otlp_sums_gauges_and_histograms(collector):
    registry.reset()
    http_duration.record(("GET", "/x", "2xx"), 12.0)
    exporter = OTLPExporter(collector.url)
    assert exporter.send_metrics()
    (request,) = collector.metrics
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    hist = metrics["http.server.duration"]
    assert hist.unit == "ms"
    (point,) = hist.histogram.data_points
    assert (point.count, point.sum) == (1, 12.0)
    assert list(point.explicit_bounds)[:3] == [0.05, 0.1, 0.2]
    assert sum(point.bucket_counts) == 1
    assert not point.HasField("min")
    requests = metrics["http.server.requests"].sum
    assert requests.is_monotonic and requests.data_points[0].as_double == 1.0
    assert metrics["obs.exporter.breaker_state"].HasField("gauge")


def test_spec_resolution():
    exporter = _setup.build_config(exporters=["otlp:http://127.0.0.1:4318/"]).exporters[0]
    assert isinstance(exporter, OTLPExporter)
    assert exporter.endpoint == "http://127.0.0.1:4318"


def test_flush_with_the_collector_down_returns_promptly_and_counts_every_span(
    configured, closed_port
):
    configured(exporters=[OTLPExporter(closed_port, delivery=DeliveryOptions(spool_dir=None))])
    for _ in range(3):
        with obs.span("s"):
            pass
        started = time.monotonic()
        assert obs.flush(10)
        # Promptly (see OTLPExporter): one round of our retries, never the SDK's 1 s, 2 s, 4 s
        # backoffs nor a 5 s timeout. The bound is loose for a loaded machine.
        assert time.monotonic() - started < 1.5
    drops = registry.snapshot()["obs.dropped"].points
    assert sum(v for (reason,), v in drops.items() if reason.endswith(":otlp")) == 3


def test_the_sdk_logs_nothing_about_our_failed_exports_but_still_about_its_own(
    closed_port, caplog, obs_capture
):
    records = trace(obs_capture)
    caplog.set_level(logging.DEBUG)
    exporter = OTLPExporter(closed_port)
    exporter.export(records)
    exporter.flush()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []
    ours = [r for r in caplog.records if r.name == "obs_middleware"]
    assert len([r for r in ours if "further failures counted" in r.getMessage()]) == 1
    # Someone else's use of the SDK exporter logs as the SDK means it to.
    OTLPSpanExporter(endpoint=closed_port + "/v1/traces", timeout=0.2).export([])
    assert any(r.name.startswith("opentelemetry") for r in caplog.records)


def test_stop_waiting_cuts_a_request_in_flight_on_a_hung_collector_and_spools_it(
    hung_backend, tmp_path, obs_capture
):
    records = trace(obs_capture)
    exporter = OTLPExporter(
        hung_backend.url, metrics=False, delivery=DeliveryOptions(spool_dir=str(tmp_path))
    )
    worker = threading.Thread(target=exporter.export, args=(records,), daemon=True)
    worker.start()
    assert hung_backend.received.wait(10)
    started = time.monotonic()
    stop_waiting()
    worker.join(10)
    assert time.monotonic() - started < 1.0  # cut, not the 5 s request timeout waited out
    exporter.shutdown()
    spans = [rec for rec in records if rec["type"] != "event"]
    assert len(spans) < len(records)  # the trace has a point event: it goes by the logs alone
    assert spooled(tmp_path) == spans
    assert len(spooled(tmp_path / "logs")) == len(records) - len(spans)


def spooled(folder: Path) -> list[Record]:
    """What a spool folder holds, batches flattened."""
    spool = Spool(str(folder), 1 << 20, 1.0)
    found = []
    for batch in spool.batches():
        found.extend(batch)
        spool.ack()
    return found


@pytest.mark.parametrize("path", ["spans", "records"])
def test_the_resource_carries_the_identity_once_and_the_error_span_its_stack_trace(collector, path):
    exporter = OTLPExporter(collector.url, metrics=False)
    exporter.bind(RESOURCE)
    spans = finished()
    if path == "spans":
        exporter.export_spans(spans, RESOURCE)
    else:
        exporter.export(to_records(spans, RESOURCE))
    exporter.flush()
    ((resource_spans,),) = [req.resource_spans for req in collector.traces]
    attrs = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert attrs.items() >= identity().items()
    for span in resource_spans.scope_spans[0].spans:
        assert not {kv.key for kv in span.attributes} & identity().keys()
    step = next(s for s in resource_spans.scope_spans[0].spans if s.name == "step")
    stack = {kv.key: kv.value.string_value for kv in step.attributes}["exception.stacktrace"]
    assert stack_ok(stack)
