"""What every metric kind shares: the base class, label sets, snapshots and histogram points,
and the overflow series a full metric folds new label sets into (``metrics.py`` has the kinds
and the registry, ``histograms.py`` the histograms).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .internal import warn_once

__all__ = ["OVERFLOW", "HistogramPoint", "Kind", "Labels", "MetricSnapshot"]

Labels = tuple[str, ...]
Kind = Literal["counter", "updown", "gauge", "histogram"]


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


OVERFLOW = "_OTHER"  # every label of the series that takes a full metric's new label sets


def _overflow(metric: _Metric) -> Labels:
    return (OVERFLOW,) * len(metric.label_names)


def _folded(metric: _Metric, n: int) -> None:
    """Count ``n`` observations folded into ``metric``'s overflow series; log it once."""
    from .metrics import dropped  # noqa: PLC0415 - a full metric only; metrics imports us

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
