"""Process and runtime metrics: plausible values, GC counts and pauses, the loop-delay probe, the
off switch, fork, and no thread or hook left behind."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from obs_middleware._core import runtime
from obs_middleware._core.config import from_env
from obs_middleware._core.metrics import HistogramPoint, registry

NAMES = (
    "process.cpu.time",
    "process.memory.usage",
    "process.memory.virtual",
    "process.unix.file_descriptor.count",
    "process.thread.count",
    "cpython.gc.collections",
    "cpython.gc.collected_objects",
    "cpython.gc.uncollectable_objects",
    "cpython.gc.duration",
    "asyncio.eventloop.delay",
)
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


@pytest.fixture
def on() -> Iterator[None]:
    """Runtime metrics on, values reset; the previous state back after."""
    was = runtime.enabled
    runtime.enable(True)
    registry.reset()
    yield
    runtime.unwatch_loop()
    runtime.enable(was)


def value(name: str, labels: tuple[str, ...] = ()) -> float:
    point = registry.snapshot()[name].points[labels]
    assert not isinstance(point, HistogramPoint)
    return point


def histogram(name: str, labels: tuple[str, ...] = ()) -> HistogramPoint:
    point = registry.snapshot()[name].points.get(labels)
    if point is None:
        return HistogramPoint((), (), 0.0, 0)
    assert isinstance(point, HistogramPoint)
    return point


@linux
def test_process_values_are_plausible(on):
    rss = value("process.memory.usage")
    assert 1_000_000 < rss < 64 * 2**30
    assert value("process.memory.virtual") >= rss
    fds = value("process.unix.file_descriptor.count")
    assert abs(fds - len(os.listdir("/proc/self/fd"))) <= 2
    assert value("process.thread.count") >= threading.active_count()
    user, system = value("process.cpu.time", ("user",)), value("process.cpu.time", ("system",))
    assert user > 0 and system >= 0
    assert registry.snapshot()["process.cpu.time"].kind == "counter"
    assert registry.snapshot()["process.memory.usage"].kind == "updown"


@linux
def test_values_follow_the_process(on):
    before_fds = value("process.unix.file_descriptor.count")
    files = [open(os.devnull) for _ in range(20)]  # noqa: SIM115
    try:
        assert value("process.unix.file_descriptor.count") >= before_fds + 20
    finally:
        for f in files:
            f.close()
    before_cpu = value("process.cpu.time", ("user",))
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert value("process.cpu.time", ("user",)) > before_cpu
    before_threads = value("process.thread.count")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert value("process.thread.count") == before_threads + 1
    finally:
        stop.set()
        thread.join()


def test_gc_counts_rise_and_pauses_are_recorded(on):
    before = value("cpython.gc.collections", ("2",))
    paused = histogram("cpython.gc.duration", ("2",)).count
    for _ in range(3):
        gc.collect()
    assert value("cpython.gc.collections", ("2",)) >= before + 3
    pauses = histogram("cpython.gc.duration", ("2",))
    assert pauses.count >= paused + 3
    assert pauses.sum > 0
    assert {("0",), ("1",), ("2",)} <= set(registry.snapshot()["cpython.gc.collections"].points)


def test_the_gc_callback_never_waits_nor_raises(on):
    series = runtime._gc_series[2]
    with series._histogram._lock:  # a collection inside a fold of that very histogram
        for _ in range(300):
            runtime._on_gc("start", {"generation": 2})
            runtime._on_gc("stop", {"generation": 2})
        assert len(series) >= 300  # queued, not folded: the lock was held
    runtime._on_gc("stop", {"generation": 7})  # a generation the interpreter may add
    runtime._on_gc("stop", {})
    assert histogram("cpython.gc.duration", ("2",)).count >= 300


def test_loop_delay_rises_when_the_loop_is_blocked(on):
    async def main() -> None:
        runtime.watch_loop(interval_s=0.02)
        await asyncio.sleep(0.1)
        time.sleep(0.2)  # a blocking call inside a coroutine
        await asyncio.sleep(0.1)

    asyncio.run(main())
    delay = histogram("asyncio.eventloop.delay")
    assert delay.count >= 3
    bounds = delay.bounds
    blocked = sum(n for bound, n in zip((0, *bounds), delay.counts, strict=False) if bound >= 100)
    assert blocked >= 1  # the tick due during the sleep fired at least 100 ms late
    assert delay.sum >= 100


def test_one_probe_per_loop_and_none_after_the_loop(on):
    async def main() -> runtime.LoopProbe | None:
        runtime.watch_loop(interval_s=0.01)
        first = runtime._probe
        runtime.watch_loop(interval_s=0.01)  # a second request on the same loop
        assert runtime._probe is first
        assert not runtime.probe_wanted
        await asyncio.sleep(0.05)
        return first

    threads = set(threading.enumerate())
    probe = asyncio.run(main())
    assert probe is not None and not probe.alive()  # the loop closed
    registry.snapshot()  # collection lets a dead probe go
    assert runtime._probe is None and runtime.probe_wanted
    asyncio.run(main())  # the next loop gets its own
    runtime.unwatch_loop()
    assert set(threading.enumerate()) == threads  # no thread of ours, before or after


def test_unwatch_stops_the_probe_on_its_loop(on):
    async def main() -> int:
        runtime.watch_loop(interval_s=0.01)
        await asyncio.sleep(0.05)
        runtime.unwatch_loop()
        count = histogram("asyncio.eventloop.delay").count
        await asyncio.sleep(0.05)
        return count - histogram("asyncio.eventloop.delay").count

    assert asyncio.run(main()) == 0


def test_watch_loop_outside_a_loop_does_nothing(on):
    runtime.watch_loop()
    assert runtime._probe is None and runtime.probe_wanted


def test_off_removes_metrics_and_hooks(on):
    runtime.enable(False)
    snap = registry.snapshot()
    assert not set(NAMES) & set(snap)
    assert runtime._on_gc not in gc.callbacks
    assert not runtime.probe_wanted
    runtime.watch_loop()
    assert runtime._probe is None
    runtime.enable(True)
    assert set(NAMES) - {"cpython.gc.duration", "asyncio.eventloop.delay"} <= set(
        registry.snapshot()
    )
    assert gc.callbacks.count(runtime._on_gc) == 1
    runtime.enable(True)  # idempotent: installed once
    assert gc.callbacks.count(runtime._on_gc) == 1


def test_the_setting(configured, monkeypatch):
    assert from_env({}).runtime_metrics is True
    assert from_env({"OBS_RUNTIME_METRICS": "0"}).runtime_metrics is False
    monkeypatch.setenv("OBS_RUNTIME_METRICS", "0")
    configured()
    assert "process.cpu.time" not in registry.snapshot()
    assert not runtime.enabled
    configured(runtime_metrics=True)
    assert "process.cpu.time" in registry.snapshot()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_counts_from_zero(on):
    for _ in range(3):
        gc.collect()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            before = value("cpython.gc.collections", ("2",))
            gc.collect()
            doc = {
                "before": before,
                "after": value("cpython.gc.collections", ("2",)),
                "pauses": histogram("cpython.gc.duration", ("2",)).count,
                "callbacks": gc.callbacks.count(runtime._on_gc),
                "cpu": value("process.cpu.time", ("user",)),
                "wanted": runtime.probe_wanted,
            }
            os.write(write, json.dumps(doc).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        doc = json.loads(f.read())
    os.waitpid(pid, 0)
    assert doc["before"] == 0 and doc["after"] == 1
    assert doc["pauses"] == 1
    assert doc["callbacks"] == 1
    assert doc["cpu"] < value("process.cpu.time", ("user",))
    assert doc["wanted"] is True
