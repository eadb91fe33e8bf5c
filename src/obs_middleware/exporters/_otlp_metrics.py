"""OTLP metrics: the metrics core's snapshot as SDK ``MetricsData`` (cumulative sums, gauges and
explicit-bucket histograms, names and units as in the core)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from .._core.metrics import HistogramPoint, MetricSnapshot
from .._json import valid_text

__all__ = ["metric"]


def _labels(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {
        name: valid_text(v) if isinstance(v, str) else v
        for name, v in zip(names, values, strict=False)
    }


def metric(snap: MetricSnapshot, start: int, now: int) -> Metric | None:
    """One core metric as an SDK ``Metric`` (None when it has no points yet)."""
    names = snap.label_names
    if not snap.points:
        return None
    if snap.kind == "histogram":
        points = [
            HistogramDataPoint(
                _labels(names, labels),
                start,
                now,
                p.count,
                p.sum,
                list(p.counts),
                list(p.bounds),
                None,  # type: ignore[arg-type]  # min/max are optional in OTLP; not tracked
                None,  # type: ignore[arg-type]
            )
            for labels, p in snap.points.items()
            if isinstance(p, HistogramPoint)
        ]
        data: Any = Histogram(points, AggregationTemporality.CUMULATIVE)
    else:
        numbers = [
            NumberDataPoint(_labels(names, labels), start, now, value)
            for labels, value in snap.points.items()
            if not isinstance(value, HistogramPoint)
        ]
        if snap.kind == "gauge":
            data = Gauge(numbers)
        else:
            data = Sum(numbers, AggregationTemporality.CUMULATIVE, snap.kind == "counter")
    return Metric(snap.name, snap.description, snap.unit, data)
