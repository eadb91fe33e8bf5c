"""A real Prometheus scrapes an instrumented Starlette app; its query API returns our series.

Verified with Prometheus 2.42 (Debian), prometheus_client 0.26, Starlette 1.x, uvicorn.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import obs_middleware as obs
from obs_middleware.exporters.prometheus import metrics_app
from obs_middleware.testing import capture


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.load(resp)
    assert doc["status"] == "success"
    return doc["data"]["result"]


def wait_for(base: str, promql: str, check, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = query(base, promql)
        if check(result):
            return result
        time.sleep(0.5)
    pytest.fail(f"{promql} never matched; last answer {result}")


@pytest.fixture
def served_app(prometheus_url):
    port = int(os.environ["OBS_PROMETHEUS_TARGET_PORT"])

    async def item(request):
        if request.path_params["id"] == "boom":
            return PlainTextResponse("no", status_code=500)
        return PlainTextResponse("ok")

    app = obs.ObsMiddleware(
        Starlette(routes=[Route("/items/{id}", item), Mount("/metrics", app=metrics_app())])
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    with capture(fixed=False, runtime_metrics=True):
        thread.start()
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(10)


def test_prometheus_scrapes_our_series_with_conventional_names(served_app, prometheus_url):
    with httpx.Client(base_url=served_app) as client:
        for i in range(30):
            client.get(f"/items/{i}")
        for _ in range(10):
            client.get("/items/boom")
    result = wait_for(
        prometheus_url,
        "sum by (http_status_class) "
        '(http_server_requests_total{job="app",http_route="/items/{id}"})',
        lambda r: (
            {x["metric"]["http_status_class"]: x["value"][1] for x in r}
            == {"2xx": "30", "5xx": "10"}
        ),
    )
    assert len(result) == 2
    buckets = query(
        prometheus_url,
        'http_server_duration_seconds_bucket{job="app",http_route="/items/{id}",le="+Inf"}',
    )
    assert sum(float(b["value"][1]) for b in buckets) == 40
    targets = query(prometheus_url, 'up{job="app"}')
    assert targets[0]["value"][1] == "1"
    # The shipped rules are loaded and evaluate against our series.
    ratio = wait_for(
        prometheus_url, 'job:obs_http_error_ratio:rate5m{job="app"}', lambda r: len(r) == 1
    )
    assert 0 <= float(ratio[0]["value"][1]) <= 1  # a number: the rule reads our series


def test_prometheus_scrapes_process_and_runtime_metrics(served_app, prometheus_url):
    """CPU, memory, fds, threads, GC and the event-loop delay of the served app, under both the
    OTel-derived names and the usual process_* names (_core/runtime.py)."""

    def one_positive(result: list[dict]) -> bool:
        return len(result) >= 1 and all(float(x["value"][1]) > 0 for x in result)

    with httpx.Client(base_url=served_app) as client:
        client.get("/items/1")  # the first request starts the loop probe
    for promql in (
        'process_cpu_time_seconds_total{job="app",cpu_mode="user"}',
        'process_memory_usage_bytes{job="app"}',
        'process_unix_file_descriptor_count{job="app"}',
        'process_thread_count{job="app"}',
        'cpython_gc_collections_total{job="app",cpython_gc_generation="0"}',
        'process_cpu_seconds_total{job="app"}',
        'process_resident_memory_bytes{job="app"}',
        'process_open_fds{job="app"}',
        'asyncio_eventloop_delay_seconds_count{job="app"}',
    ):
        wait_for(prometheus_url, promql, one_positive)
    gens = query(prometheus_url, 'cpython_gc_collections_total{job="app"}')
    assert {x["metric"]["cpython_gc_generation"] for x in gens} == {"0", "1", "2"}
    rss = query(prometheus_url, 'process_resident_memory_bytes{job="app"}')
    assert float(rss[0]["value"][1]) > 1_000_000
