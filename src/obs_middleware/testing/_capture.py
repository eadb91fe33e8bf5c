"""Capture: an in-memory configuration whose records, events and metrics a test can read."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import _setup
from .._core import span as _span
from .._core.config import HttpOptions, PipelineOptions, SamplingOptions
from .._core.metrics import MetricSnapshot, registry
from .._record import Record
from ..exporters.memory import MemoryExporter

__all__ = ["Capture", "capture", "deterministic"]

# 2026-01-01T00:00:00Z: the wall-clock origin of deterministic timestamps.
_EPOCH_NS = 1_767_225_600 * 10**9


class Capture:
    """What a test reads: every exported record (after a flush), split by type, and metrics."""

    def __init__(self, exporter: MemoryExporter) -> None:
        self.exporter = exporter

    @property
    def records(self) -> list[Record]:
        """All records exported so far (flushes first)."""
        _setup.flush(5.0)
        return list(self.exporter.records)

    @property
    def spans(self) -> list[Record]:
        """Span records, in the order they ended."""
        return [r for r in self.records if r["type"] == "span"]

    @property
    def events(self) -> list[Record]:
        """Event records (``obs.emit``), in order."""
        return [r for r in self.records if r["type"] == "event"]

    def span(self, name: str) -> Record:
        """The single span record named ``name`` (AssertionError if not exactly one)."""
        found = [r for r in self.spans if r["name"] == name]
        assert len(found) == 1, f"expected one span {name!r}, found {len(found)}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        """Names of all records, in order."""
        return [r["name"] for r in self.records]

    def metrics(self) -> dict[str, MetricSnapshot]:
        """The metrics registry's snapshot."""
        return registry.snapshot()

    def clear(self) -> None:
        """Forget records and metric values."""
        _setup.flush(5.0)
        self.exporter.clear()
        registry.reset()


@contextmanager
def deterministic() -> Iterator[None]:
    """Sequential trace/span ids (1, 2, …) and a clock that advances 1 ms per reading."""
    saved = (_span.randbits, _span.clock_ns, _span.wall_anchor_ns)
    trace_ids = itertools.count(1)
    span_ids = itertools.count(1)
    ticks = itertools.count(1)

    def randbits(bits: int) -> int:
        return next(trace_ids) if bits > 64 else next(span_ids)

    _span.randbits = randbits
    _span.clock_ns = lambda: next(ticks) * 1_000_000
    _span.wall_anchor_ns = _EPOCH_NS
    try:
        yield
    finally:
        _span.randbits, _span.clock_ns, _span.wall_anchor_ns = saved


@contextmanager
def capture(
    *,
    fixed: bool = True,
    sampling: SamplingOptions | None = None,
    http: HttpOptions | None = None,
    **configure_kw: Any,
) -> Iterator[Capture]:
    """Configure a memory exporter (and, with ``fixed``, deterministic ids/clock) for a block.

    Every trace is captured (no rate limit) unless ``sampling`` says otherwise. Metrics are reset
    on entry. The previous configuration is restored on exit.
    """
    exporter = MemoryExporter()
    registry.reset()
    config = _setup.build_config(
        exporters=[exporter],
        sampling=sampling or SamplingOptions(traces_per_s=0),
        http=http or HttpOptions(),
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
        **configure_kw,
    )
    with _setup.scoped(config):
        if fixed:
            with deterministic():
                yield Capture(exporter)
        else:
            yield Capture(exporter)
