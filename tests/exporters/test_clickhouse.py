"""ClickHouse exporter: the insert request, error classification, DDL (live suite:
integrations/clickhouse)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from obs_middleware import _setup
from obs_middleware._core.metrics import registry
from obs_middleware._delivery import DeliveryOptions
from obs_middleware.exporters.clickhouse import ClickHouseExporter, ddl, views

from ._identity import RESOURCE, finished, identity, stack_ok

FAST = DeliveryOptions(timeout_s=2, backoff_s=0.001, backoff_max_s=0.002)


class FakeServer:
    """Answers like ClickHouse's HTTP interface does: scripted (status, body) pairs, then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.script: list[tuple[int, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append((parse_qs(urlsplit(self.path).query), body))
                status, answer = server.script.pop(0) if server.script else (200, b"")
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def _metrics():
    registry.reset()


def test_insert_is_json_each_row_with_best_effort_times(server):
    exporter = ClickHouseExporter(server.url, table="db.events", delivery=FAST)
    exporter.export([{"type": "span", "name": "a", "http.route": "/x"}])
    ((query, body),) = server.requests
    assert query["query"] == ["INSERT INTO db.events FORMAT JSONEachRow"]
    assert query["date_time_input_format"] == ["best_effort"]
    assert body == b'{"type":"span","name":"a","http_route":"/x"}\n'


def test_data_errors_are_dropped_and_overload_is_retried(server):
    exporter = ClickHouseExporter(server.url, delivery=FAST)
    server.script = [(500, b"Code: 27, e.displayText() = DB::Exception: Cannot parse input")]
    exporter.export([{"name": "a"}])
    assert registry.snapshot()["obs.dropped"].points == {("rejected:clickhouse",): 1}
    server.script = [(500, b"Code: 202, e.displayText() = DB::Exception: Too many queries")]
    exporter.export([{"name": "b"}])
    assert len(server.requests) == 3  # the overloaded insert went through on its retry
    server.script = [(500, b"Code: 241, e.displayText() = DB::Exception: Memory limit")]
    exporter.export([{"name": "c"}, {"name": "d"}])
    assert [body for _, body in server.requests[-2:]] == [b'{"name":"c"}\n', b'{"name":"d"}\n']


def test_create_table_runs_the_shipped_ddl_first(server):
    exporter = ClickHouseExporter(server.url, table="t1", create_table=True, delivery=FAST)
    exporter.export([{"name": "a"}])
    (_, create), (insert, rows) = server.requests
    assert create.decode().startswith("-- obs-middleware")
    assert "CREATE TABLE IF NOT EXISTS t1\n(" in create.decode()
    assert insert["query"] == ["INSERT INTO t1 FORMAT JSONEachRow"]
    assert rows == b'{"name":"a"}\n'


def test_table_names_are_checked():
    assert "CREATE TABLE IF NOT EXISTS analytics.obs\n" in ddl("analytics.obs")
    for bad in ("x; DROP TABLE y", "a b", ""):
        with pytest.raises(ValueError):
            ddl(bad)
        with pytest.raises(ValueError):
            ClickHouseExporter(table=bad)


def test_spec_and_environment(monkeypatch, server):
    monkeypatch.setenv("OBS_CLICKHOUSE_TABLE", "t2")
    exporter = _setup.build_config(exporters=[f"clickhouse:{server.url}"]).exporters[0]
    assert isinstance(exporter, ClickHouseExporter)
    assert (exporter.url, exporter.table) == (server.url, "t2")


def test_inserted_rows_carry_the_process_identity_and_stack_trace_columns(server):

    exporter = ClickHouseExporter(server.url, delivery=FAST)
    exporter.export_spans(finished(), RESOURCE)
    ((_, body),) = server.requests
    rows = [json.loads(line) for line in body.splitlines()]
    columns = {key.replace(".", "_"): value for key, value in identity().items()}
    assert len(rows) == 2
    assert all(r.items() >= columns.items() for r in rows)
    assert stack_ok(rows[0]["exception_stacktrace"])


def test_views_are_one_statement_each_named_after_their_table():
    default = views()
    assert [s.split(" AS\n")[0] for s in default] == [
        "CREATE VIEW IF NOT EXISTS obs_ai_text",
        "CREATE VIEW IF NOT EXISTS obs_ai_image",
    ]
    assert all("FROM obs_events\n" in s and ";" not in s and "--" not in s for s in default)
    named = views("db.events")
    assert named[0].startswith("CREATE VIEW IF NOT EXISTS db.events_ai_text AS")
    assert "FROM db.events\n" in named[1]
    with pytest.raises(ValueError):
        views("events; DROP TABLE x")
