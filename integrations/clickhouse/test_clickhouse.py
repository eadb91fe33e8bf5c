"""The shipped DDL and every shipped query on a real ClickHouse; rows inserted by the exporter.

Verified with Debian's clickhouse-server 18.16.1 (the oldest SQL we promise to run on).
"""

from __future__ import annotations

import secrets

import orjson
import pytest

import obs_middleware as obs
from obs_middleware._core.metrics import registry
from obs_middleware.exporters.clickhouse import ClickHouseExporter, ddl, pipe_queries
from obs_middleware.exporters.tinybird import COLUMNS

from .conftest import exporting_to


@pytest.fixture
def table(clickhouse_url):
    name = f"obs_events_{secrets.token_hex(4)}"
    exporter = ClickHouseExporter(clickhouse_url, table=name)
    exporter.query(ddl(name))
    yield name
    exporter.query(f"DROP TABLE IF EXISTS {name}")


def rows(exporter: ClickHouseExporter, sql: str) -> list[dict]:
    body = exporter.query(sql + " FORMAT JSONEachRow").decode()
    return [orjson.loads(line) for line in body.splitlines() if line]


def traffic() -> None:
    """Two users, two models: errors, cache hits, a content violation, costs, latencies."""
    plan = [
        # (user, model, status, cache, cost, route status)
        ("u1", "sdxl", "ok", "hit", 0.01, 200),
        ("u1", "sdxl", "ok", "miss", 0.02, 200),
        ("u1", "sdxl", "error", "miss", 0.0, 500),
        ("u2", "gpt-4o", "content_violation", "", 0.005, 400),
        ("u2", "gpt-4o", "ok", "", 0.015, 200),
    ]
    for user, model, status, cache, cost, code in plan:
        with obs.span("POST /generate", _kind="server") as root:
            obs.set_user(user, "pro")
            root.set(**{"http.method": "POST", "http.route": "/generate", "http.status_code": code})
            attrs = {"ai.provider": "replicate", "ai.model": model, "cost.usd": cost}
            if cache:
                attrs["ai.cache_status"] = cache
            if status == "error":
                attrs.pop("cost.usd")
                attrs["cost.unknown"] = "failed call"
            with obs.span("ai.request", _kind="client", **attrs) as ai:
                ai.status = status
            if status == "error":
                root.status = "error"
    obs.emit("job.completed", **{"job.id": "j1"})


def test_exporter_inserts_rows_and_every_shipped_query_runs(clickhouse_url, table):
    exporter = ClickHouseExporter(clickhouse_url, table=table)
    with exporting_to(exporter):
        traffic()
        assert obs.flush(10)
        assert registry.snapshot()["obs.dropped"].points == {}
    (count,) = rows(exporter, f"SELECT count() AS n FROM {table}")
    assert count == {"n": "11"}  # 10 spans + 1 event (UInt64 is quoted in JSON)
    described = rows(exporter, f"DESCRIBE TABLE {table}")
    assert [c["name"] for c in described] == list(COLUMNS)

    results = {
        name: rows(exporter, sql.replace("obs_events", table))
        for name, sql in pipe_queries().items()
    }
    assert results["request_volume"] == [
        {
            "service": "app",
            "hour": results["request_volume"][0]["hour"],
            "requests": "5",
            "errors": "1",
        }
    ]
    by_model = {r["model"]: r for r in results["error_rate"]}
    assert by_model["sdxl"]["error_rate"] == pytest.approx(1 / 3)
    assert by_model[""]["calls"] == "5" and by_model[""]["errors"] == "1"
    # A content violation is the user's outcome: no error, as the failure alert counts.
    assert (by_model["gpt-4o"]["errors"], by_model["gpt-4o"]["user_errors"]) == ("0", "1")
    (cache,) = results["cache_hit_rate"]
    assert (cache["lookups"], cache["hits"], cache["hit_rate"]) == ("3", "1", pytest.approx(1 / 3))
    costs = {(r["user_id"], r["model"]): r for r in results["cost_by_user_model"]}
    assert costs[("u1", "sdxl")]["total_usd"] == pytest.approx(0.03)
    assert costs[("u1", "sdxl")]["unpriced_calls"] == "1"
    assert costs[("u2", "gpt-4o")]["total_usd"] == pytest.approx(0.02)
    (latency,) = results["latency_p95"]
    assert latency["route"] == "/generate" and latency["requests"] == "5"
    assert latency["p95_ms"] >= latency["p50_ms"] >= 0
    violations = {r["model"]: r for r in results["content_violation_rate"]}
    assert violations["gpt-4o"]["violation_rate"] == pytest.approx(0.5)
    assert violations["sdxl"]["violations"] == "0"


def test_create_table_on_first_insert_and_idempotent_ddl(clickhouse_url):
    name = f"obs_events_{secrets.token_hex(4)}"
    exporter = ClickHouseExporter(clickhouse_url, table=name, create_table=True)
    try:
        exporter.export([{"type": "span", "name": "a", "start": "2026-01-01T00:00:00.5Z"}])
        exporter.query(ddl(name))  # IF NOT EXISTS: a second run changes nothing
        assert rows(exporter, f"SELECT name, toString(start) AS s FROM {name}") == [
            {"name": "a", "s": "2026-01-01 00:00:00"}
        ]
    finally:
        exporter.query(f"DROP TABLE IF EXISTS {name}")


def test_a_missing_table_is_a_data_error_not_retried(clickhouse_url):
    registry.reset()
    exporter = ClickHouseExporter(clickhouse_url, table="no_such_table_here")
    exporter.export([{"name": "a"}])
    assert registry.snapshot()["obs.dropped"].points == {("rejected:clickhouse",): 1}
    assert registry.snapshot()["obs.exporter.retries"].points == {}
