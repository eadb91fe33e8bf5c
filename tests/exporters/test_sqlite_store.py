"""Store figures that ``obs report`` and ``obs dashboard`` share: jobs, pools, time series."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import obs_middleware as obs
from obs_middleware._core.metrics import Registry
from obs_middleware.exporters import sqlite as sqlite_exporter
from obs_middleware.exporters.memory import MemoryExporter
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store


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
