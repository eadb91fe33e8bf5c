"""Store figures that ``obs report`` and ``obs dashboard`` share: jobs, pools, time series, AI
calls by model, statements told apart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import obs_middleware as obs
from obs_middleware._core.metrics import Registry
from obs_middleware.exporters import sqlite as sqlite_exporter
from obs_middleware.exporters.memory import MemoryExporter
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store, fingerprint, short_labels


def test_jobs_are_counted_once_per_job_by_their_last_state(tmp_path: Path, configured) -> None:
    path = tmp_path / "obs.db"
    configured(exporters=[SqliteExporter(path)])
    for i in range(5):
        with obs.span("enqueue"):
            obs.emit("job.queued", **{"job.id": f"q{i}", "job.service_type": "render"})
    for i in range(3):
        try:
            with obs.job(f"r{i}", service_type="render"):
                if i == 2:
                    raise RuntimeError("out of memory")
        except RuntimeError:
            pass
    obs.shutdown(5.0)
    store = Store(path)
    jobs = {(j["service_type"], j["state"]): j["jobs"] for j in store.jobs(Filters())}
    store.close()
    assert jobs == {("render", "queued"): 5, ("render", "completed"): 2, ("render", "failed"): 1}


def test_pools_summarise_sampled_pool_metrics_per_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()  # the exporter samples this one; the process-wide one stays untouched
    monkeypatch.setattr(sqlite_exporter, "registry", registry)
    state = {"checked_out": 3.0}
    registry.gauge(
        "db.client.pool.checked_out", ("pool.name",), lambda: {("main",): state["checked_out"]}
    )
    registry.gauge("db.client.pool.size", ("pool.name",), lambda: {("main",): 5.0})
    registry.counter("db.client.pool.timeouts", ("pool.name",)).add(("main",), 2)
    exporter = SqliteExporter(tmp_path / "obs.db", metrics_interval_s=0)
    record = {"type": "event", "name": "tick", "trace_id": None, "span_id": None,
              "parent_id": None, "service": "svc", "environment": "test",
              "start": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
              "duration_ms": None, "status": "ok", "error_type": None, "error_message": None,
              "user_id": None, "tier": None, "request_id": None}  # fmt: skip
    exporter.export([record])
    state["checked_out"] = 5.0
    exporter.export([record])
    state["checked_out"] = 1.0
    exporter.shutdown()
    store = Store(tmp_path / "obs.db")
    (pool,) = store.pools(Filters())
    store.close()
    assert pool == {
        "pool": "main", "size": 5.0, "peak_checked_out": 5.0, "peak_overflow": None,
        "peak_utilization": None, "checkouts": 0.0, "timeouts": 2.0, "connections_created": 0.0,
    }  # fmt: skip


def test_timeseries_buckets_count_every_request(tmp_path: Path, configured) -> None:
    path = tmp_path / "obs.db"
    memory = MemoryExporter()
    configured(exporters=[SqliteExporter(path), memory])
    for i in range(30):
        with obs.span(f"GET /{i % 3}", _kind="server") as s:
            s.set(**{"http.route": f"/{i % 3}", "http.method": "GET"})
            if i % 10 == 0:
                s.status = "error"
    obs.shutdown(5.0)
    store = Store(path)
    series = store.timeseries(Filters(), buckets=10)
    store.close()
    points = series["points"]
    assert sum(p["requests"] for p in points) == 30
    errors = sum(p["error_rate"] * p["requests"] for p in points)
    assert errors == pytest.approx(3)


def test_a_burst_of_checkouts_between_two_samples_keeps_its_peak_in_use(
    tmp_path: Path, configured
) -> None:
    path = tmp_path / "obs.db"
    configured(exporters=[SqliteExporter(path, metrics_interval_s=3600)])
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'app.sqlite'}", pool_size=4, pool_logging_name="app"
    )
    obs.instrument_sqlalchemy(engine)
    try:
        with engine.connect(), engine.connect(), engine.connect():
            pass  # three in use at once, returned long before metrics are sampled
        for _ in range(6):
            with engine.connect():
                pass
        with obs.span("tick"):  # the store's first batch, and the samples: none in use
            pass
        obs.shutdown(5.0)
    finally:
        obs.uninstrument_sqlalchemy(engine)
        engine.dispose()
    store = Store(path)
    (pool,) = store.pools(Filters())
    (checked_out,) = [g for g in store.gauges(Filters()) if g["name"].endswith("checked_out")]
    store.close()
    assert checked_out["peak"] == 0  # what the sampled gauge alone says
    assert (pool["pool"], pool["checkouts"], pool["peak_checked_out"]) == ("app", 9.0, 3.0)
    assert pool["peak_overflow"] == 0.0
    assert pool["peak_utilization"] is None  # not 0 %: no sample saw one in use, nor capacity


def test_ai_calls_group_by_the_requested_model_and_count_user_errors_apart_from_failures(
    tmp_path: Path, configured
) -> None:
    path = tmp_path / "obs.db"
    configured(exporters=[SqliteExporter(path)])
    outcomes = ["ok", "ok", "invalid_input", "error", "cancelled", "content_violation"]
    for status in outcomes:
        attrs = {"ai.provider": "openai", "ai.model": "gpt-4o-mini"}
        if status == "ok":
            attrs["ai.response_model"] = "gpt-4o-mini-2024-07-18"
        with obs.span("ai.request", _kind="client", **attrs) as s:
            s.status = status
    obs.shutdown(5.0)
    store = Store(path)
    (row,) = store.ai(Filters())
    (by_tier,) = store.ai(Filters(), ("tier",))
    store.close()
    assert (row["model"], row["response_models"]) == ("gpt-4o-mini", ["gpt-4o-mini-2024-07-18"])
    assert (row["calls"], row["errors"], row["user_errors"]) == (6, 1, 2)
    assert row["error_rate"] == 1 / 6  # as ai.errors and the error_rate pipe count
    assert "response_models" not in by_tier


def test_statements_that_share_their_start_or_their_ends_are_told_apart() -> None:
    columns = "SELECT users.id, users.email, users.name, users.created_at FROM users"
    by_id, by_email = f"{columns} WHERE users.id = ?", f"{columns} WHERE users.email = ?"
    join = "SELECT a FROM t JOIN u{} USING (id) WHERE t.id = ?"
    middle = [join.format("_" * 60 + j) for j in "12"]
    # Two pairs parting at two places: shown where they part, then told apart by fingerprint.
    deep = [
        f"SELECT a FROM t WHERE {'x' * 20}{c}{'y' * 30}{q}{'y' * 30} = ?"
        for c, q in ("1a", "1b", "2a")
    ]
    texts = [by_id, by_email, *middle, *deep, "SELECT 1"]
    labels = short_labels(texts, 48)
    assert len(set(labels)) == len(texts)
    assert all(len(label) <= 48 for label in labels)
    assert labels[:4] == [
        "SELECT users.id, users.email…WHERE users.id = ?",
        "SELECT users.id, users.email…ERE users.email = ?",
        "SELECT a FRO…____________1 USING (id) WHERE t.i…",
        "SELECT a FRO…____________2 USING (id) WHERE t.i…",
    ]
    assert [label[-10:] for label in labels[4:6]] == [" #" + fingerprint(t) for t in deep[:2]]
    assert labels[6] == "SELECT a FRO…xxxxxxxxxxxx2yyyyyyyyyyyyyyyyyyyyy…"
    assert labels[-1] == "SELECT 1"


def test_ai_rows_carry_latency_percentiles_over_the_calls_that_report_them(
    tmp_path: Path, configured
) -> None:
    path = tmp_path / "obs.db"
    configured(exporters=[SqliteExporter(path)])
    figures = [
        {"ai.time_to_first_token_ms": 100.0, "ai.output_tokens_per_s": 50.0},
        {"ai.time_to_first_token_ms": 300.0, "ai.output_tokens_per_s": 70.0},
        {"ai.queue_ms": 40.0, "ai.run_ms": 900.0},
        {},  # a call that reports none
    ]
    for attrs in figures:
        with obs.span(
            "ai.request", _kind="client", **{"ai.provider": "p", "ai.model": "m"}, **attrs
        ):
            pass
    obs.shutdown(5.0)
    store = Store(path)
    (row,) = store.ai(Filters())
    store.close()
    assert {k: row[k] for k in ("streams", "ttft_p50", "ttft_p95", "tokens_per_s_p50")} == {
        "streams": 2,
        "ttft_p50": 200.0,
        "ttft_p95": 290.0,
        "tokens_per_s_p50": 60.0,
    }
    assert (row["queue_p50"], row["run_p50"], row["run_p95"]) == (40.0, 900.0, 900.0)
