"""HTTP exporter and transport against a loopback collector stub.

Fluent Bit cannot be installed here (not in Debian 12, no gem host): its HTTP input's contract
(JSON array or object, tag from the URL path, optional gzip) is what the stub checks.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.metrics import registry
from obs_middleware._delivery import DeliveryOptions, Outcome
from obs_middleware.exporters.http import HttpExporter, HttpTransport, from_spec

from ._identity import identity, records, stack_ok


class Collector:
    """Records each request; answers from ``script`` (status codes), then 201."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[int] = []
        self.close_after_each = False
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = collector.script.pop(0) if collector.script else 201
                collector.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "status": status,
                    }
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                if collector.close_after_each:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def records(self) -> list[dict]:
        out: list[dict] = []
        for req in self.requests:
            if req["status"] >= 300:
                continue
            body = req["body"]
            if req["headers"].get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if req["headers"]["Content-Type"] == "application/json":
                out.extend(json.loads(body))
            else:
                out.extend(json.loads(line) for line in body.splitlines())
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


FAST = DeliveryOptions(timeout_s=2, backoff_s=0.001, backoff_max_s=0.002)


def test_batches_are_json_arrays_posted_to_the_tag_path_with_headers(collector, obs_capture):
    exporter = HttpExporter(
        collector.url, tag="app.obs", headers={"X-Token": "s3cr3t"}, delivery=FAST
    )
    with obs.span("GET /a", _kind="server", **{"http.route": "/a"}), obs.span("child"):
        pass
    exporter.export(obs_capture.records)
    exporter.shutdown()
    (req,) = collector.requests
    assert req["path"] == "/app.obs"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["X-Token"] == "s3cr3t"
    assert req["headers"]["User-Agent"].startswith("obs-middleware/")
    assert [r["name"] for r in collector.records()] == ["child", "GET /a"]
    assert collector.records() == obs_capture.records


def test_ndjson_and_gzip(collector):
    exporter = HttpExporter(collector.url, format="ndjson", gzip=True, delivery=FAST)
    records = [{"name": "a", "n": 1}, {"name": "b", "n": {1, 2}}]
    exporter.export(records)
    (req,) = collector.requests
    assert req["headers"]["Content-Encoding"] == "gzip"
    assert collector.records() == [{"name": "a", "n": 1}, {"name": "b", "n": [1, 2]}]


def test_server_errors_are_retried_on_a_fresh_connection(collector):
    collector.script = [500, 503]
    exporter = HttpExporter(collector.url, delivery=FAST)
    exporter.export([{"name": "a"}])
    assert [r["status"] for r in collector.requests] == [500, 503, 201]
    assert collector.records() == [{"name": "a"}]


def test_connection_closed_by_the_server_between_batches_is_reopened(collector):
    collector.close_after_each = True
    exporter = HttpExporter(collector.url, delivery=FAST)
    for i in range(3):
        exporter.export([{"i": i}])
    assert collector.records() == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_batches_over_the_size_limit_are_split(collector):
    exporter = HttpExporter(collector.url, max_request_bytes=200, delivery=FAST)
    records = [{"i": i, "pad": "x" * 40} for i in range(10)]
    exporter.export(records)
    assert len(collector.requests) > 1
    assert all(len(r["body"]) <= 200 for r in collector.requests)
    assert collector.records() == records


def test_client_errors_are_dropped_and_counted(collector):
    registry.reset()
    collector.script = [400]
    exporter = HttpExporter(collector.url, delivery=FAST, name="fluent")
    exporter.export([{"i": 1}, {"i": 2}])
    assert len(collector.requests) == 1
    assert registry.snapshot()["obs.dropped"].points == {("rejected:fluent",): 2}


def test_transport_basic_auth_from_userinfo_and_refused_connection():
    transport = HttpTransport("http://user:pw@127.0.0.1:9/base/")
    assert transport.headers["Authorization"] == "Basic dXNlcjpwdw=="
    assert transport.base_path == "/base"
    with pytest.raises(OSError):
        transport.post("/x", b"{}", {}, 1.0)
    with pytest.raises(ValueError):
        HttpTransport("ftp://example")


def test_response_classification(collector):
    collector.script = [429]
    transport = HttpTransport(collector.url)
    assert transport.post("/", b"", {}, 1.0).result().outcome is Outcome.RETRY


def test_spec_needs_a_url(monkeypatch):
    monkeypatch.delenv("OBS_HTTP_URL", raising=False)
    with pytest.raises(ValueError):
        from_spec("")
    monkeypatch.setenv("OBS_HTTP_TAG", "obs")
    exporter = from_spec("http://127.0.0.1:9880")
    assert exporter.path == "/obs"


def test_configure_resolves_the_exporter_name(collector):
    config = _setup.build_config(exporters=[f"http:{collector.url}"])
    assert isinstance(config.exporters[0], HttpExporter)


@pytest.mark.parametrize("format", ["json", "ndjson"])
def test_posted_records_carry_the_process_identity_and_the_stack_trace(format) -> None:

    exporter = HttpExporter("http://127.0.0.1:9", format=format)
    body = exporter.encode(records())
    docs = json.loads(body) if format == "json" else [json.loads(x) for x in body.splitlines()]
    assert len(docs) == 2
    assert all(doc.items() >= identity().items() for doc in docs)
    assert stack_ok(docs[0]["exception.stacktrace"])
