"""Histograms: fixed buckets per label set, recorded without a lock (``Series``), and views that
regroup a histogram's rows at snapshot time (``HistogramView``). Built through ``metrics.registry``.
"""

from __future__ import annotations

import collections
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from itertools import repeat

from ._metric_base import HistogramPoint, Kind, Labels, _folded, _Metric, _overflow

__all__ = ["DURATION_BUCKETS_MS", "FOLD_AT", "Histogram", "HistogramView", "Series"]

FOLD_AT = 256  # queued observations of one histogram series folded in by the recording thread

# A 1-2-5 series from 50 µs to 60 s: percentiles interpolate within a bucket (error < one step).
DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 20_000, 60_000,
)  # fmt: skip


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


class _OverflowSeries(Series):
    """The series a full histogram takes new label sets into: each observation is counted as
    folded (``obs.dropped{reason="series_limit:…"}``) however it was recorded."""

    __slots__ = ()

    def append(self, value: float) -> None:
        super().append(value)
        _folded(self._histogram, 1)


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
        """The series of ``labels``; beyond ``max_series`` label sets, the overflow series, which
        counts each observation it takes as folded (so any series returned may be kept)."""
        series = self._series.get(labels)
        if series is not None:
            return series
        with self._lock:
            known = self._series
            series = known.get(labels)
            if series is not None:
                return series
            kind = Series
            if len(known) >= self.max_series:
                labels, kind = _overflow(self), _OverflowSeries
                series = known.get(labels)
            if series is None:
                series = known[labels] = kind(self, labels, [0.0] * (len(self.bounds) + 3))
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
