"""The dashboard's JSON endpoints and page, over a store written by the SQLite exporter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from obs_middleware.cli._stats import usd
from obs_middleware.dashboard import create_app
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store


def stamp(offset_s: float) -> str:
    now = time.time() + offset_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def server(i: int, route: str, ms: float, user: str, *, error: bool = False) -> list[dict]:
    trace = f"{i:032x}"
    root = {
        "type": "span", "name": f"GET {route}", "trace_id": trace, "span_id": f"{i:016x}",
        "parent_id": None, "service": "svc", "environment": "test", "start": stamp(i * 0.1),
        "duration_ms": ms, "status": "error" if error else "ok", "error_type": None,
        "error_message": None, "user_id": user, "tier": "pro", "request_id": trace,
        "span.kind": "server", "http.method": "GET", "http.route": route,
        "http.status_code": 500 if error else 200,
    }  # fmt: skip
    child = {
        **root, "name": "ai.request", "span_id": f"{i + 10_000:016x}", "parent_id": root["span_id"],
        "start": stamp(i * 0.1 + 0.001),
        "duration_ms": ms / 2, "status": "ok", "span.kind": "client", "ai.provider": "openai",
        "ai.model": "gpt-4o-mini", "cost.usd": 0.01, "http.route": None, "http.method": None,
        "http.status_code": None,
    }  # fmt: skip
    event = {**child, "type": "event", "name": "image.generated", "span_id": child["span_id"],
             "parent_id": None, "duration_ms": None, "start": stamp(i * 0.1 + 0.002)}  # fmt: skip
    return [child, event, root]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path)
    for i in range(1, 41):
        route = "/a" if i % 2 else "/b/{id}"
        exporter.export(server(i, route, float(i), f"u{i % 3}", error=i % 10 == 0))
    exporter.shutdown()
    return path


@pytest.fixture
def client(store: Path) -> TestClient:
    return TestClient(create_app(store))


def test_overview_totals_and_routes_equal_the_store_figures(
    client: TestClient, store: Path
) -> None:
    body = client.get("/api/overview").json()
    s = Store(store)
    routes = s.routes(Filters())
    s.close()
    assert body["requests"] == 40
    assert body["error_rate"] == pytest.approx(4 / 40)
    assert body["ai_calls"] == 40 and body["cost_usd"] == pytest.approx(0.4)
    assert body["routes"] == routes
    points = body["series"]["points"]
    assert sum(p["requests"] for p in points) == 40


def test_window_keeps_only_the_newest_records(client: TestClient) -> None:
    body = client.get("/api/overview", params={"window": "1"}).json()
    assert 0 < body["requests"] < 40  # one second before the newest record: 10 to 11 of them


def test_trace_filters_select_by_status_user_route_duration_and_name(client: TestClient) -> None:
    def traces(**params: str) -> list[dict]:
        return client.get("/api/traces", params=params).json()["traces"]

    assert len(traces()) == 40
    assert {t["status"] for t in traces(status="error")} == {"error"}
    assert len(traces(status="error")) == 4
    assert {t["user_id"] for t in traces(user="u1")} == {"u1"}
    assert {t["route"] for t in traces(route="/b/{id}")} == {"/b/{id}"}
    assert all(t["duration_ms"] >= 30 for t in traces(min_ms="30"))
    assert len(traces(min_ms="30")) == 11
    assert {t["name"] for t in traces(q="/b/")} == {"GET /b/{id}"}
    first = traces(limit="1")[0]
    assert first["records"] == 3 and first["cost_usd"] == pytest.approx(0.01)


def test_trace_detail_returns_its_records_in_start_order_and_404_for_unknown(
    client: TestClient,
) -> None:
    trace_id = f"{7:032x}"
    records = client.get(f"/api/traces/{trace_id}").json()["records"]
    assert [r["name"] for r in records] == ["GET /a", "ai.request", "image.generated"]
    assert records[1]["parent_id"] == records[0]["span_id"]
    assert client.get(f"/api/traces/{'f' * 32}").status_code == 404


def test_cost_database_jobs_and_meta_endpoints_answer(client: TestClient) -> None:
    cost = client.get("/api/cost").json()
    assert sum(u["cost_usd"] for u in cost["by_user"]) == pytest.approx(0.4)
    assert cost["by_model"][0]["model"] == "gpt-4o-mini"
    assert client.get("/api/database").json() == {
        "slow_queries": [],
        "pools": [],
        "pool_peaks": [],
    }
    assert client.get("/api/jobs").json() == {"jobs": [], "dropped": []}
    meta = client.get("/api/meta").json()
    assert meta["services"] == ["svc"] and meta["routes"] == ["/a", "/b/{id}"]


def test_page_and_assets_are_served_and_a_missing_store_is_reported(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path / "later.db"))
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/overview").json()["empty"] is True


def test_slow_queries_carry_labels_that_tell_long_statements_apart(tmp_path: Path) -> None:
    columns = "SELECT users.id, users.email, users.name, users.created_at FROM users WHERE"
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path)
    for i, where in enumerate(("users.id = ?", "users.email = ?")):
        (child, _, root) = server(i + 1, "/a", 5.0 + i, "u1")
        child.update({"name": "db.query", "db.statement": f"{columns} {where}"})
        exporter.export([child, root])
    exporter.shutdown()
    queries = TestClient(create_app(path)).get("/api/database").json()["slow_queries"]
    labels = [q["label"] for q in queries]
    assert labels == ["SELECT users.id….email = ?", "SELECT users.id…ers.id = ?"]


def test_page_writes_dollars_as_obs_report_does() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = (Path(create_app.__code__.co_filename).parent / "static" / "app.js").read_text()
    match = re.search(r"^function fmtUsd\(v\) \{.*?^\}", source, re.S | re.M)
    assert match is not None
    values = [0.0, 3.6e-05, 9e-06, 0.00108, 0.0099, 0.0338, 0.425, 1.0, 1234.5, 1e-10, 1e-12]
    script = f"{match.group()}\nconsole.log(JSON.stringify({json.dumps(values)}.map(fmtUsd)));"
    shown = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert json.loads(shown) == [usd(v) for v in values]


def test_a_file_that_is_not_a_store_is_reported_not_raised(tmp_path: Path) -> None:
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text('{"type": "span"}\n')
    meta = TestClient(create_app(jsonl)).get("/api/meta")
    assert meta.status_code == 200
    assert meta.json() == {
        "error": f"{jsonl} is not an obs SQLite store (file is not a database)",
        "empty": True,
    }
