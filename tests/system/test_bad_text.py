"""Text no UTF-8 encoder accepts (lone surrogates: a file name ``os.fsdecode`` could not decode)
reaches every exporter: each writes it with U+FFFD in place of the surrogate and loses nothing
else of the batch."""

from __future__ import annotations

import gzip
import io
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, generate_latest

import obs_middleware as obs
from obs_middleware._delivery import DeliveryOptions
from obs_middleware._spool import Spool
from obs_middleware.exporters.clickhouse import ClickHouseExporter
from obs_middleware.exporters.console import ConsoleExporter
from obs_middleware.exporters.http import HttpExporter
from obs_middleware.exporters.jsonl import JsonlExporter
from obs_middleware.exporters.otlp import OTLPExporter
from obs_middleware.exporters.prometheus import ObsCollector
from obs_middleware.exporters.sqlite import COLUMNS, SqliteExporter, connect, row_to_record
from obs_middleware.exporters.tinybird import TinybirdExporter
from obs_middleware.integrations._ai_metrics import ai_errors
from obs_middleware.testing.emulators.tinybird import TinybirdEmulator

BAD = os.fsdecode(b"report-\xff.csv")  # what os.listdir() returns for that name
GOOD = "report-\ufffd.csv"
SPANS = 501
FAST = DeliveryOptions(timeout_s=5, backoff_s=0.001, backoff_max_s=0.002, retry_budget_s=5)


def produce() -> None:
    """501 spans, one with the name in an attribute value, a key, and its error message."""
    for i in range(SPANS):
        with obs.span("work", file=f"f{i}.csv") as span:
            if i == 250:
                span.attrs["file"] = BAD
                span.attrs[BAD] = 1
                span.record_exception(ValueError(f"cannot parse {BAD}"))


def check(spans: list[dict[str, Any]]) -> None:
    """Every span arrived; the bad one carries the name with U+FFFD."""
    assert len(spans) == SPANS
    bad = [s for s in spans if s["file"] == GOOD]
    assert len(bad) == 1, [s["file"] for s in spans if not s["file"].startswith("f")]
    assert bad[0][GOOD] == 1
    assert GOOD in bad[0]["error_message"]


class Receiver:
    """A loopback HTTP server keeping each request body (gunzipped) by path; answers 200."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                path = self.path.split("?", 1)[0]
                receiver.bodies.setdefault(path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def lines(self, path: str = "/") -> list[dict[str, Any]]:
        return [orjson.loads(line) for b in self.bodies.get(path, []) for line in b.splitlines()]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def run(configured: Callable[..., Any], exporter: Any) -> None:
    configured(exporters=[exporter])
    produce()
    obs.flush(10.0)


def test_jsonl_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    run(configured, JsonlExporter(path))
    check([orjson.loads(line) for line in path.read_bytes().splitlines()])


@pytest.mark.parametrize("format", ["ndjson", "json"])
def test_http_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any], receiver: Receiver, format: str
) -> None:
    run(configured, HttpExporter(receiver.url, format=format, delivery=FAST))
    if format == "ndjson":
        check(receiver.lines())
    else:
        check([s for b in receiver.bodies["/"] for s in orjson.loads(b)])


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_spool_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any], tmp_path: Path
) -> None:
    spool = str(tmp_path / "spool")
    options = DeliveryOptions(
        timeout_s=1, max_attempts=1, breaker_failures=1, spool_dir=spool, flush_budget_s=0.1
    )
    exporter = HttpExporter(closed_port_url(), delivery=options)
    run(configured, exporter)
    exporter.shutdown()
    reader = Spool(spool, 1 << 30, 0.0)
    check([r for batch in reader.batches() for r in batch])


def test_sqlite_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "obs.db"
    run(configured, SqliteExporter(path))
    conn = connect(path)
    try:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM records ORDER BY id").fetchall()
    finally:
        conn.close()
    check([row_to_record(r) for r in rows])


def test_tinybird_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any],
) -> None:
    with TinybirdEmulator() as tb:
        run(configured, TinybirdExporter(token="test-token", host=tb.url, delivery=FAST))
        rows = tb.rows("obs_events")
    assert tb.quarantine("obs_events") == []
    check([{**orjson.loads(r.get("attributes") or "{}"), **r} for r in rows])


def test_clickhouse_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any], receiver: Receiver
) -> None:
    run(configured, ClickHouseExporter(receiver.url, delivery=FAST))
    check([{**orjson.loads(r.get("attributes") or "{}"), **r} for r in receiver.lines()])


def test_otlp_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any], receiver: Receiver
) -> None:
    run(configured, OTLPExporter(receiver.url, metrics=False, delivery=FAST))
    spans = []
    for body in receiver.bodies.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs: dict[str, Any] = {
                        a.key: a.value.string_value or a.value.int_value for a in span.attributes
                    }
                    for event in span.events:
                        for a in event.attributes:
                            if a.key == "exception.message":
                                attrs["error_message"] = a.value.string_value
                    spans.append(attrs)
    check(spans)


def test_console_exports_every_span_with_surrogates_replaced(
    configured: Callable[..., Any],
) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a UTF-8 terminal
    run(configured, ConsoleExporter(out))
    out.flush()
    lines = [line for line in out.buffer.getvalue().decode().splitlines() if "work " in line]
    assert len(lines) == SPANS
    assert sum(f"file={GOOD}" in line and f"{GOOD}=1" in line for line in lines) == 1


def test_metric_labels_with_surrogates_are_exported_replaced(
    configured: Callable[..., Any], receiver: Receiver, tmp_path: Path
) -> None:
    # A provider's model name becomes a label: JSON's "\\udcff" escape decodes to a surrogate.
    sqlite = SqliteExporter(tmp_path / "obs.db", metrics_interval_s=0)
    otlp = OTLPExporter(receiver.url, metrics_interval_s=0, delivery=FAST)
    configured(exporters=[sqlite, otlp])
    ai_errors.add(("openai", BAD, "chat", "APIError"))
    with obs.span("x"):
        pass
    obs.flush(10.0)
    conn = connect(tmp_path / "obs.db")
    try:
        (labels,) = conn.execute("SELECT labels FROM metrics WHERE name = 'ai.errors'").fetchone()
    finally:
        conn.close()
    assert orjson.loads(labels)["ai.model"] == GOOD
    models = {
        a.value.string_value
        for body in receiver.bodies["/v1/metrics"]
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "ai.errors"
        for point in m.sum.data_points
        for a in point.attributes
        if a.key == "ai.model"
    }
    assert models == {GOOD}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ObsCollector())  # type: ignore[no-untyped-call]
    assert f'ai_model="{GOOD}"' in generate_latest(registry).decode()
