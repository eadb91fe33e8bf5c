"""Prometheus: a ``prometheus_client`` collector over the metrics core, served on ``/metrics``.

Names follow Prometheus conventions: dots become underscores, base units with their suffix
(``http.server.duration`` in ms → histogram ``http_server_duration_seconds``, buckets and sum in
seconds), counters end in ``_total`` (``http_server_requests_total``, ``obs_dropped_total``),
gauges as they are. Label names are sanitised the same way (``http.route`` → ``http_route``).

Serve it with ``metrics_app()`` (an ASGI app to mount at ``/metrics``) or a standalone port
(``PrometheusExporter(port=9464)``, exporter name ``"prometheus:9464"``). For gunicorn or uvicorn
workers, give every process the same ``multiprocess_dir`` (or ``OBS_PROMETHEUS_MULTIPROC_DIR``):
each one writes its values there from its export thread and any of them answers a scrape with the
sum over all (gauges only from live processes). Empty the directory when the server starts, as
with ``prometheus_client``'s own multiprocess mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, make_asgi_app, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from .._core.metrics import HistogramPoint, MetricSnapshot, registry
from .._record import Record

__all__ = ["ObsCollector", "PrometheusExporter", "metrics_app", "prometheus_name"]

_log = logging.getLogger("obs_middleware")
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
# unit → (name suffix, factor to the base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "ms": ("seconds", 1e-3),
    "s": ("seconds", 1.0),
    "us": ("seconds", 1e-6),
    "By": ("bytes", 1.0),
    "bytes": ("bytes", 1.0),
    "USD": ("usd", 1.0),
    "usd": ("usd", 1.0),
}


def prometheus_name(name: str, unit: str, kind: str) -> tuple[str, float]:
    """Prometheus family name (without ``_total``) and the factor converting values to it."""
    base = _INVALID.sub("_", name)
    suffix, factor = _UNITS.get(unit, ("", 1.0))
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind == "counter" and base.endswith("_total"):
        base = base[: -len("_total")]
    return base, factor


def _label(name: str) -> str:
    return _INVALID.sub("_", name)


# -- snapshots shared between processes ------------------------------------------------------------
Snapshot = dict[str, MetricSnapshot]


def _dump(snapshot: Snapshot) -> bytes:
    out: dict[str, Any] = {}
    for name, m in snapshot.items():
        points = [
            [list(labels), [p.counts, p.sum, p.count] if isinstance(p, HistogramPoint) else p]
            for labels, p in m.points.items()
        ]
        bounds = next(
            (list(p.bounds) for p in m.points.values() if isinstance(p, HistogramPoint)), []
        )
        out[name] = [m.kind, m.unit, m.description, list(m.label_names), bounds, points]
    return orjson.dumps({"pid": os.getpid(), "metrics": out})


def _load(data: bytes) -> tuple[int, Snapshot]:
    doc = orjson.loads(data)
    snap: Snapshot = {}
    for name, (kind, unit, description, label_names, bounds, points) in doc["metrics"].items():
        values: dict[tuple[str, ...], float | HistogramPoint] = {}
        for labels, value in points:
            if kind == "histogram":
                counts, total, count = value
                values[tuple(labels)] = HistogramPoint(tuple(bounds), tuple(counts), total, count)
            else:
                values[tuple(labels)] = value
        snap[name] = MetricSnapshot(name, kind, unit, description, tuple(label_names), values)
    return int(doc["pid"]), snap


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _merge(into: Snapshot, other: Snapshot, gauges: bool) -> None:
    for name, m in other.items():
        if m.kind in ("updown", "gauge") and not gauges:
            continue
        mine = into.get(name)
        if mine is None:
            into[name] = MetricSnapshot(
                m.name, m.kind, m.unit, m.description, m.label_names, dict(m.points)
            )
            continue
        for labels, value in m.points.items():
            have = mine.points.get(labels)
            if have is None:
                mine.points[labels] = value
            elif isinstance(have, HistogramPoint) and isinstance(value, HistogramPoint):
                if have.bounds == value.bounds:
                    mine.points[labels] = HistogramPoint(
                        have.bounds,
                        tuple(a + b for a, b in zip(have.counts, value.counts, strict=True)),
                        have.sum + value.sum,
                        have.count + value.count,
                    )
            elif not isinstance(have, HistogramPoint) and not isinstance(value, HistogramPoint):
                mine.points[labels] = have + value


class _ProcessFiles:
    """One file per process in the directory the workers share; reads the sum of all."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._pid = -1
        self._path = ""

    def own_path(self) -> str:
        pid = os.getpid()
        if pid != self._pid:  # a forked worker writes its own file, never its parent's
            self._pid = pid
            self._path = os.path.join(self.directory, f"obs-{pid}-{secrets.token_hex(4)}.json")
        return self._path

    def write(self, snapshot: Snapshot) -> None:
        path = self.own_path()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_dump(snapshot))
        os.replace(tmp, path)

    def merged(self, own: Snapshot) -> Snapshot:
        total: Snapshot = {}
        _merge(total, own, gauges=True)
        mine = os.path.basename(self.own_path())
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json") or name == mine:
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    pid, snap = _load(f.read())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            _merge(total, snap, gauges=_alive(pid))
        return total


# -- the collector ---------------------------------------------------------------------------------
class ObsCollector:
    """A ``prometheus_client`` collector yielding every metric of the core registry.

    ``multiprocess_dir``: also sum the values other processes wrote there.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot] = registry.snapshot,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.files = _ProcessFiles(multiprocess_dir) if multiprocess_dir else None

    def collect(self) -> Iterator[Metric]:
        """Families for the current values (called on each scrape)."""
        snap = self.snapshot()
        if self.files is not None:
            snap = self.files.merged(snap)
        for name in sorted(snap):
            family = _family(snap[name])
            if family is not None:
                yield family

    def write(self) -> None:
        """Publish this process's values to the shared directory (multiprocess mode)."""
        if self.files is not None:
            self.files.write(self.snapshot())


def _family(m: MetricSnapshot) -> Metric | None:
    name, factor = prometheus_name(m.name, m.unit, m.kind)
    labels = [_label(n) for n in m.label_names]
    doc = m.description or m.name
    if m.kind == "histogram":
        hist = HistogramMetricFamily(name, doc, labels=labels)
        for values, point in m.points.items():
            if not isinstance(point, HistogramPoint):
                continue
            buckets: list[tuple[str, float]] = []
            seen = 0
            for bound, n in zip(point.bounds, point.counts, strict=False):
                seen += n
                buckets.append((floatToGoString(float(f"{bound * factor:.12g}")), seen))  # type: ignore[no-untyped-call]
            buckets.append(("+Inf", point.count))
            hist.add_metric(list(values), buckets, point.sum * factor)
        return hist
    family: CounterMetricFamily | GaugeMetricFamily
    if m.kind == "counter":
        family = CounterMetricFamily(name, doc, labels=labels)
    else:
        family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in m.points.items():
        if not isinstance(value, HistogramPoint):
            family.add_metric(list(values), value * factor)
    return family


def _registry(multiprocess_dir: str | None) -> tuple[CollectorRegistry, ObsCollector]:
    collector = ObsCollector(multiprocess_dir=multiprocess_dir)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg, collector


def metrics_app(multiprocess_dir: str | None = None) -> Callable[..., Any]:
    """Return an ASGI app answering Prometheus scrapes (mount it at ``/metrics``)."""
    directory = multiprocess_dir or os.environ.get("OBS_PROMETHEUS_MULTIPROC_DIR") or None
    reg, _ = _registry(directory)
    return make_asgi_app(reg)


class PrometheusExporter:
    """Expose the metrics core to Prometheus; optionally serve them on a port of their own.

    ``port``/``addr``: start ``prometheus_client``'s HTTP server there (``addr`` defaults to all
    interfaces, as Prometheus scrapes from another host; in multiprocess mode the first worker to
    bind serves everyone's sum and the others skip it). ``multiprocess_dir``: see the module
    docstring; values are written at most every ``write_interval_s`` and at flush and shutdown.
    Records themselves are not exported: metrics count every span, sampled or not.
    """

    name = "prometheus"

    def __init__(
        self,
        port: int | None = None,
        *,
        addr: str = "0.0.0.0",
        multiprocess_dir: str | None = None,
        write_interval_s: float = 1.0,
    ) -> None:
        directory = multiprocess_dir or os.environ.get("OBS_PROMETHEUS_MULTIPROC_DIR") or None
        self.registry, self.collector = _registry(directory)
        self.write_interval_s = write_interval_s
        self._written = 0.0
        self._server: Any = None
        self.port: int | None = None
        if port is not None:
            try:
                self._server, _thread = start_http_server(port, addr, self.registry)
                self.port = self._server.server_port
            except OSError as exc:
                if directory is None:
                    raise
                _log.info(
                    "obs-middleware: metrics port %s served by another worker (%s)", port, exc
                )

    def export(self, records: Sequence[Record]) -> None:
        """Publish this process's values when due (multiprocess mode); records are not needed."""
        now = time.monotonic()
        if now - self._written >= self.write_interval_s:
            self._written = now
            self.collector.write()

    def flush(self) -> None:
        """Publish this process's values now (multiprocess mode)."""
        self._written = time.monotonic()
        self.collector.write()

    def shutdown(self) -> None:
        """Publish the final values and stop the port's server."""
        self.flush()
        server, self._server = self._server, None
        if server is not None:
            # ``shutdown`` waits for the serving loop's next poll: not on the export thread.
            threading.Thread(target=_stop_server, args=(server,), daemon=True).start()

    def after_fork(self) -> None:
        """In a forked child: the parent serves the port (its thread is not in the child).

        Only the child's copy of the listening socket is closed, so the port is not held once the
        parent lets it go; in multiprocess mode the child writes its own values file.
        """
        server, self._server = self._server, None
        self._written = 0.0
        if server is not None:
            with contextlib.suppress(OSError):
                server.socket.close()


def _stop_server(server: Any) -> None:
    server.shutdown()
    with contextlib.suppress(OSError):
        server.server_close()


def from_spec(arg: str) -> PrometheusExporter:
    """``prometheus``, ``prometheus:PORT`` or ``prometheus:ADDR:PORT``."""
    if not arg:
        return PrometheusExporter()
    addr, _, port = arg.rpartition(":")
    if addr:
        return PrometheusExporter(int(port), addr=addr.strip("[]"))
    return PrometheusExporter(int(port))
