"""Runtime metrics on Prometheus: the OTel-named series, the usual ``process_*`` names beside them
(never twice where ``prometheus_client``'s own ``ProcessCollector`` serves them), and their sums
across the workers of multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from obs_middleware._core import runtime
from obs_middleware._core.metrics import registry
from obs_middleware.exporters.prometheus import ObsCollector, PrometheusExporter

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


@pytest.fixture(autouse=True)
def on() -> Iterator[None]:
    was = runtime.enabled
    runtime.enable(True)
    registry.reset()
    yield
    runtime.enable(was)


def samples(reg: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(reg).decode()
    return {
        s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@linux
def test_otel_names_and_the_usual_process_names_from_one_snapshot():
    got = samples(PrometheusExporter().registry)
    for name in (
        "process_cpu_time_seconds_total,cpu_mode=user",
        "process_cpu_time_seconds_total,cpu_mode=system",
        "process_memory_usage_bytes",
        "process_memory_virtual_bytes",
        "process_unix_file_descriptor_count",
        "process_thread_count",
        "cpython_gc_collections_total,cpython_gc_generation=0",
        "cpython_gc_collected_objects_total,cpython_gc_generation=2",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
    ):
        assert name in got, name
    assert got["process_resident_memory_bytes"] > 1_000_000
    user = got["process_cpu_time_seconds_total,cpu_mode=user"]
    system = got["process_cpu_time_seconds_total,cpu_mode=system"]
    # read a moment later than the mode series: equal up to the CPU time spent between
    assert user + system <= got["process_cpu_seconds_total"] < user + system + 0.5


def test_no_duplicate_beside_prometheus_clients_process_collector():
    reg = CollectorRegistry(auto_describe=True)  # as prometheus_client.REGISTRY
    ProcessCollector(registry=reg)
    reg.register(ObsCollector())  # would raise on a name ProcessCollector already serves
    names = [family.name for family in reg.collect()]
    assert len(names) == len(set(names))
    assert "process_cpu_time_seconds" in names


_WORKER = """
import sys, time
from obs_middleware._core import runtime
from obs_middleware.exporters.prometheus import PrometheusExporter
runtime.enable(True)
exporter = PrometheusExporter(multiprocess_dir=sys.argv[1])
deadline = time.process_time() + 0.3
while time.process_time() < deadline:
    pass
exporter.flush()
"""


@linux
def test_multiprocess_sums_cpu_of_every_worker_and_memory_of_live_ones(tmp_path):
    directory = str(tmp_path)
    for _ in range(2):  # two worker processes that burnt 0.3 s of CPU each, now exited
        subprocess.run([sys.executable, "-c", _WORKER, directory], check=True)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ObsCollector(multiprocess_dir=directory, process_names=True))
    got = samples(reg)
    own = registry.snapshot()
    own_cpu = sum(own["process.cpu.time"].points.values())  # type: ignore[arg-type]
    assert got["process_cpu_seconds_total"] >= own_cpu + 0.6  # counters: every worker
    own_rss = own["process.memory.usage"].points[()]
    # gauges: live processes only (this one); a sum with the exited workers would double it
    assert got["process_resident_memory_bytes"] == pytest.approx(own_rss, rel=0.5)


def rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@linux
def test_uvicorn_workers_serve_the_sum_of_their_memory_and_both_loops(tmp_path):
    from .test_prometheus import Workers, free_port, scrape  # noqa: PLC0415

    metrics = free_port()
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with Workers(tmp_path, f"prometheus:{metrics}", **env) as workers:
        deadline = time.monotonic() + 30
        while True:
            workers.both_answered()  # each worker's first request starts its loop probe
            pids = workers.worker_pids()
            got = {
                s.name: s.value
                for family in text_string_to_metric_families(
                    scrape(f"http://127.0.0.1:{metrics}/metrics")
                )
                for s in family.samples
            }
            rss = got.get("process_resident_memory_bytes", 0)
            files = [n for n in os.listdir(directory) if n.endswith(".json")]
            if len(files) == 2 and rss > 1.5 * max(map(rss_of, pids)):
                break
            assert time.monotonic() < deadline, f"{rss} of {[rss_of(p) for p in pids]}"
            time.sleep(0.3)
        assert rss < 1.5 * sum(map(rss_of, pids))  # the two live workers, summed
        assert got["process_cpu_seconds_total"] > 0
        assert got["process_thread_count"] >= 2
        workers.assert_alive()
