"""Tinybird exporter against the Events API emulator, and the shipped datasource/pipes."""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path
from urllib.request import Request, urlopen

import orjson
import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.metrics import registry
from obs_middleware._delivery import DeliveryOptions
from obs_middleware.exporters.clickhouse import pipe_queries
from obs_middleware.exporters.tinybird import COLUMNS, TinybirdExporter, asset_path
from obs_middleware.testing.emulators.tinybird import TinybirdEmulator, parse_datasource

from ._identity import RESOURCE, finished, identity, stack_ok

FAST = DeliveryOptions(timeout_s=5, backoff_s=0.001, backoff_max_s=0.002, retry_budget_s=3)


@pytest.fixture
def tb():
    with TinybirdEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _metrics():
    registry.reset()


def datasource_columns() -> list:
    text = Path(asset_path("tinybird", "datasources", "obs_events.datasource")).read_text()
    return parse_datasource(text)


def test_shipped_schema_datasource_and_clickhouse_ddl_have_the_encoder_columns():
    columns = datasource_columns()
    assert [c.name for c in columns] == list(COLUMNS)
    assert all(c.key == c.name for c in columns)  # JSONPaths read the row's keys
    ddl = Path(asset_path("clickhouse", "obs_events.sql")).read_text()
    assert re.findall(r"^\s+`(\w+)`", ddl, re.M) == list(COLUMNS)


def test_pipes_cover_the_seed_analyses_and_read_only_known_columns():
    queries = pipe_queries()
    assert sorted(queries) == [
        "ai_image_calls",
        "ai_text_calls",
        "cache_hit_rate",
        "content_violation_rate",
        "cost_by_service",
        "cost_by_user_model",
        "error_rate",
        "latency_p95",
        "request_volume",
        "tier_distribution",
    ]
    for sql in queries.values():
        assert "FROM obs_events" in sql
        assert "{{" not in sql  # plain SQL: runs on ClickHouse as it is


def test_export_reaches_the_datasource_gzip_with_token_and_wait_false(tb, obs_capture):
    exporter = TinybirdExporter(token="test-token", host=tb.url, delivery=FAST)
    with obs.span("GET /items/{id}", _kind="server", **{"http.route": "/items/{id}"}):
        obs.set_user("u7", "pro")
        with obs.span("ai.request", **{"ai.model": "sdxl", "cost.usd": 0.01}):
            pass
    exporter.export(obs_capture.records)
    (req,) = tb.requests
    assert req["status"] == 202
    assert req["path"] == "/v0/events?name=obs_events&wait=false"
    assert req["headers"]["authorization"] == "Bearer test-token"
    assert req["headers"]["content-encoding"] == "gzip"
    rows = tb.rows("obs_events")
    assert [(r["name"], r["user_id"], r.get("ai_model")) for r in rows] == [
        ("ai.request", "u7", "sdxl"),
        ("GET /items/{id}", "u7", None),
    ]
    assert tb.quarantine("obs_events") == []


def test_the_pipeline_sends_rows_built_from_finished_spans(tb, configured):
    exporter = TinybirdExporter(token="test-token", host=tb.url, delivery=FAST)
    configured(exporters=[exporter], service="svc")
    with obs.span("POST /v1/images", _kind="server", **{"http.route": "/v1/images"}):
        obs.set_user("u7", "pro")
        with obs.span("ai.request", _kind="client", **{"ai.model": "sdxl", "seed": 42}) as ai:
            ai.event("queued", position=3)
    obs.emit("job.completed", **{"job.id": "j1"})
    assert obs.flush(5)
    ai_row, root_row, event_row = tb.rows("obs_events")
    assert (ai_row["ai_model"], ai_row["span_kind"], ai_row["user_id"]) == ("sdxl", "client", "u7")
    assert ai_row["parent_id"] == root_row["span_id"] and root_row["http_route"] == "/v1/images"
    extra = orjson.loads(ai_row["attributes"])
    assert extra["seed"] == 42 and extra["events"][0]["position"] == 3
    assert (event_row["type"], event_row["job_id"]) == ("event", "j1")
    assert tb.quarantine("obs_events") == []


def test_log_events_land_as_rows_of_the_shipped_datasource(tb, configured):
    exporter = TinybirdExporter(token="test-token", host=tb.url, delivery=FAST)
    configured(exporters=[exporter], logs="warning")
    with obs.span("GET /render", _kind="server") as root:
        try:
            raise TimeoutError("upstream timed out")
        except TimeoutError:
            logging.getLogger("app.render").exception("giving up")
    assert obs.flush(5)
    log_row, root_row = tb.rows("obs_events")
    assert (log_row["type"], log_row["name"], log_row["trace_id"]) == (
        "event",
        "log",
        root.trace_hex,
    )
    assert log_row["span_id"] == root_row["span_id"]
    assert log_row["exception_stacktrace"].endswith(
        "in test_log_events_land_as_rows_of_the_shipped_datasource"
    )
    extra = orjson.loads(log_row["attributes"])
    assert (extra["log.level"], extra["log.logger"], extra["log.message"]) == (
        "ERROR",
        "app.render",
        "giving up",
    )
    assert tb.quarantine("obs_events") == []


def test_429_is_retried_after_retry_after(tb):
    tb.fail_next(429, 1, retry_after="0")
    exporter = TinybirdExporter(token="test-token", host=tb.url, delivery=FAST)
    exporter.export([{"type": "event", "name": "e", "start": "2026-01-01T00:00:00Z"}])
    assert [r["status"] for r in tb.requests] == [429, 202]
    assert len(tb.rows("obs_events")) == 1
    assert registry.snapshot()["obs.exporter.retries"].points == {("tinybird",): 1}


def test_rate_limit_answers_429_with_rate_limit_headers():
    with TinybirdEmulator(requests_per_s=2) as tb:
        answers = []
        for _ in range(3):
            req = Request(
                f"{tb.url}/v0/events?name=obs_events",
                data=b'{"name":"x"}',
                headers={"Authorization": "Bearer test-token"},
            )
            try:
                with urlopen(req) as resp:
                    answers.append((resp.status, resp.headers["X-RateLimit-Remaining"]))
            except Exception as exc:  # urllib raises on 429
                answers.append((exc.code, exc.headers["Retry-After"]))  # type: ignore[attr-defined]
        assert answers == [(202, "1"), (202, "0"), (429, "1")]


def test_quarantined_rows_are_counted(tb):
    exporter = TinybirdExporter(token="test-token", host=tb.url, delivery=FAST)
    good = {"type": "span", "name": "ok", "start": "2026-01-01T00:00:00Z"}
    # A row can still be refused by a schema changed behind our back: the emulator's is stricter.
    tb.schemas["obs_events"] = [c for c in datasource_columns() if c.name != "name"] + [
        parse_datasource("SCHEMA >\n    `name` Int64 `json:$.name`")[0]
    ]
    exporter.export([good, good])
    assert exporter.quarantined == 2
    assert len(tb.quarantine("obs_events")) == 2
    assert registry.snapshot()["obs.dropped"].points == {("quarantined:tinybird",): 2}


def test_oversized_batches_are_split_below_the_request_limit():
    with TinybirdEmulator(max_request_bytes=400) as tb:
        exporter = TinybirdExporter(
            token="test-token", host=tb.url, compress=False, max_request_bytes=400, delivery=FAST
        )
        records = [{"type": "event", "name": f"e{i}", "status": "x" * 60} for i in range(12)]
        exporter.export(records)
        assert {r["status"] for r in tb.requests} == {202}
        assert [r["name"] for r in tb.rows("obs_events")] == [f"e{i}" for i in range(12)]


def test_emulator_enforces_its_request_limit_with_413():
    with TinybirdEmulator(max_request_bytes=100) as tb:
        status, _, body = tb.handle(
            "POST",
            "/v0/events?name=obs_events",
            {"authorization": "Bearer test-token"},
            b"x" * 101,
        )
        assert (status, body) == (413, {"error": "Request body over 100 bytes"})


def test_a_wrong_token_is_rejected_not_retried(tb):
    exporter = TinybirdExporter(token="nope", host=tb.url, delivery=FAST)
    exporter.export([{"name": "x"}])
    assert [r["status"] for r in tb.requests] == [403]
    assert registry.snapshot()["obs.dropped"].points == {("rejected:tinybird",): 1}


def test_emulator_scopes_wait_and_unknown_datasources():
    tokens = {"app": ("DATASOURCE:APPEND:obs_events",), "admin": ("DATASOURCE:CREATE",)}
    with TinybirdEmulator(tokens=tokens) as tb:
        body = gzip.compress(b'{"name":"a"}\n{"name":"b"}\n')
        headers = {"authorization": "Bearer app", "content-encoding": "gzip"}
        status, _, payload = tb.handle(
            "POST", "/v0/events?name=obs_events&wait=true", headers, body
        )
        assert (status, payload) == (200, {"successful_rows": 2, "quarantined_rows": 0})
        status, _, _ = tb.handle("POST", "/v0/events?name=other", headers, body)
        assert status == 403
        admin = {"authorization": "Bearer admin"}
        status, _, payload = tb.handle("POST", "/v0/events?name=other", admin, b'{"x":1}')
        assert (status, payload["successful_rows"]) == (202, 1)
        assert tb.rows("other") == [{"x": 1}]
        status, _, _ = tb.handle("POST", "/v0/events", admin, b"{}")
        assert status == 400
        status, _, payload = tb.handle("POST", "/v0/events?name=obs_events", admin, b"nope\n{}")
        assert payload == {"successful_rows": 1, "quarantined_rows": 1}


def test_token_and_host_come_from_the_environment(monkeypatch, tb):
    monkeypatch.setenv("TB_TOKEN", "test-token")
    monkeypatch.setenv("TB_HOST", tb.url)
    config = _setup.build_config(exporters=["tinybird:obs_events"])
    exporter = config.exporters[0]
    assert isinstance(exporter, TinybirdExporter)
    exporter.export([{"name": "x"}])
    assert len(tb.rows("obs_events")) == 1
    monkeypatch.delenv("TB_TOKEN")
    with pytest.raises(ValueError, match="token"):
        TinybirdExporter()


def test_rows_carry_the_process_identity_and_stack_trace_columns(tb):
    exporter = TinybirdExporter(token="test-token", host=tb.url, delivery=FAST)
    exporter.export_spans(finished(), RESOURCE)
    rows = tb.rows("obs_events")
    columns = {key.replace(".", "_"): value for key, value in identity().items()}
    assert len(rows) == 2
    assert all(r.items() >= columns.items() for r in rows)
    assert stack_ok(rows[0]["exception_stacktrace"])
    assert tb.quarantine("obs_events") == []
