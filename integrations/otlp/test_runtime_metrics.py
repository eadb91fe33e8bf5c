"""Process and runtime metrics (``_core/runtime.py``) through the OTLP exporter to rotel, read from
its debug log: OTel semantic-convention names, attributes and instrument kinds."""

from __future__ import annotations

import asyncio
import gc
import re
import time

import pytest

import obs_middleware as obs
from obs_middleware._core import runtime
from obs_middleware.exporters.otlp import OTLPExporter

from .conftest import exporting_to


def metric(section: str, name: str) -> str:
    """The debug-log block of metric ``name`` in ``section`` (up to the next metric)."""
    start = section.index(f"-> Name: {name}\n")
    end = section.find("Metric #", start)
    return section[start : end if end != -1 else len(section)]


def test_runtime_metrics_reach_the_collector(otlp_peers):
    exporter = OTLPExporter(otlp_peers["OBS_OTLP_URL"])
    with exporting_to(exporter, service="otlp-runtime"):
        assert runtime.enabled

        async def serve() -> None:
            runtime.watch_loop(interval_s=0.02)
            await asyncio.sleep(0.1)

        asyncio.run(serve())
        gc.collect()
        assert obs.flush(10)  # flush sends the metrics too
    deadline = time.monotonic() + 20
    log = ""
    while time.monotonic() < deadline:
        with open(otlp_peers["OBS_ROTEL_LOG"], errors="replace") as f:
            log = f.read()
        if "service.name: Str(otlp-runtime)" in log and "asyncio.eventloop.delay" in log:
            break
        time.sleep(0.5)
    else:
        pytest.fail("rotel never logged our runtime metrics")
    section = log[log.rindex("service.name: Str(otlp-runtime)") :]
    cpu = metric(section, "process.cpu.time")
    assert "Unit: s" in cpu and "DataType: Sum" in cpu and "IsMonotonic: true" in cpu
    assert "cpu.mode: Str(user)" in cpu and "cpu.mode: Str(system)" in cpu
    rss = metric(section, "process.memory.usage")
    assert "Unit: By" in rss and "IsMonotonic: false" in rss
    assert float(re.findall(r"Value: ([0-9.e+]+)", rss)[0]) > 1_000_000
    for name in (
        "process.memory.virtual",
        "process.unix.file_descriptor.count",
        "process.thread.count",
    ):
        assert "IsMonotonic: false" in metric(section, name)
    collections = metric(section, "cpython.gc.collections")
    assert "IsMonotonic: true" in collections
    assert "cpython.gc.generation: Str(2)" in collections
    assert "DataType: Histogram" in metric(section, "cpython.gc.duration")
    delay = metric(section, "asyncio.eventloop.delay")
    assert "DataType: Histogram" in delay and "Unit: ms" in delay
