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
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Literal

from .internal import warn_once

__all__ = [
    "DURATION_BUCKETS_MS",
    "FOLD_AT",
    "OVERFLOW",
    "Counter",
    "Gauge",
    "Histogram",
    "HistogramPoint",
    "HistogramView",
    "InFlight",
    "MetricSnapshot",
    "Registry",
    "Series",
    "Tally",
    "dropped",
    "http_active",
    "http_duration",
    "registry",
]

Labels = tuple[str, ...]
FOLD_AT = 256  # queued observations of one histogram series folded in by the recording thread
Kind = Literal["counter", "updown", "gauge", "histogram"]

# A 1-2-5 series from 50 µs to 60 s: percentiles interpolate within a bucket (error < one step).
DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 20_000, 60_000,
)  # fmt: skip


@dataclass(frozen=True)
class HistogramPoint:
    """One label set of a histogram: per-bucket counts (last is +Inf), sum and count."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def percentile(self, q: float) -> float:
        """Estimate the ``q``-th percentile (0 to 100) by linear interpolation within its bucket."""
        if self.count == 0:
            return 0.0
        rank = q / 100 * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lo = self.bounds[i - 1] if i > 0 else 0.0
                hi = self.bounds[i] if i < len(self.bounds) else lo * 2 or 1.0
                return lo + (hi - lo) * max(rank - seen, 0) / n
            seen += n
        return self.bounds[-1]


@dataclass(frozen=True)
class MetricSnapshot:
    """A metric's values at one moment, as exporters read them."""

    name: str
    kind: Kind
    unit: str
    description: str
    label_names: tuple[str, ...]
    points: dict[Labels, float | HistogramPoint] = field(default_factory=dict)


class _Metric:
    kind: Kind
    max_series = 2_000  # label sets kept; observations of further new ones go to OVERFLOW

    def __init__(self, name: str, label_names: Sequence[str], unit: str, description: str) -> None:
        self.name = name
        self.label_names = tuple(label_names)
        self.unit = unit
        self.description = description
        self._lock = threading.Lock()

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        raise NotImplementedError

    def snapshot(self) -> MetricSnapshot:
        """Copy of the current values."""
        return MetricSnapshot(
            self.name, self.kind, self.unit, self.description, self.label_names, self._points()
        )

    def reset(self) -> None:
        """Forget every value (tests, and after ``fork()`` in a child)."""
        raise NotImplementedError

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the parent's may be held by a thread the child lacks
        self.reset()


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


class InFlight(_Metric):
    """An up-down count of operations in progress, updated without a lock."""

    kind: Kind = "updown"

    def __init__(
        self, name: str, label_names: Sequence[str], unit: str = "1", description: str = ""
    ) -> None:
        super().__init__(name, label_names, unit, description)
        self._pairs: dict[Labels, tuple[Iterator[int], Iterator[int]]] = {}

    def enter(self, labels: Labels) -> Iterator[int]:
        """One more in progress; call ``next()`` on the returned iterator when it leaves."""
        pair = self._pairs.get(labels)
        if pair is None:
            folded = False
            with self._lock:
                if labels not in self._pairs and len(self._pairs) >= self.max_series:
                    labels, folded = _overflow(self), True
                pair = self._pairs.setdefault(labels, (itertools.count(1), itertools.count(1)))
            if folded:
                _folded(self, 1)
        next(pair[0])
        return pair[1]

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        return {k: float(_peek(up) - _peek(down)) for k, (up, down) in list(self._pairs.items())}

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


class Series(deque[float]):
    """One label set of a histogram: the observations not folded in yet, and its row.

    The hot path keeps a series (``Histogram.series``) and records with ``series.append(value)``
    (atomic, no lock), then ``series.fold()`` once ``len(series) >= FOLD_AT``.
    """

    __slots__ = ("_histogram", "labels", "row")

    def __init__(self, histogram: Histogram, labels: Labels, row: list[float]) -> None:
        super().__init__()
        self._histogram = histogram
        self.labels = labels
        self.row = row  # counts per bucket..., sum, count

    def fold(self) -> None:
        """Fold the queued observations into the row (bucketing, counting and summing in C)."""
        with self._histogram._lock:
            self._fold()

    def try_fold(self) -> None:
        """Fold unless the lock is held (a GC callback may run inside a fold: it never waits)."""
        lock = self._histogram._lock
        if lock.acquire(blocking=False):
            try:
                self._fold()
            finally:
                lock.release()

    def _fold(self) -> None:  # under the histogram's lock: only folds take from the queue
        count = len(self)
        if not count:
            return
        popleft = self.popleft
        values = [popleft() for _ in range(count)]
        row = self.row
        for index, n in collections.Counter(
            map(bisect_left, repeat(self._histogram.bounds), values)
        ).items():
            row[index] += n
        row[-2] += sum(values)
        row[-1] += count


class Histogram(_Metric):
    """Fixed-bucket histogram per label set; also answers the count (a request counter).

    Recording takes no lock: each label set's ``Series`` queues observations, folded into its
    buckets on read or once ``FOLD_AT`` are queued.
    """

    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        label_names: Sequence[str],
        unit: str = "ms",
        description: str = "",
        bounds: Sequence[float] = DURATION_BUCKETS_MS,
    ) -> None:
        super().__init__(name, label_names, unit, description)
        self.bounds = tuple(bounds)
        self._series: dict[Labels, Series] = {}

    def record(self, labels: Labels, value: float) -> None:
        """Add one observation (per-call code that records one label set keeps ``series()``)."""
        series = self._series.get(labels)
        if series is None:
            series = self.series(labels)
        series.append(value)
        if len(series) >= FOLD_AT:
            series.fold()

    def series(self, labels: Labels) -> Series:
        """The series of ``labels``; beyond ``max_series`` label sets, the overflow series
        (counted once per call: keep a series only if its ``labels`` are the ones asked for).
        """
        series = self._series.get(labels)
        if series is not None:
            return series
        with self._lock:
            known = self._series
            series = known.get(labels)
            if series is not None:
                return series
            full = len(known) >= self.max_series
            if full:
                labels = _overflow(self)
                series = known.get(labels)
            if series is None:
                series = known[labels] = Series(self, labels, [0.0] * (len(self.bounds) + 3))
        if full:
            _folded(self, 1)
        return series

    def _fold(self) -> None:
        with self._lock:
            for series in self._series.values():
                series._fold()

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        return {k: _point(self.bounds, r) for k, r in self.rows().items()}

    def rows(self) -> dict[Labels, list[float]]:
        """Copy of each observed label set's bucket counts, then its sum and count."""
        self._fold()
        with self._lock:
            return {k: list(s.row) for k, s in self._series.items() if s.row[-1]}

    def counts(self) -> dict[Labels, float]:
        """Observation count per observed label set."""
        self._fold()
        with self._lock:
            return {k: s.row[-1] for k, s in self._series.items() if s.row[-1]}

    def reset(self) -> None:
        """Forget every value; series handed out stay valid (and empty)."""
        with self._lock:
            for series in self._series.values():
                series.clear()
                series.row[:] = [0.0] * len(series.row)


OVERFLOW = "_OTHER"  # every label of the series that takes a full metric's new label sets


def _overflow(metric: _Metric) -> Labels:
    return (OVERFLOW,) * len(metric.label_names)


def _folded(metric: _Metric, n: int) -> None:
    """Count ``n`` observations folded into ``metric``'s overflow series; log it once."""
    if metric is dropped:  # its reasons are ours, and its own overflow must not recurse
        return
    dropped.add((f"series_limit:{metric.name}",), n)
    warn_once(
        f"series_limit:{metric.name}",
        "metric %r has %d label sets; new ones are counted under %r",
        metric.name,
        metric.max_series,
        OVERFLOW,
    )


def _point(bounds: tuple[float, ...], row: list[float]) -> HistogramPoint:
    """A histogram row (bucket counts, sum, count) as a point."""
    return HistogramPoint(bounds, tuple(int(c) for c in row[:-2]), row[-2], int(row[-1]))


class HistogramView(_Metric):
    """Another breakdown of a histogram's observations, computed at snapshot time.

    Each label set of ``of`` is mapped by ``relabel`` to this view's labels (None: left out), and
    the rows mapped alike are added up. Costs nothing on the hot path.
    """

    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        label_names: Sequence[str],
        of: Histogram,
        relabel: Callable[[Labels], Labels | None],
        description: str = "",
    ) -> None:
        super().__init__(name, label_names, of.unit, description)
        self.of = of
        self.relabel = relabel

    def _points(self) -> dict[Labels, float | HistogramPoint]:
        rows: dict[Labels, list[float]] = {}
        for labels, row in self.of.rows().items():
            key = self.relabel(labels)
            if key is None:
                continue
            total = rows.get(key)
            if total is None:
                rows[key] = row
            else:
                rows[key] = [a + b for a, b in zip(total, row, strict=True)]
        bounds = self.of.bounds
        return {k: _point(bounds, r) for k, r in rows.items()}

    def counts(self) -> dict[Labels, float]:
        """Observation count per label set."""
        return {k: p.count for k, p in self._points().items() if isinstance(p, HistogramPoint)}

    def reset(self) -> None:  # noqa: D102
        pass  # nothing stored: the observations live in ``of``


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
