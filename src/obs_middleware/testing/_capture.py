"""Capture: an in-memory configuration whose records, events and metrics a test can read."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import _setup
from .._core import span as _span
from .._core.config import HttpOptions, PipelineOptions, SamplingOptions
from .._core.metrics import MetricSnapshot, registry
from .._record import Record, set_process_identity
from ..exporters.memory import MemoryExporter

__all__ = ["Capture", "capture", "deterministic"]

# 2026-01-01T00:00:00Z: the wall-clock origin of deterministic timestamps.
_EPOCH_NS = 1_767_225_600 * 10**9


class Capture:
    """What a test reads: every exported record so far, and the metrics, all as properties.

    ``records``, ``spans``, ``events``, ``names`` (after a flush) and ``metrics``; the methods
    ``span(name)`` finds one span, ``clear()`` forgets. (``names()`` and ``metrics()``, the
    methods of 0.x, still work and warn.)
    """

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

    @property
    def names(self) -> list[str]:
        """Names of all records, in order."""
        return _Called([r["name"] for r in self.records], "names")

    @property
    def metrics(self) -> dict[str, MetricSnapshot]:
        """The metrics registry's snapshot, by metric name."""
        return _CalledDict(registry.snapshot(), "metrics")

    def span(self, name: str) -> Record:
        """The single span record named ``name`` (AssertionError if not exactly one)."""
        found = [r for r in self.spans if r["name"] == name]
        assert len(found) == 1, f"expected one span {name!r}, found {len(found)}: {self.names}"
        return found[0]

    def clear(self) -> None:
        """Forget records and metric values."""
        _setup.flush(5.0)
        self.exporter.clear()
        registry.reset()


def _deprecated_call(name: str) -> None:
    warnings.warn(
        f"Capture.{name}() is deprecated: read the property Capture.{name}",
        DeprecationWarning,
        stacklevel=3,
    )


class _Called(list[str]):
    """``Capture.names``; calling it (the 0.x method) warns and returns it."""

    __slots__ = ("_name",)

    def __init__(self, items: list[str], name: str) -> None:
        super().__init__(items)
        self._name = name

    def __call__(self) -> list[str]:
        _deprecated_call(self._name)
        return self


class _CalledDict(dict[str, MetricSnapshot]):
    """``Capture.metrics``; calling it (the 0.x method) warns and returns it."""

    __slots__ = ("_name",)

    def __init__(self, items: dict[str, MetricSnapshot], name: str) -> None:
        super().__init__(items)
        self._name = name

    def __call__(self) -> dict[str, MetricSnapshot]:
        _deprecated_call(self._name)
        return self


DETERMINISTIC_HOST = "test-host"
DETERMINISTIC_INSTANCE = "0" * 16


@contextmanager
def deterministic() -> Iterator[None]:
    """Sequential trace/span ids (1, 2, …), a clock that advances 1 ms per reading, and a fixed
    process identity (``host.name`` ``"test-host"``, ``service.instance.id`` 16 zeros)."""
    saved = (_span.randbits, _span.clock_ns, _span.wall_anchor_ns)
    identity = set_process_identity(DETERMINISTIC_HOST, DETERMINISTIC_INSTANCE)
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
        set_process_identity(*identity)


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
    on entry. The capture wins over an ``obs.configure()`` made inside the block (an app module
    imported by the test): that call keeps the capture's exporter, sampling and pipeline options,
    and the options given here, and sets the rest (service, ``http``…). The configuration from
    before the block is restored on exit. Runtime metrics (process CPU, memory, GC: values no
    test can predict) are off unless ``runtime_metrics=True``; log records are not rate-limited
    unless ``logs_per_s`` says so.
    """
    configure_kw.setdefault("runtime_metrics", False)
    configure_kw.setdefault("logs_per_s", 0)
    exporter = MemoryExporter()
    registry.reset()
    config = _setup.build_config(
        exporters=[exporter],
        sampling=sampling or SamplingOptions(traces_per_s=0),
        http=http or HttpOptions(),
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
        **configure_kw,
    )
    pin = ["exporters", "sampling", "pipeline", *configure_kw]
    if http is not None:
        pin.append("http")
    with _setup.scoped(config, pin=pin):
        if fixed:
            with deterministic():
                yield Capture(exporter)
        else:
            yield Capture(exporter)
