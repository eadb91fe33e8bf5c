"""SQLite store exporter: round trip of the unified record, WAL, retention, metric samples."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import obs_middleware as obs
from obs_middleware._core.metrics import Registry
from obs_middleware.exporters import sqlite as sqlite_exporter
from obs_middleware.exporters.memory import MemoryExporter
from obs_middleware.exporters.sqlite import (
    COLUMNS,
    SqliteExporter,
    connect,
    delete_service,
    row_to_record,
)

from ._identity import identity, records, stack_ok


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000250Z", time.gmtime())


def record(i: int, **attrs) -> dict:
    return {
        "type": "span",
        "name": "GET /items/{id}",
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "parent_id": None,
        "service": "svc",
        "environment": "test",
        "start": now_rfc3339(),
        "duration_ms": 1.5,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": "u1",
        "tier": "pro",
        "request_id": "r1",
        **attrs,
    }


def stored(path: Path) -> list[dict]:
    conn = connect(path)
    try:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM records ORDER BY id").fetchall()
        return [row_to_record(r) for r in rows]
    finally:
        conn.close()


def test_records_round_trip_unchanged_through_columns_and_json(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    records = [
        record(1, **{"http.route": "/items/{id}", "http.status_code": 200, "cost.usd": 0.0125}),
        record(2, **{"http.route": None, "ai.provider": "openai", "events": [{"name": "e"}]}),
        record(3, **{"db.statement": "SELECT ?", "custom": {"nested": [1, 2]}, "tags": ("a",)}),
    ]
    exporter = SqliteExporter(path)
    exporter.export(records)
    exporter.shutdown()
    expected = [dict(r) for r in records]
    expected[2]["tags"] = ["a"]  # tuples are stored as JSON arrays, as in the JSON lines exporter
    assert stored(path) == expected


def test_store_uses_wal_and_extracted_columns_are_queryable(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path, max_age_s=None)
    start = "2026-01-01T00:00:00.000250Z"
    exporter.export([record(1, start=start, **{"ai.model": "gpt-4o-mini", "cost.usd": 0.5})])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = conn.execute("SELECT ai_model, cost_usd, start_us, attributes FROM records").fetchone()
    assert row == ("gpt-4o-mini", 0.5, 1_767_225_600_000_250, None)
    conn.close()
    exporter.shutdown()


def test_age_retention_deletes_records_older_than_max_age(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path, max_age_s=3600)
    old = record(1, start="2020-01-01T00:00:00.000000Z")
    fresh = record(2, start=now_rfc3339())
    exporter.export([old, fresh])
    exporter.shutdown()
    assert [r["trace_id"] for r in stored(path)] == [fresh["trace_id"]]


def test_size_retention_keeps_the_store_under_max_bytes_dropping_oldest_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path, max_bytes=200_000, max_age_s=None)
    for batch in range(20):
        exporter.export([record(batch * 50 + i, blob="x" * 500) for i in range(50)])
    conn = exporter._db()
    used = (
        conn.execute("PRAGMA page_count").fetchone()[0]
        - conn.execute("PRAGMA freelist_count").fetchone()[0]
    ) * conn.execute("PRAGMA page_size").fetchone()[0]
    exporter.shutdown()
    ids = [int(r["trace_id"], 16) for r in stored(path)]
    assert used <= 200_000
    assert 0 < len(ids) < 1000
    assert ids == list(range(1000 - len(ids), 1000))  # the newest survive, in order


def test_counters_and_gauges_are_sampled_into_the_metrics_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "obs.db"
    registry = Registry()
    monkeypatch.setattr(sqlite_exporter, "registry", registry)
    registry.counter("test.sqlite.samples", ("kind",)).add(("a",), 3)
    registry.gauge("test.sqlite.level", ("pool.name",), lambda: {("p",): 2.5})
    registry.histogram("test.sqlite.duration", ("kind",)).record(("a",), 1.0)
    exporter = SqliteExporter(path)
    exporter.export([record(1)])
    exporter.shutdown()
    conn = connect(path)
    rows = conn.execute("SELECT name, service, kind, labels, value FROM metrics").fetchall()
    conn.close()
    assert {tuple(r) for r in rows} == {
        ("test.sqlite.samples", "svc", "counter", '{"kind":"a"}', 3.0),
        ("test.sqlite.level", "svc", "gauge", '{"pool.name":"p"}', 2.5),
    }  # histograms are not sampled: percentiles come exactly from the records


def test_delete_service_removes_only_that_service(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path)
    exporter.export([record(1), record(2, service="other")])
    exporter.shutdown()
    assert delete_service(path, "svc") == 1
    assert [r["service"] for r in stored(path)] == ["other"]


def test_sqlite_spec_through_the_pipeline_stores_what_memory_gets(
    tmp_path: Path, configured
) -> None:
    path = tmp_path / "spec.db"
    memory = MemoryExporter()
    config = configured(exporters=[f"sqlite:{path}", memory])
    assert isinstance(config.exporters[0], SqliteExporter)
    with obs.span("outer"), obs.span("inner"):
        obs.emit("tick", n=1)
    obs.shutdown(5.0)
    assert len(memory.records) == 3
    assert stored(path) == memory.records


def test_default_path_honours_obs_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OBS_STORE", str(tmp_path / "x.db"))
    assert SqliteExporter().path == str(tmp_path / "x.db")


def test_stored_records_keep_the_process_identity_and_the_stack_trace(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path)
    exporter.export(records())
    exporter.shutdown()
    rows = stored(path)
    assert len(rows) == 2
    assert all(r.items() >= identity().items() for r in rows)
    assert stack_ok(rows[0]["exception.stacktrace"])
