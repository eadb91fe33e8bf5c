"""OTLP over gRPC (``_otlp_grpc``): spans, log records and metrics sent to an in-process gRPC
collector (grpcio's server on loopback, decoding with the official classes), the status codes
mapped to delivery outcomes, the calls cut at shutdown; the real collector is in
integrations/otlp."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import span as _span
from obs_middleware._core.metrics import http_duration, registry
from obs_middleware._delivery import DeliveryOptions, stop_waiting
from obs_middleware._record import Resource
from obs_middleware._spool import Spool
from obs_middleware.exporters._otlp_grpc import GrpcChannel
from obs_middleware.exporters.otlp import OTLPExporter

from ._finished import collected

RESOURCE = Resource("svc", "prod", "1.0")
_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": ExportTraceServiceRequest,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": ExportMetricsServiceRequest,
    "opentelemetry.proto.collector.logs.v1.LogsService": ExportLogsServiceRequest,
}


class GrpcCollector:
    """A loopback OTLP/gRPC receiver: keeps each request decoded, by service; ``script``: the
    status codes to answer the next calls with; ``hang``: calls wait until released."""

    def __init__(self) -> None:
        self.received: dict[str, list[Any]] = {name: [] for name in _SERVICES}
        self.metadata: list[dict[str, str]] = []
        self.script: list[grpc.StatusCode] = []
        self.calls = 0
        self.hang = threading.Event()
        self.release = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        for name, message in _SERVICES.items():
            self.server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        name,
                        {
                            "Export": grpc.unary_unary_rpc_method_handler(
                                self._handler(name, message)
                            )
                        },
                    ),
                )
            )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.url = f"http://127.0.0.1:{port}"

    def _handler(self, name: str, message: Any) -> Any:
        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls += 1
            if self.hang.is_set():
                self.release.wait(10)
            if self.script:
                code = self.script.pop(0)
                if code is not grpc.StatusCode.OK:
                    context.abort(
                        code,
                        "Received message larger than max"
                        if code is grpc.StatusCode.RESOURCE_EXHAUSTED
                        else "scripted",
                    )
            self.metadata.append(dict(context.invocation_metadata()))
            self.received[name].append(message.FromString(request))
            return b""

        return export

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.received["opentelemetry.proto.collector.trace.v1.TraceService"]
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def logs(self) -> list[Any]:
        return [
            record
            for request in self.received["opentelemetry.proto.collector.logs.v1.LogsService"]
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]


@pytest.fixture
def collector() -> Iterator[GrpcCollector]:
    c = GrpcCollector()
    yield c
    c.release.set()
    c.server.stop(None)


def test_spans_events_and_metrics_arrive_over_grpc_with_headers_as_metadata(
    collector: GrpcCollector, configured: Any
) -> None:
    exporter = OTLPExporter(collector.url, protocol="grpc", headers={"X-Api-Key": "k-1"})
    configured(exporters=[exporter], service="grpc-svc")
    with obs.span("POST /x", _kind="server") as root:
        obs.emit("job.completed", duration_ms=3.0)
        http_duration.record(("POST", "/x", "2xx"), 5.0)
    assert obs.flush(10)
    (span,) = collector.spans()
    assert span.name == "POST /x" and span.trace_id == root.trace_id.to_bytes(16, "big")
    (record,) = collector.logs()
    assert record.event_name == "job.completed" and record.span_id == span.span_id
    metrics = collector.received["opentelemetry.proto.collector.metrics.v1.MetricsService"]
    names = {
        m.name
        for r in metrics
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert "http.server.duration" in names
    assert all(md.get("x-api-key") == "k-1" for md in collector.metadata)


def test_protocol_and_endpoint_resolution(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    for var in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    spec = _setup.build_config(exporters=["otlp:grpc://127.0.0.1:4317"]).exporters[0]
    assert isinstance(spec, OTLPExporter) and spec.protocol == "grpc"
    assert spec._grpc.target == "127.0.0.1:4317" and not spec._grpc.secure
    assert OTLPExporter("grpcs://collector.example:443")._grpc.secure
    assert (
        OTLPExporter("https://collector.example", protocol="grpc")._grpc.target
        == "collector.example:4317"
    )
    assert OTLPExporter().protocol == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    exporter = OTLPExporter()
    assert exporter.protocol == "grpc" and exporter.endpoint == "http://localhost:4317"
    assert OTLPExporter(protocol="http/protobuf").protocol == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    assert OTLPExporter()._grpc.compression is grpc.Compression.Gzip
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with caplog.at_level(logging.WARNING, "obs_middleware"):
        assert OTLPExporter().protocol == "http/protobuf"
    assert "not supported" in caplog.text
    with pytest.raises(ValueError, match="protocol"):
        OTLPExporter(protocol="thrift")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    assert not GrpcChannel("collector:4317", {}).secure
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_INSECURE")
    assert GrpcChannel("collector:4317", {}).secure


def test_with_the_collector_down_flush_returns_promptly_and_counts_every_span(
    configured: Any, closed_port: str
) -> None:
    url = closed_port.replace("http://", "grpc://")
    configured(exporters=[OTLPExporter(url, delivery=DeliveryOptions(spool_dir=None))])
    for _ in range(3):
        with obs.span("s"):
            pass
        started = time.monotonic()
        assert obs.flush(10)
        assert time.monotonic() - started < 1.5  # UNAVAILABLE at once, not a timeout waited out
    drops = registry.snapshot()["obs.dropped"].points
    assert sum(v for (reason,), v in drops.items() if reason.endswith(":otlp")) == 3


def finished(count: int) -> list[Any]:
    """``count`` finished spans, as the pipeline hands them over."""
    with collected() as items:
        for i in range(count):
            with _span.Span(f"s{i}", {}, "internal"):
                pass
    return items


def send(collector: GrpcCollector, count: int) -> None:
    options = DeliveryOptions(spool_dir=None, backoff_s=0.01)
    exporter = OTLPExporter(collector.url, protocol="grpc", metrics=False, delivery=options)
    exporter.export_spans(finished(count), RESOURCE)
    exporter.shutdown()


def test_unavailable_is_retried_a_rejection_is_not_and_too_large_is_bisected(
    collector: GrpcCollector,
) -> None:
    registry.reset()
    collector.script = [grpc.StatusCode.UNAVAILABLE]
    send(collector, 2)
    assert len(collector.spans()) == 2 and collector.calls == 2  # retried once
    collector.script, collector.calls = [grpc.StatusCode.INVALID_ARGUMENT], 0
    send(collector, 2)
    assert collector.calls == 1 and len(collector.spans()) == 2  # dropped, not retried
    drops = registry.snapshot()["obs.dropped"].points
    assert drops[("rejected:otlp",)] == 2
    collector.script, collector.calls = [grpc.StatusCode.RESOURCE_EXHAUSTED], 0
    send(collector, 4)
    assert collector.calls == 3 and len(collector.spans()) == 6  # halves sent apart
    registry.reset()


def test_stop_waiting_cancels_a_call_in_flight_and_spools_it(
    collector: GrpcCollector, tmp_path: Any
) -> None:
    items = finished(1)
    collector.hang.set()
    exporter = OTLPExporter(
        collector.url,
        protocol="grpc",
        metrics=False,
        delivery=DeliveryOptions(spool_dir=str(tmp_path)),
    )
    worker = threading.Thread(target=exporter.export_spans, args=(items, RESOURCE), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while collector.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    stop_waiting()
    worker.join(10)
    assert time.monotonic() - started < 1.0  # cut, not the 5 s timeout waited out
    exporter.shutdown()
    spool = Spool(str(tmp_path), 1 << 20, 1.0)
    found = [item for batch in spool.batches() for item in batch]
    assert len(found) == 1  # the encoded span, kept for the next run


def test_tls_with_the_collectors_certificate(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("CI=true but no openssl to make the test certificate")
        pytest.skip("no openssl to make the test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(2))
    received: list[bytes] = []

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        received.append(request)
        return b""

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            ),
        )
    )
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        options = DeliveryOptions(spool_dir=None, max_attempts=1)
        untrusted = OTLPExporter(
            f"https://localhost:{port}", protocol="grpc", metrics=False, delivery=options
        )
        untrusted.export_spans(finished(1), RESOURCE)
        assert received == []  # the system's CAs do not know this certificate
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(cert))
        exporter = OTLPExporter(f"grpcs://localhost:{port}", metrics=False, delivery=options)
        exporter.export_spans(finished(1), RESOURCE)
        (body,) = received
        assert ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans
        exporter.shutdown()
        untrusted.shutdown()
    finally:
        server.stop(None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_sends_on_a_channel_of_its_own(collector: GrpcCollector) -> None:
    options = DeliveryOptions(spool_dir=None, max_attempts=1)
    exporter = OTLPExporter(collector.url, protocol="grpc", metrics=False, delivery=options)
    exporter.export_spans(finished(1), RESOURCE)  # the parent's channel is open
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            exporter.after_fork()
            exporter.export_spans(finished(2), RESOURCE)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exporter.export_spans(finished(1), RESOURCE)  # the parent's channel still works
    assert len(collector.spans()) == 4
    exporter.shutdown()
