"""Scenario ``span``: a root span with 100 children, each entered and exited with 3 attributes.

Figures are per child. The floor is a minimal pure-Python span (contextvar set/reset, two clock
reads, one deque append) that exports nothing; ``floor-export`` adds the least a jsonl record
costs. Every configuration flushes every ``SPAN_CHUNK`` roots inside the timed region.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from _peers import DdtraceHandle, ObsHandle, OtelHandle
from _scenarios import SPAN_CHILDREN

import obs_middleware as obs

from . import Bench

_mini_current: contextvars.ContextVar[Any] = contextvars.ContextVar("mini_span", default=None)
_mini_sink: deque[Any] = deque(maxlen=10_000)


class MiniSpan:
    """The floor: contextvar set/reset, two clock reads, one deque append. Exports nothing."""

    __slots__ = ("attrs", "end", "name", "parent", "start", "token")

    def __init__(self, name: str, attrs: dict[str, Any]) -> None:
        self.name = name
        self.attrs = attrs

    def __enter__(self) -> MiniSpan:
        self.parent = _mini_current.get()
        self.token = _mini_current.set(self)
        self.start = time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.perf_counter_ns()
        _mini_current.reset(self.token)
        _mini_sink.append(self)


def _floor_exporter(workdir: Path) -> tuple[Callable[[], None], Callable[[], int]]:
    """Encode what MiniSpan queued as the least a jsonl record can be; one write per flush.

    The lower bound of any exporting implementation: no sampling, metrics, events, attribute
    protection or batching thread; ids as hex, the start as RFC 3339, one orjson call per record.
    """
    path = workdir / "floor.jsonl"
    out = path.open("ab")
    count = [0]
    anchor = time.time_ns() - time.perf_counter_ns()
    ids = random.getrandbits
    opts = orjson.OPT_APPEND_NEWLINE

    def flush() -> None:
        data = bytearray()
        prefix_second, prefix = -1, ""
        while _mini_sink:
            span = _mini_sink.popleft()
            second, us = divmod((anchor + span.start) // 1000, 1_000_000)
            if second != prefix_second:
                prefix_second = second
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            parent = span.parent
            rec = {
                "type": "span",
                "name": span.name,
                "trace_id": ids(128).to_bytes(16, "big").hex(),
                "span_id": ids(64).to_bytes(8, "big").hex(),
                "parent_id": None if parent is None else "0" * 16,
                "service": "bench",
                "environment": "dev",
                "start": "%s.%06dZ" % (prefix, us),
                "duration_ms": (span.end - span.start) // 1000 / 1000,
                "status": "ok",
                "error_type": None,
                "error_message": None,
                "user_id": None,
                "tier": None,
                "request_id": None,
            }
            rec.update(span.attrs)
            data += orjson.dumps(rec, None, opts)
            count[0] += 1
        out.write(data)
        out.flush()

    return flush, lambda: count[0]


def build(config: str, workdir: Path) -> Bench:
    """The span scenario under ``config``."""
    children = range(SPAN_CHILDREN)
    if config in ("floor", "floor-export"):

        def run(n: int) -> None:
            for _ in range(n):
                with MiniSpan("root", {}):
                    for _ in children:
                        with MiniSpan("child", {"k1": 1, "k2": "two", "k3": 3.0}):
                            pass

        if config == "floor":
            return Bench(run=run)
        flush, emitted = _floor_exporter(workdir)
        return Bench(run=run, flush=flush, emitted=emitted)
    if config in ("obs", "obs-noexport"):
        handle = ObsHandle(workdir, export=config == "obs")
        span = obs.span

        def run(n: int) -> None:
            for _ in range(n):
                with span("root"):
                    for _ in children:
                        with span("child", k1=1, k2="two", k3=3.0):
                            pass

        def validate() -> str:
            before = handle.emitted()
            run(1)
            obs.flush()
            if config == "obs" and handle.emitted() - before != SPAN_CHILDREN + 1:
                raise AssertionError("obs did not export every span")
            return "ok"

        return Bench(run=run, flush=handle.flush, emitted=handle.emitted, validate=validate)
    if config == "otel":
        otel = OtelHandle()
        tracer = otel.provider.get_tracer("bench")
        attrs = {"k1": 1, "k2": "two", "k3": 3.0}

        def run(n: int) -> None:
            for _ in range(n):
                with tracer.start_as_current_span("root"):
                    for _ in children:
                        with tracer.start_as_current_span("child", attributes=attrs):
                            pass

        return Bench(run=run, flush=otel.flush, emitted=otel.emitted)
    if config == "ddtrace":
        dd = DdtraceHandle()
        trace = dd.tracer.trace

        def run(n: int) -> None:
            for _ in range(n):
                with trace("root"):
                    for _ in children:
                        with trace("child") as s:
                            s.set_tag("k1", 1)
                            s.set_tag("k2", "two")
                            s.set_tag("k3", 3.0)

        return Bench(run=run, emitted=dd.emitted)
    raise ValueError(f"unknown config {config!r}")
