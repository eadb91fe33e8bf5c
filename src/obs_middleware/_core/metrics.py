"""Metrics: counters, in-flight gauges and fixed-bucket histograms keyed by label tuples.

Updated on the request thread from every finished span (before sampling), so counts, latency
percentiles and error rates are exact at any sample rate. Exporters read ``registry.snapshot()``.
Gauges cost nothing on the hot path: a callback reads the observed state at snapshot time.
A metric keeps at most ``max_series`` label sets: observations of a new one beyond that go to the
``_OTHER`` series (every label ``_OTHER``) and are counted in ``obs.dropped`` (reason
``series_limit:<metric>``), so a label a client controls cannot grow memory without bound; the
check runs only when a label set is new.
Thread-safe: histograms and counters update under a per-metric lock; in-flight gauges use
``itertools.count`` (atomic under the GIL) so entering and leaving a request takes no lock.

Fork-safe: a child process starts with fresh locks (another thread of the parent may have held
one at ``fork()``) and no values. Each process reports only its own activity, as Prometheus
multiprocess mode and a new OTLP ``service.instance.id`` expect: a child repeating the parent's
counts would count them twice wherever processes are summed.

The histograms are in ``histograms.py``, what every kind shares in ``_metric_base.py``; this
module has the other kinds and the registry, and re-exports them all.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence

from ._metric_base import (
    OVERFLOW,
    HistogramPoint,
    Kind,
    Labels,
    MetricSnapshot,
    _folded,
    _Metric,
    _overflow,
)
from .histograms import DURATION_BUCKETS_MS, FOLD_AT, Histogram, HistogramView, Series

__all__ = [
    "DURATION_BUCKETS_MS",
    "FOLD_AT",
    "OVERFLOW",
    "Balance",
    "Counter",
    "Gauge",
    "Histogram",
    "HistogramPoint",
    "HistogramView",
    "InFlight",
    "Kind",
    "Labels",
    "MetricSnapshot",
    "Registry",
    "Series",
    "Tally",
    "dropped",
    "http_active",
    "http_duration",
    "registry",
]


class Counter(_Metric):
    """A monotonic sum per label set."""

    kind: Kind = "counter"

    def __init__(
        self, name: str, label_names: Sequence[str], unit: str = "1", description: str = ""
    ) -> None:
        super().__init__(name, label_names, unit, description)
        self._values: dict[Labels, float] = {}

    def add(self, labels: Labels, value: float = 1) -> None:
        """Add ``value`` to the label set ``labels``."""
        with self._lock:
            values = self._values
            total = values.get(labels)
            if total is not None:
                values[labels] = total + value
                return
            if len(values) < self.max_series:
                values[labels] = value
                return
            labels = _overflow(self)
            values[labels] = values.get(labels, 0) + value
        _folded(self, 1)

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:  # noqa: D102
        with self._lock:
            self._values.clear()


class Balance:
    """An up/down count kept without a lock: ``next(balance.up)``, ``next(balance.down)``
    (``next()`` on an ``itertools.count`` is atomic under the GIL); ``value`` is their difference.
    For counts taken on every request that a gauge reads at snapshot time."""

    __slots__ = ("down", "up")

    def __init__(self) -> None:
        self.up = itertools.count()
        self.down = itertools.count()

    @property
    def value(self) -> int:
        """Ups minus downs so far."""
        return _peek(self.up) - _peek(self.down)


class InFlight(_Metric):
    """An up-down count of operations in progress, updated without a lock."""

    kind: Kind = "updown"

    def __init__(
        self, name: str, label_names: Sequence[str], unit: str = "1", description: str = ""
    ) -> None:
        super().__init__(name, label_names, unit, description)
        self._pairs: dict[Labels, Balance] = {}

    def enter(self, labels: Labels) -> Iterator[int]:
        """One more in progress; call ``next()`` on the returned iterator when it leaves."""
        pair = self._pairs.get(labels)
        if pair is None:
            folded = False
            with self._lock:
                if labels not in self._pairs and len(self._pairs) >= self.max_series:
                    labels, folded = _overflow(self), True
                pair = self._pairs.setdefault(labels, Balance())
            if folded:
                _folded(self, 1)
        next(pair.up)
        return pair.down

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        return {k: float(pair.value) for k, pair in list(self._pairs.items())}

    def reset(self) -> None:  # noqa: D102
        with self._lock:
            self._pairs.clear()


class Tally(_Metric):
    """A counter without labels, counted by ``inc()`` without a lock (``next()`` on an
    ``itertools.count`` is atomic under the GIL): for counts taken on every request."""

    kind: Kind = "counter"

    def __init__(self, name: str, unit: str = "1", description: str = "") -> None:
        super().__init__(name, (), unit, description)
        self._count = itertools.count()

    def inc(self) -> None:
        """Count one."""
        next(self._count)

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        return {(): float(_peek(self._count))}

    def reset(self) -> None:  # noqa: D102
        self._count = itertools.count()


def _peek(count: Iterator[int]) -> int:
    """The value ``next(count)`` would return, without consuming it (``repr`` is ``count(n)``)."""
    return int(repr(count)[6:-1])


class Gauge(_Metric):
    """A value per label set, read from ``callback`` at snapshot time (pool sizes, ratios).

    The callback returns ``{labels: value}``; if it raises, the snapshot has no points for this
    gauge and the error is logged once. ``kind``: ``"counter"`` or ``"updown"`` for a sum read so
    (a process's CPU time, its memory), as OTel's observable instruments.
    """

    kind: Kind = "gauge"

    def __init__(
        self,
        name: str,
        label_names: Sequence[str],
        callback: Callable[[], Mapping[Labels, float]],
        unit: str = "1",
        description: str = "",
        *,
        kind: Kind = "gauge",
    ) -> None:
        super().__init__(name, label_names, unit, description)
        self.callback = callback
        self.kind = kind
        self._failed = False

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        try:
            return dict(self.callback())
        except Exception:
            if not self._failed:
                self._failed = True
                logging.getLogger("obs_middleware").warning(
                    "obs-middleware: gauge %r callback failed", self.name, exc_info=True
                )
            return {}

    def reset(self) -> None:  # noqa: D102
        pass  # nothing stored: values live in the observed objects


class Registry:
    """Every metric of the process, by name."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._count_views: dict[str, tuple[Histogram | HistogramView, str]] = {}
        self._lock = threading.Lock()
        _registries.add(self)

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.setdefault(metric.name, metric)
        if type(existing) is not type(metric) or existing.label_names != metric.label_names:
            raise ValueError(f"metric {metric.name!r} already registered with another shape")
        return existing

    def counter(
        self, name: str, label_names: Sequence[str], unit: str = "1", description: str = ""
    ) -> Counter:
        """Get or create a counter."""
        return self._add(Counter(name, label_names, unit, description))  # type: ignore[return-value]

    def tally(self, name: str, unit: str = "1", description: str = "") -> Tally:
        """Get or create a label-less counter counted without a lock."""
        return self._add(Tally(name, unit, description))  # type: ignore[return-value]

    def in_flight(
        self, name: str, label_names: Sequence[str], unit: str = "1", description: str = ""
    ) -> InFlight:
        """Get or create an in-flight (up-down) gauge."""
        return self._add(InFlight(name, label_names, unit, description))  # type: ignore[return-value]

    def gauge(
        self,
        name: str,
        label_names: Sequence[str],
        callback: Callable[[], Mapping[Labels, float]],
        unit: str = "1",
        description: str = "",
        *,
        kind: Kind = "gauge",
    ) -> Gauge:
        """Get or create a gauge (or ``kind`` counter, updown) whose values ``callback`` returns at
        snapshot time."""
        gauge = Gauge(name, label_names, callback, unit, description, kind=kind)
        return self._add(gauge)  # type: ignore[return-value]

    def remove(self, name: str) -> None:
        """Forget the metric ``name`` (a feature turned off); no error if absent."""
        with self._lock:
            self._metrics.pop(name, None)

    def histogram(
        self,
        name: str,
        label_names: Sequence[str],
        unit: str = "ms",
        description: str = "",
        bounds: Sequence[float] = DURATION_BUCKETS_MS,
    ) -> Histogram:
        """Get or create a histogram."""
        return self._add(Histogram(name, label_names, unit, description, bounds))  # type: ignore[return-value]

    def histogram_view(
        self,
        name: str,
        label_names: Sequence[str],
        of: Histogram,
        relabel: Callable[[Labels], Labels | None],
        description: str = "",
    ) -> HistogramView:
        """Get or create a ``HistogramView`` of ``of``."""
        view = HistogramView(name, label_names, of, relabel, description)
        return self._add(view)  # type: ignore[return-value]

    def count_view(self, name: str, of: Histogram | HistogramView, description: str = "") -> None:
        """Expose ``of``'s observation count as counter ``name`` (no extra hot-path work)."""
        self._count_views[name] = (of, description)

    def snapshot(self) -> dict[str, MetricSnapshot]:
        """Every metric's current values, by name."""
        with self._lock:
            metrics = list(self._metrics.values())
        snap = {m.name: m.snapshot() for m in metrics}
        for name, (hist, description) in self._count_views.items():
            snap[name] = MetricSnapshot(
                name, "counter", "1", description, hist.label_names, dict(hist.counts())
            )
        return snap

    def reset(self) -> None:
        """Forget every value, keep the metrics."""
        with self._lock:
            metrics = list(self._metrics.values())
        for m in metrics:
            m.reset()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        for m in list(self._metrics.values()):
            m._after_fork_in_child()


_registries: weakref.WeakSet[Registry] = weakref.WeakSet()


def _after_fork() -> None:
    for reg in list(_registries):
        reg._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)

registry = Registry()


# Built-ins every exporter can rely on.
http_duration = registry.histogram(
    "http.server.duration",
    ("http.method", "http.route", "http.status_class"),
    "ms",
    "Duration of HTTP server requests, to the last body byte.",
)
registry.count_view("http.server.requests", http_duration, "HTTP server requests.")
http_active = registry.in_flight(
    "http.server.active", ("http.method",), "1", "HTTP server requests in progress."
)
dropped = registry.counter(
    "obs.dropped", ("reason",), "1", "Telemetry records dropped before export, by reason."
)
