"""The shipped DDL and every shipped query on a real ClickHouse; rows inserted by the exporter.

Verified with Debian's clickhouse-server 18.16.1 (the oldest SQL we promise to run on).
"""

from __future__ import annotations

import secrets

import orjson
import pytest

import obs_middleware as obs
from obs_middleware._core.metrics import registry
from obs_middleware.exporters.clickhouse import ClickHouseExporter, ddl, pipe_queries, views
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


def ai_record(service: str, user: str, tier: str, model: str, **attrs: object) -> dict:
    """An AI call span record (a child: its parent is the request)."""
    return {
        "type": "span",
        "name": "ai.request",
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "parent_id": secrets.token_hex(8),
        "service": service,
        "environment": "production",
        "start": "2026-12-01T10:00:00.000000Z",
        "duration_ms": 100.0,
        "status": "ok",
        "user_id": user,
        "tier": tier,
        "ai.provider": "openai" if model.startswith("gpt") else "fal",
        "ai.model": model,
        **attrs,
    }


def request_record(service: str, user: str, tier: str) -> dict:
    """A root request span record."""
    return {
        "type": "span",
        "name": "POST /generate",
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "service": service,
        "environment": "production",
        "start": "2026-12-01T10:00:00.000000Z",
        "duration_ms": 120.0,
        "status": "ok",
        "user_id": user,
        "tier": tier,
    }


def mixed_text_and_image() -> list[dict]:
    """Two services; text calls (one without ``ai.modality``: its tokens say text), image calls
    (one without it: its image count says image), an unpriced image call, four users on two
    tiers."""
    text = {"ai.modality": "text"}
    image = {"ai.modality": "image"}
    return [
        request_record("chat-api", "u1", "free"),
        request_record("chat-api", "u2", "pro"),
        request_record("image-api", "u3", "pro"),
        request_record("image-api", "u4", "pro"),
        ai_record(
            "chat-api",
            "u1",
            "free",
            "gpt-4o",
            **text,
            **{"ai.input_tokens": 100, "ai.output_tokens": 50, "cost.usd": 0.002},
        ),
        ai_record(
            "chat-api",
            "u2",
            "pro",
            "gpt-4o",
            **{
                "ai.input_tokens": 300,
                "ai.cached_tokens": 100,
                "ai.output_tokens": 150,
                "cost.usd": 0.006,
            },
        ),
        ai_record(
            "image-api",
            "u3",
            "pro",
            "flux-dev",
            **image,
            **{"ai.image_count": 2, "cost.usd": 0.05, "ai.queue_ms": 400.0},
        ),
        ai_record(
            "image-api",
            "u4",
            "pro",
            "flux-dev",
            **{"ai.image_count": 1, "cost.usd": 0.025, "ai.queue_ms": 200.0},
        ),
        ai_record(
            "image-api",
            "u4",
            "pro",
            "flux-dev",
            **image,
            status="error",
            **{"ai.image_count": 1, "cost.unknown": "failed call"},
        ),
    ]


def test_text_and_image_views_cost_by_service_and_tiers_on_mixed_records(clickhouse_url, table):
    exporter = ClickHouseExporter(clickhouse_url, table=table)
    exporter.export(mixed_text_and_image())
    queries = {
        name: sql.replace("obs_events", table)
        for name, sql in pipe_queries().items()
        if name in ("ai_text_calls", "ai_image_calls", "cost_by_service", "tier_distribution")
    }
    results = {name: rows(exporter, sql) for name, sql in queries.items()}

    (text,) = results["ai_text_calls"]
    assert {k: text[k] for k in ("service", "provider", "model", "modality", "calls")} == {
        "service": "chat-api",
        "provider": "openai",
        "model": "gpt-4o",
        "modality": "text",
        "calls": "2",
    }
    assert (text["input_tokens"], text["cached_tokens"], text["output_tokens"]) == (
        "400",
        "100",
        "200",
    )
    assert text["total_usd"] == pytest.approx(0.008) and text["unpriced_calls"] == "0"

    (image,) = results["ai_image_calls"]
    assert (image["service"], image["model"], image["modality"]) == (
        "image-api",
        "flux-dev",
        "image",
    )
    assert (image["calls"], image["errors"], image["images"], image["unpriced_calls"]) == (
        "3",
        "1",
        "4",
        "1",
    )
    assert image["total_usd"] == pytest.approx(0.075)
    assert image["usd_per_image"] == pytest.approx(0.075 / 4)
    assert image["avg_queue_ms"] == pytest.approx(300.0)  # of the calls that report one

    by_service = {r["service"]: r for r in results["cost_by_service"]}
    assert list(by_service) == ["image-api", "chat-api"]  # most expensive first
    assert by_service["image-api"]["total_usd"] == pytest.approx(0.075)
    assert by_service["image-api"]["image_usd"] == pytest.approx(0.075)
    assert by_service["image-api"]["text_usd"] == pytest.approx(0.0)
    assert by_service["chat-api"]["text_usd"] == pytest.approx(0.008)
    assert by_service["chat-api"]["calls"] == "2"

    tiers = {r["tier"]: r for r in results["tier_distribution"]}
    assert list(tiers) == ["pro", "free"]
    assert (tiers["pro"]["users"], tiers["pro"]["requests"], tiers["pro"]["ai_calls"]) == (
        "3",
        "3",
        "4",
    )
    assert tiers["pro"]["ai_usd"] == pytest.approx(0.081)
    assert (tiers["free"]["users"], tiers["free"]["requests"]) == ("1", "1")
    assert tiers["free"]["ai_usd"] == pytest.approx(0.002)


def test_the_shipped_text_and_image_views_split_the_calls_by_modality(clickhouse_url, table):
    exporter = ClickHouseExporter(clickhouse_url, table=table)
    statements = views(table)
    try:
        for statement in statements:
            exporter.query(statement)
        exporter.export(mixed_text_and_image())
        text = rows(exporter, f"SELECT * FROM {table}_ai_text ORDER BY input_tokens")
        image = rows(exporter, f"SELECT * FROM {table}_ai_image ORDER BY images, status")
    finally:
        for view in ("ai_text", "ai_image"):
            exporter.query(f"DROP TABLE IF EXISTS {table}_{view}")
    assert [(r["service"], r["input_tokens"], r["output_tokens"]) for r in text] == [
        ("chat-api", "100", "50"),
        ("chat-api", "300", "150"),
    ]
    assert [(r["user_id"], r["images"], r["status"]) for r in image] == [
        ("u4", "1", "error"),
        ("u4", "1", "ok"),
        ("u3", "2", "ok"),
    ]
    assert sum(r["cost_usd"] for r in image) == pytest.approx(0.075)
