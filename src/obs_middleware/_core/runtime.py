"""Process and runtime metrics: CPU time, memory, file descriptors, threads, the garbage
collector, and the delay of the asyncio event loop.

Names and attributes follow the OpenTelemetry semantic conventions for process and CPython
metrics: ``process.cpu.time{cpu.mode}``, ``process.memory.usage``, ``process.memory.virtual``,
``process.unix.file_descriptor.count``, ``process.thread.count``,
``cpython.gc.collections``/``collected_objects``/``uncollectable_objects{cpython.gc.generation}``.
Two have no convention yet and are named after their nearest kin: ``cpython.gc.duration``
(a histogram of each collection's pause, as ``jvm.gc.duration``) and ``asyncio.eventloop.delay``
(how late a timer on the running loop fires, as ``nodejs.eventloop.delay``).

Nothing runs on the request path. Values are read when metrics are collected (a scrape, an OTLP
export) from ``/proc/self`` (Linux; other systems give what the standard library has), and
``resource.getrusage``/``gc.get_stats``; the GC pause is timed by a ``gc.callbacks`` entry (its
cost is per collection); the loop probe is a timer re-armed every ``PROBE_INTERVAL_S`` on the
loop the ASGI middleware runs on (one boolean read per request until it is started). No thread.

Several workers (Prometheus multiprocess mode, ``exporters/prometheus.py``): like every metric,
these are summed per label set, with no ``pid`` label (worker restarts would grow the series
without bound; Prometheus' ``instance`` already names the pod): counters over every worker since
the directory was emptied (the service's CPU seconds, its GC collections), gauges over the live
ones (the service's memory, descriptors, threads), histograms merged (GC pauses, loop delays).
``prometheus_client``'s own multiprocess mode serves no process metrics at all. Over OTLP each
process is its own ``service.instance.id`` and sends its own values.

A forked child starts from zero: the kernel resets its CPU time, and the GC counts are read
relative to the fork; the GC callback is installed once and inherited; the child's loop gets a
probe of its own. ``enable(False)`` (``OBS_RUNTIME_METRICS=0``) removes the metrics and the hooks.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from .forks import renew_after_fork
from .metrics import FOLD_AT, Histogram, Labels, Series, registry

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

__all__ = [
    "PROBE_INTERVAL_S",
    "LoopProbe",
    "enable",
    "enabled",
    "probe_wanted",
    "unwatch_loop",
    "watch_loop",
]

PROBE_INTERVAL_S = 0.5
GC_BOUNDS_MS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000)
DELAY_BOUNDS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_FD_DIRS = ("/proc/self/fd", "/dev/fd")

enabled = False
probe_wanted = False  # read by the ASGI middleware on each request: True until a probe runs
_probe: LoopProbe | None = None
_gc_base: list[dict[str, int]] = []  # gc.get_stats() at fork: a child counts from there
_gc_series: list[Series] = []  # cpython.gc.duration per generation, kept for the callback
_gc_started = 0.0
_delay: Histogram | None = None
_lock = threading.Lock()  # enable() and watch_loop() against each other; never on a GC path
renew_after_fork(globals(), "_lock", threading.Lock)


# -- what is read at collection time ---------------------------------------------------------------
def _stat() -> list[str]:
    """The fields of /proc/self/stat after the command name (field 3 on), or none."""
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
    except OSError:
        return []
    return data[data.rindex(b")") + 2 :].decode().split()


def _cpu() -> Mapping[Labels, float]:
    if resource is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {("user",): usage.ru_utime, ("system",): usage.ru_stime}
    times = os.times()
    return {("user",): times.user, ("system",): times.system}


def _rss() -> Mapping[Labels, float]:
    fields = _stat()
    return {(): float(int(fields[21]) * _PAGE)} if fields else {}


def _virtual() -> Mapping[Labels, float]:
    fields = _stat()
    return {(): float(fields[20])} if fields else {}


def _fds() -> Mapping[Labels, float]:
    for path in _FD_DIRS:
        try:
            return {(): float(len(os.listdir(path)))}
        except OSError:
            continue
    return {}


def _threads() -> Mapping[Labels, float]:
    _let_dead_probe_go()
    fields = _stat()  # the OS's count: threads of C libraries too
    return {(): float(fields[17] if fields else threading.active_count())}


def _gc_stat(key: str) -> Mapping[Labels, float]:
    stats = gc.get_stats()
    base = _gc_base or [{}] * len(stats)
    return {(str(g),): float(s[key] - base[g].get(key, 0)) for g, s in enumerate(stats)}


def _collections() -> Mapping[Labels, float]:
    return _gc_stat("collections")


def _collected() -> Mapping[Labels, float]:
    return _gc_stat("collected")


def _uncollectable() -> Mapping[Labels, float]:
    return _gc_stat("uncollectable")


_OBSERVED: tuple[tuple[str, tuple[str, ...], Any, Any, str, str], ...] = (
    ("process.cpu.time", ("cpu.mode",), _cpu, "counter", "s", "CPU time of this process."),
    ("process.memory.usage", (), _rss, "updown", "By", "Resident memory of this process."),
    ("process.memory.virtual", (), _virtual, "updown", "By", "Virtual memory of this process."),
    (
        "process.unix.file_descriptor.count",
        (),
        _fds,
        "updown",
        "{file_descriptor}",
        "File descriptors open in this process.",
    ),
    ("process.thread.count", (), _threads, "updown", "{thread}", "Threads of this process."),
    (
        "cpython.gc.collections",
        ("cpython.gc.generation",),
        _collections,
        "counter",
        "{collection}",
        "Garbage collections, by generation.",
    ),
    (
        "cpython.gc.collected_objects",
        ("cpython.gc.generation",),
        _collected,
        "counter",
        "{object}",
        "Objects the garbage collector freed, by generation.",
    ),
    (
        "cpython.gc.uncollectable_objects",
        ("cpython.gc.generation",),
        _uncollectable,
        "counter",
        "{object}",
        "Objects the garbage collector found uncollectable, by generation.",
    ),
)
_GC_DURATION = "cpython.gc.duration"
_LOOP_DELAY = "asyncio.eventloop.delay"


# -- the GC pause ----------------------------------------------------------------------------------
def _on_gc(phase: str, info: dict[str, Any]) -> None:
    """``gc.callbacks`` entry: time each collection. Never blocks, never raises (it may run in
    any thread, at any allocation, inside our own code holding a lock)."""
    global _gc_started
    if phase == "start":
        _gc_started = perf_counter()
        return
    try:
        series = _gc_series
        started = _gc_started
        if not series or not started:
            return
        generation = info["generation"]
        if generation < len(series):
            item = series[generation]
            item.append((perf_counter() - started) * 1e3)
            if len(item) >= FOLD_AT:
                item.try_fold()
    except Exception:  # a GC callback must not fail: CPython would print it on stderr
        return


# -- the event-loop probe --------------------------------------------------------------------------
class LoopProbe:
    """A timer re-armed every ``interval_s`` on ``loop``; records how late each one fires.

    Holds the loop weakly and runs no task, so it keeps neither the loop nor the process alive;
    its pending timer goes when the loop closes.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, histogram: Histogram, interval_s: float
    ) -> None:
        self._loop = weakref.ref(loop)
        self._series = histogram.series(())
        self.interval_s = interval_s
        self.stopped = False
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self.interval_s
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = self._loop()
        if loop is None or self.stopped:
            return
        self._series.append(max(loop.time() - self._due, 0.0) * 1e3)
        if len(self._series) >= FOLD_AT:
            self._series.fold()
        self._arm(loop)

    def alive(self) -> bool:
        """Still probing a loop that has not closed."""
        loop = self._loop()
        return not self.stopped and loop is not None and not loop.is_closed()

    def stop(self) -> None:
        """Stop re-arming (a timer already set fires once more and does nothing)."""
        self.stopped = True
        handle, self._handle = self._handle, None
        loop = self._loop()
        if handle is not None and loop is not None and _running_loop() is loop:
            handle.cancel()  # only from the loop's own thread: cancel is not thread-safe


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def watch_loop(interval_s: float = PROBE_INTERVAL_S) -> None:
    """Probe the running event loop's delay (once per loop; called by the ASGI middleware while
    ``probe_wanted``). No-op outside a running loop or when runtime metrics are off."""
    global _probe, probe_wanted
    loop = _running_loop()
    with _lock:
        if not enabled or loop is None or _delay is None:
            return
        if _probe is not None and _probe.alive():
            probe_wanted = False
            return
        _probe = LoopProbe(loop, _delay, interval_s)
        probe_wanted = False


def unwatch_loop() -> None:
    """Stop the probe (lifespan shutdown): the next loop's first request starts another."""
    global probe_wanted
    with _lock:
        probe_wanted = enabled
    _stop_probe()


def _let_dead_probe_go() -> None:
    """At collection time: a probe whose loop closed without a lifespan shutdown (a test client,
    ``asyncio.run`` returning) is let go, so the next loop gets one."""
    global _probe, probe_wanted
    probe = _probe
    if probe is not None and not probe.alive():
        with _lock:
            if _probe is probe:
                _probe = None
                probe_wanted = enabled


# -- switching on and off --------------------------------------------------------------------------
def enable(on: bool = True) -> None:
    """Register the runtime metrics and hooks (idempotent), or remove them (``on=False``)."""
    global enabled, probe_wanted, _delay, _gc_series
    with _lock:
        if on == enabled:
            return
        enabled = on
        if on:
            for name, labels, callback, kind, unit, doc in _OBSERVED:
                registry.gauge(name, labels, callback, unit, doc, kind=kind)
            gc_hist = registry.histogram(
                _GC_DURATION,
                ("cpython.gc.generation",),
                "ms",
                "Pause of each garbage collection, by generation.",
                GC_BOUNDS_MS,
            )
            _gc_series = [gc_hist.series((str(g),)) for g in range(len(gc.get_stats()))]
            _delay = registry.histogram(
                _LOOP_DELAY,
                (),
                "ms",
                "How late a timer on the running asyncio loop fires (its blocking).",
                DELAY_BOUNDS_MS,
            )
            if _on_gc not in gc.callbacks:
                gc.callbacks.append(_on_gc)
            probe_wanted = True
            return
        probe_wanted = False
        if _on_gc in gc.callbacks:
            gc.callbacks.remove(_on_gc)
        _gc_series = []
        _delay = None
        for name, *_ in _OBSERVED:
            registry.remove(name)
        registry.remove(_GC_DURATION)
        registry.remove(_LOOP_DELAY)
    _stop_probe()


def _stop_probe() -> None:
    global _probe
    with _lock:
        probe, _probe = _probe, None
    if probe is not None:
        probe.stop()


def _after_fork_in_child() -> None:
    global _gc_base, _probe, probe_wanted
    _gc_base = gc.get_stats()  # the parent's collections are the parent's
    _probe = None  # the parent's loop is not running here
    probe_wanted = enabled


os.register_at_fork(after_in_child=_after_fork_in_child)
