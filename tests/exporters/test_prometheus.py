"""Prometheus collector: names and units, exposition, ASGI app, port, multiprocess sum.

The live scrape by a real Prometheus and ``promtool test rules`` are in integrations/prometheus.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from obs_middleware import _setup
from obs_middleware._core.metrics import dropped, http_active, http_duration, registry
from obs_middleware.exporters.prometheus import (
    ObsCollector,
    PrometheusExporter,
    metrics_app,
    prometheus_name,
)


@pytest.fixture(autouse=True)
def _metrics():
    registry.reset()
    yield
    registry.reset()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_names_follow_prometheus_conventions():
    assert prometheus_name("http.server.duration", "ms", "histogram") == (
        "http_server_duration_seconds",
        1e-3,
    )
    assert prometheus_name("http.server.requests", "1", "counter") == ("http_server_requests", 1.0)
    assert prometheus_name("ai.cost_usd", "USD", "counter") == ("ai_cost_usd", 1.0)
    assert (
        prometheus_name("obs.exporter.spool_bytes", "By", "gauge")[0] == "obs_exporter_spool_bytes"
    )
    assert prometheus_name("db.pool.size", "1", "gauge")[0] == "db_pool_size"
    assert prometheus_name("jobs_total", "1", "counter")[0] == "jobs"


def test_exposition_uses_base_units_total_suffix_and_sanitised_labels():
    http_duration.record(("GET", "/items/{id}", "2xx"), 12.0)
    http_duration.record(("GET", "/items/{id}", "2xx"), 3000.0)
    dropped.add(("queue_full",), 2)
    text = generate_latest(PrometheusExporter().registry).decode()
    got = samples(text)
    labels = (("http_method", "GET"), ("http_route", "/items/{id}"), ("http_status_class", "2xx"))
    assert got[("http_server_duration_seconds_count", labels)] == 2
    assert got[("http_server_duration_seconds_sum", labels)] == pytest.approx(3.012)
    assert got[("http_server_duration_seconds_bucket", (*labels, ("le", "0.02")))] == 1
    assert got[("http_server_duration_seconds_bucket", (*labels, ("le", "5.0")))] == 2
    assert got[("http_server_duration_seconds_bucket", (*labels, ("le", "+Inf")))] == 2
    assert got[("http_server_requests_total", labels)] == 2
    assert got[("obs_dropped_total", (("reason", "queue_full"),))] == 2
    assert "# TYPE http_server_duration_seconds histogram" in text
    assert "# HELP obs_dropped_total Telemetry records dropped before export" in text


def test_asgi_app_serves_the_metrics():
    dropped.add(("x",), 1)

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=metrics_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/metrics")

    response = asyncio.run(scrape())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'obs_dropped_total{reason="x"} 1.0' in response.text


def test_standalone_port_on_loopback():
    exporter = _setup.build_config(exporters=["prometheus:127.0.0.1:0"]).exporters[0]
    assert isinstance(exporter, PrometheusExporter)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5) as r:
            assert b"obs_dropped_total" in r.read() or r.status == 200
    finally:
        exporter.shutdown()


_WORKER = """
import sys
from obs_middleware._core.metrics import http_duration, http_active
from obs_middleware.exporters.prometheus import PrometheusExporter
exporter = PrometheusExporter(multiprocess_dir=sys.argv[1])
for ms in map(float, sys.argv[2].split(",")):
    http_duration.record(("GET", "/a", "2xx"), ms)
http_active.enter(("GET",))
exporter.flush()
"""


def test_multiprocess_mode_sums_workers_and_keeps_gauges_of_live_ones_only(tmp_path):
    directory = str(tmp_path)
    for values in ("10,20", "30"):  # two worker processes, now exited
        subprocess.run([sys.executable, "-c", _WORKER, directory, values], check=True)
    http_duration.record(("GET", "/a", "2xx"), 40.0)
    http_active.enter(("GET",))
    collector = ObsCollector(multiprocess_dir=directory)
    families = {f.name: f for f in collector.collect()}
    labels = {"http_method": "GET", "http_route": "/a", "http_status_class": "2xx"}
    hist = {
        s.name: s.value
        for s in families["http_server_duration_seconds"].samples
        if s.labels == labels or s.labels == {**labels, "le": "+Inf"}
    }
    assert hist["http_server_duration_seconds_count"] == 4
    assert hist["http_server_duration_seconds_sum"] == pytest.approx(0.1)
    active = families["http_server_active"].samples
    assert [s.value for s in active] == [1.0]  # the exited workers' gauges are gone
    collector.write()
    assert len([n for n in os.listdir(directory) if n.endswith(".json")]) == 3


def test_records_are_not_needed():
    exporter = PrometheusExporter(write_interval_s=0)
    exporter.export([{"name": "x"}])
    exporter.flush()
    exporter.shutdown()
