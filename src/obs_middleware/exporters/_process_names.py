"""The ``process_*`` names Prometheus users expect, from the runtime metrics (``_core/runtime.py``).

``prometheus_client``'s default ``ProcessCollector`` serves ``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_virtual_memory_bytes`` and ``process_open_fds``;
dashboards and alerts are written against them. Our scrape endpoints use a registry of their
own, without that collector, so these come from the same snapshot as the OTel-named series
(``process_cpu_time_seconds_total{cpu_mode}``, ``process_memory_usage_bytes``, ...): the same
values, summed the same way across workers in multiprocess mode. ``ObsCollector`` registered
into ``prometheus_client.REGISTRY`` by hand (where the default collector already serves them)
leaves them out unless asked (``process_names=True``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .._core.metrics import HistogramPoint, MetricSnapshot

__all__ = ["process_families"]

# our metric → (Prometheus name, help, counter?)
_ALIASES = (
    ("process.cpu.time", "process_cpu_seconds", "Total user and system CPU time in seconds.", True),
    ("process.memory.usage", "process_resident_memory_bytes", "Resident memory in bytes.", False),
    ("process.memory.virtual", "process_virtual_memory_bytes", "Virtual memory in bytes.", False),
    ("process.unix.file_descriptor.count", "process_open_fds", "Open file descriptors.", False),
)


def process_families(snapshot: Mapping[str, MetricSnapshot]) -> Iterator[Metric]:
    """The ``process_*`` families of the runtime metrics in ``snapshot`` (label-less sums)."""
    for source, name, doc, counter in _ALIASES:
        m = snapshot.get(source)
        if m is None or not m.points:
            continue
        total = sum(v for v in m.points.values() if not isinstance(v, HistogramPoint))
        family = CounterMetricFamily(name, doc) if counter else GaugeMetricFamily(name, doc)
        family.add_metric([], total)
        yield family
