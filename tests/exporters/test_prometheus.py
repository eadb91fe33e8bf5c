"""Prometheus collector: names and units, exposition, ASGI app, port, multiprocess sum.

The live scrape by a real Prometheus and ``promtool test rules`` are in integrations/prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from litestar import Litestar, get
from litestar.handlers import asgi
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from obs_middleware import _setup
from obs_middleware._core.metrics import dropped, http_active, http_duration, registry
from obs_middleware.exporters import MemoryExporter, prometheus
from obs_middleware.exporters.prometheus import (
    ObsCollector,
    PrometheusExporter,
    metrics_app,
    prometheus_name,
)
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.middleware.litestar import ObsPlugin


@pytest.fixture(autouse=True)
def _metrics(monkeypatch):
    for var in ("OBS_PROMETHEUS_HOST", "OBS_PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(var, raising=False)
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def exporters() -> Iterator[list[PrometheusExporter]]:
    """Exporters built by the test (``_setup.build_config`` or directly), shut down after it."""
    made: list[PrometheusExporter] = []
    yield made
    for exporter in made:
        exporter.shutdown()


def from_spec(spec: str, made: list[PrometheusExporter]) -> PrometheusExporter:
    (exporter,) = _setup.build_config(exporters=[spec]).exporters
    assert isinstance(exporter, PrometheusExporter)
    made.append(exporter)
    return exporter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True


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


def _starlette_app() -> object:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello)])
    app.add_route("/metrics", metrics_app())
    app.add_middleware(ObsMiddleware)
    return app


def _fastapi_app() -> object:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> str:
        return "hi"

    app.add_route("/metrics", metrics_app())
    app.add_middleware(ObsMiddleware)
    return app


def _litestar_app() -> object:
    @get("/hello")
    async def hello() -> str:
        return "hi"

    metrics = asgi("/metrics", copy_scope=False)(metrics_app())
    return Litestar(route_handlers=[hello, metrics], plugins=[ObsPlugin()])


@pytest.mark.parametrize("make_app", [_starlette_app, _fastapi_app, _litestar_app])
def test_metrics_app_at_metrics_answers_without_redirect_and_scrapes_are_not_traced(
    configured, make_app
):
    memory = MemoryExporter()
    configured(exporters=[memory])
    app = make_app()

    async def drive() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return [await client.get(path) for path in ("/hello", "/metrics", "/metrics")]

    hello, _, scrape = asyncio.run(drive())
    assert (hello.status_code, scrape.status_code) == (200, 200)
    assert 'http_route="/hello"' in scrape.text
    assert "/metrics" not in scrape.text  # the first scrape was not counted as traffic
    assert _setup.flush(5.0)
    assert [r["name"] for r in memory.records if r.get("span.kind") == "server"] == ["GET /hello"]


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


# -- where metrics are served ---------------------------------------------------------------------
def test_a_port_spec_binds_loopback_only(exporters, caplog):
    caplog.set_level(logging.INFO, "obs_middleware")
    exporter = from_spec("prometheus:0", exporters)
    assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
    dropped.add(("x",), 1)
    assert 'obs_dropped_total{reason="x"} 1.0' in scrape(exporter.url)
    # Every 127/8 address is this host: a socket on 0.0.0.0 would accept on 127.0.0.2 too.
    assert not reachable("127.0.0.2", exporter.port)
    assert f"served at {exporter.url}" in caplog.text


@pytest.mark.parametrize("how", ["spec", "env"])
def test_all_interfaces_only_when_asked_and_said(exporters, caplog, monkeypatch, how):
    caplog.set_level(logging.INFO, "obs_middleware")
    if how == "env":
        monkeypatch.setenv("OBS_PROMETHEUS_HOST", "0.0.0.0")
    exporter = from_spec("prometheus:0.0.0.0:0" if how == "spec" else "prometheus:0", exporters)
    assert reachable("127.0.0.2", exporter.port)
    assert f"served at http://0.0.0.0:{exporter.port}/metrics (reachable from the network)" in (
        caplog.text
    )


def test_plain_prometheus_serves_the_default_port_on_loopback_and_says_where(
    exporters, caplog, monkeypatch
):
    assert prometheus.DEFAULT_PORT == 9464
    port = free_port()  # 9464 itself may be taken on a shared machine
    monkeypatch.setattr(prometheus, "DEFAULT_PORT", port)
    caplog.set_level(logging.INFO, "obs_middleware")
    exporter = from_spec("prometheus", exporters)
    dropped.add(("x",), 1)
    assert 'obs_dropped_total{reason="x"} 1.0' in scrape(f"http://127.0.0.1:{port}/metrics")
    assert f"metrics of this process served at http://127.0.0.1:{port}/metrics" in caplog.text
    assert exporter.url == f"http://127.0.0.1:{port}/metrics"


def test_without_a_port_it_says_only_metrics_app_serves(exporters, caplog):
    caplog.set_level(logging.INFO, "obs_middleware")
    exporters.append(PrometheusExporter())
    assert "served only where metrics_app() is mounted" in caplog.text


@pytest.mark.parametrize("taken", ["in use", "not an address of this host"])
def test_a_port_it_cannot_bind_is_warned_once_and_never_raised(exporters, caplog, taken):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # 192.0.2.1 (TEST-NET-1) is nobody's address: binding it fails with EADDRNOTAVAIL.
        spec = f"prometheus:{port}" if taken == "in use" else "prometheus:192.0.2.1:0"
        first = from_spec(spec, exporters)
        again = from_spec(spec, exporters)
    for exporter in (first, again):
        assert (exporter.url, exporter.port) == (None, None)
        assert exporter.error
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    if taken == "in use":
        assert f"Prometheus port 127.0.0.1:{port} is already in use" in warning.getMessage()
        assert "PROMETHEUS_MULTIPROC_DIR" in warning.getMessage()
    else:
        assert "cannot serve Prometheus metrics on 192.0.2.1:0" in warning.getMessage()


def test_prometheus_multiproc_dir_is_the_directory_workers_share(exporters, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    exporter = PrometheusExporter()
    exporters.append(exporter)
    exporter.flush()
    assert exporter.directory == str(tmp_path)
    (name,) = os.listdir(tmp_path)
    assert re.fullmatch(rf"obs-{os.getpid()}-[0-9a-f]+\.json", name)  # beside, never *.db


def other_process_reader(directory: Path) -> ObsCollector:
    """A collector reading ``directory`` as another process's ``metrics_app()`` would: no
    values of its own, and a file of its own apart from this process's."""
    reader = ObsCollector(snapshot=dict, multiprocess_dir=str(directory))
    assert reader.files is not None
    reader.files._pid, reader.files._path = os.getpid(), str(directory / "obs-0-other.json")
    return reader


def test_an_exporter_and_metrics_app_of_one_process_count_it_once(exporters, tmp_path):
    # Every writer and reader of a process shares its file: the scrape adds the live values to
    # the other processes' files, never to this process's own, written by its exporter.
    exporter = PrometheusExporter(multiprocess_dir=str(tmp_path), write_interval_s=0.0)
    exporters.append(exporter)
    dropped.add(("once",), 5)
    exporter.export([])  # written
    assert len(os.listdir(tmp_path)) == 1
    scrape = generate_latest_of(ObsCollector(multiprocess_dir=str(tmp_path)))
    assert 'obs_dropped_total{reason="once"} 5.0' in scrape
    assert 'obs_dropped_total{reason="once"} 5.0' in generate_latest_of(
        other_process_reader(tmp_path)
    )


def generate_latest_of(collector: ObsCollector) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return generate_latest(reg).decode()


def test_the_last_values_of_a_burst_are_written_once_due(exporters, tmp_path):
    exporter = PrometheusExporter(multiprocess_dir=str(tmp_path), write_interval_s=0.2)
    exporters.append(exporter)
    reader = other_process_reader(tmp_path)
    exporter.export([])  # due: written now
    dropped.add(("late",), 1)
    exporter.export([])  # not due: written when it is, with no export after it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = generate_latest_of(reader)
        if 'obs_dropped_total{reason="late"} 1.0' in text:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the last values were never written")


def test_a_worker_takes_the_shared_port_over_when_its_holder_exits(
    exporters, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, "obs_middleware")
    monkeypatch.setattr(prometheus, "_REBIND_S", 0.0)
    directory = str(tmp_path)
    holder = PrometheusExporter(0, multiprocess_dir=directory)
    port = holder.port
    other = PrometheusExporter(port, multiprocess_dir=directory)
    exporters += [holder, other]
    assert other.url is None
    assert f"Prometheus port 127.0.0.1:{port} is held by another process" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    dropped.add(("x",), 1)
    holder.shutdown()
    deadline = time.monotonic() + 20
    while other.url is None:
        assert time.monotonic() < deadline, "the port was never taken over"
        time.sleep(0.05)
        other.flush()
    # One process here: its two exporters write one file, counted once (other processes' files
    # are summed: test_multiprocess_mode_sums_workers_and_keeps_gauges_of_live_ones_only).
    assert 'obs_dropped_total{reason="x"} 1.0' in scrape(other.url)


_FORKED = """
import os, sys, urllib.request
from obs_middleware.exporters.prometheus import PrometheusExporter
exporter = PrometheusExporter(0)
pid = os.fork()
if pid == 0:  # a pre-forked worker: the serving thread stayed in the parent
    exporter.shutdown()
    os._exit(0)
_, status = os.waitpid(pid, 0)
with urllib.request.urlopen(exporter.url, timeout=10) as r:
    print(os.waitstatus_to_exitcode(status), r.status)
exporter.shutdown()
"""


def test_a_forked_child_shutting_down_leaves_the_parent_serving():
    done = subprocess.run(
        [sys.executable, "-c", _FORKED], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["0", "200"]


# -- several uvicorn workers -----------------------------------------------------------------------
class Workers:
    """``uvicorn --workers 2`` serving prometheus_workers_app with ``exporter``."""

    def __init__(self, tmp_path: Path, exporter: str, **env: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "uvicorn.log"
        src = Path(prometheus.__file__).parents[2]
        self.env = {
            **os.environ,
            **env,
            "OBS_TEST_EXPORTER": exporter,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(src)]),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Workers:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "prometheus_workers_app:app"),
                    *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while len(self.worker_pids()) < 2 or not self.answering():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)  # uvicorn stops and reaps its workers first
        except subprocess.TimeoutExpired:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"Started server process \[(\d+)\]", self.text())]

    def answering(self) -> bool:
        try:
            self.get()
        except OSError:
            return False
        return True

    def get(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/pid", timeout=10) as r:
            return int(r.read())

    def both_answered(self) -> int:
        """Requests until each worker has answered; returns how many were made."""
        seen: set[int] = set()
        made = 0
        while len(seen) < 2:
            assert made < 2000, f"only {seen} answered"
            seen.add(self.get())
            made += 1
        return made

    def assert_alive(self) -> None:
        pids = self.worker_pids()
        assert len(pids) == 2, self.text()  # never respawned
        for pid in pids:
            os.kill(pid, 0)
        assert "Traceback" not in self.text()


def requests_total(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_server_requests_total" and s.labels.get("http_route") == "/pid"
    )


def test_uvicorn_workers_share_a_port_without_dying_one_serving_and_one_warning(tmp_path):
    metrics = free_port()
    with Workers(tmp_path, f"prometheus:{metrics}") as workers:
        workers.both_answered()
        # A request is counted just after its response went out: the scrape may come first.
        deadline = time.monotonic() + 10
        while not requests_total(scrape(f"http://127.0.0.1:{metrics}/metrics")):
            assert time.monotonic() < deadline, "the serving worker counted no request"
            time.sleep(0.05)
        time.sleep(1.0)  # a dying worker would be gone, or respawned, by now
        workers.assert_alive()
        text = workers.text()
    assert text.count(f"Prometheus port 127.0.0.1:{metrics} is already in use") == 1
    assert "PROMETHEUS_MULTIPROC_DIR" in text


def test_uvicorn_workers_with_prometheus_multiproc_dir_serve_the_sum_of_all(tmp_path):
    metrics = free_port()
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with Workers(tmp_path, f"prometheus:{metrics}", **env) as workers:
        made = workers.both_answered() + 1  # and the one that waited for startup
        deadline = time.monotonic() + 30
        while (total := requests_total(scrape(f"http://127.0.0.1:{metrics}/metrics"))) != made:
            assert time.monotonic() < deadline, f"{total} requests counted of {made}"
            time.sleep(0.2)
        workers.assert_alive()
        assert "already in use" not in workers.text()


def test_a_removed_shared_directory_is_not_written_or_recreated(tmp_path: Path) -> None:
    # ``obs run`` removes its private folder once the app's processes exited; a straggler (a
    # helper process exiting last) flushes and shuts down without a traceback.
    directory = tmp_path / "shared"
    exporter = PrometheusExporter(multiprocess_dir=str(directory))
    exporter.flush()
    assert len(list(directory.iterdir())) == 1
    shutil.rmtree(directory)
    exporter.flush()
    exporter.shutdown()
    assert not directory.exists()
