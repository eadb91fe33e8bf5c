"""Prometheus: a ``prometheus_client`` collector over the metrics core, served on ``/metrics``.

Names follow Prometheus conventions: dots become underscores, base units with their suffix
(``http.server.duration`` in ms → histogram ``http_server_duration_seconds``, buckets and sum in
seconds), counters end in ``_total`` (``http_server_requests_total``, ``obs_dropped_total``),
gauges as they are. Label names are sanitised the same way (``http.route`` → ``http_route``).

Where metrics are served (each start logs it once at INFO):

- ``metrics_app()``: an ASGI app to route at ``/metrics`` in the application itself
  (``Route("/metrics", metrics_app())``); scrapes are not traced.
- A port of their own: exporter ``"prometheus"`` (port 9464, Prometheus' usual exporter port),
  ``"prometheus:PORT"``, or ``"prometheus:ADDR:PORT"``; ``PrometheusExporter(port=...)`` in code.
  The server binds 127.0.0.1 unless an address is given (``prometheus:0.0.0.0:9464``) or
  ``OBS_PROMETHEUS_HOST`` says otherwise: metrics name routes and models, and a port open to the
  network is a choice to make explicitly. A port that cannot be bound (already in use) never
  fails the application: a warning says which port and what to do, and this process serves none.

Several worker processes (gunicorn, ``uvicorn --workers N``): without a shared directory the
first worker binds the port and serves its own metrics only; the others warn once. Give every
worker the same directory (``PROMETHEUS_MULTIPROC_DIR``, as for ``prometheus_client``'s own
multiprocess mode, or ``OBS_PROMETHEUS_MULTIPROC_DIR``, or ``multiprocess_dir=``) and each one
writes its values there from its export thread (at most every ``write_interval_s``), while the
worker holding the port, or any worker answering through ``metrics_app()``, serves the sum over
all (gauges only from live processes). Another worker takes the port over when its holder exits.
Our files (``obs-<pid>-*.json``) sit beside ``prometheus_client``'s own ``*.db`` files without
mixing; empty the directory when the server starts, as ``prometheus_client`` asks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, make_asgi_app, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from .._core.http import UNTRACED
from .._core.internal import warn_once
from .._core.metrics import HistogramPoint, MetricSnapshot, registry
from .._json import valid_text
from .._record import Record
from ._process_names import process_families
from ._prometheus_files import ProcessFiles, Snapshot

__all__ = ["MetricsApp", "ObsCollector", "PrometheusExporter", "metrics_app", "prometheus_name"]

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


# -- the collector ---------------------------------------------------------------------------------
class ObsCollector:
    """A ``prometheus_client`` collector yielding every metric of the core registry.

    ``multiprocess_dir``: also sum the values other processes wrote there. ``process_names``:
    also serve the usual ``process_*`` names (``_process_names.py``).
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot] = registry.snapshot,
        multiprocess_dir: str | None = None,
        process_names: bool = False,
    ) -> None:
        self.snapshot = snapshot
        self.files = ProcessFiles(multiprocess_dir) if multiprocess_dir else None
        self.process_names = process_names

    def collect(self) -> Iterator[Metric]:
        """Families for the current values (called on each scrape)."""
        snap = self.snapshot()
        if self.files is not None:
            snap = self.files.merged(snap)
        for name in sorted(snap):
            family = _family(snap[name])
            if family is not None:
                yield family
        if self.process_names:
            yield from process_families(snap)

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
            hist.add_metric(_values(values), buckets, point.sum * factor)
        return hist
    family: CounterMetricFamily | GaugeMetricFamily
    if m.kind == "counter":
        family = CounterMetricFamily(name, doc, labels=labels)
    else:
        family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in m.points.items():
        if not isinstance(value, HistogramPoint):
            family.add_metric(_values(values), value * factor)
    return family


def _values(values: Sequence[Any]) -> list[Any]:
    # Label values from outside (a provider's model name) may hold lone surrogates: the
    # exposition encodes UTF-8 strictly, and one would fail every scrape.
    return [valid_text(v) if isinstance(v, str) else v for v in values]


def _registry(multiprocess_dir: str | None) -> tuple[CollectorRegistry, ObsCollector]:
    collector = ObsCollector(multiprocess_dir=multiprocess_dir, process_names=True)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg, collector


def _directory(multiprocess_dir: str | None) -> str | None:
    return (
        multiprocess_dir
        or os.environ.get("OBS_PROMETHEUS_MULTIPROC_DIR")
        or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        or None
    )


class MetricsApp:
    """The ASGI app ``metrics_app()`` returns: answers every HTTP request with a scrape.

    A class, not a function, so that Starlette's ``Route``/``add_route`` call it as an ASGI app
    (an exact ``/metrics`` route, where a ``Mount`` would redirect ``/metrics`` to
    ``/metrics/``); it marks its request untraced, so ``ObsMiddleware`` records no span and no
    metrics for scrapes.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer one scrape (only HTTP scopes reach it from a route)."""
        scope[UNTRACED] = True
        await self._app(scope, receive, send)


def metrics_app(multiprocess_dir: str | None = None) -> MetricsApp:
    """Return an ASGI app answering Prometheus scrapes, to route at ``/metrics``.

    Starlette and FastAPI: ``Route("/metrics", metrics_app())`` among the app's routes, or
    ``app.add_route("/metrics", metrics_app())`` (a ``Mount`` answers ``/metrics`` with a redirect
    to ``/metrics/``); Litestar: ``asgi("/metrics", copy_scope=False)(metrics_app())`` among the
    route handlers. Scrapes are not traced. ``multiprocess_dir``: see the module docstring.
    """
    directory = _directory(multiprocess_dir)
    reg, _ = _registry(directory)
    _log.info(
        "obs-middleware: Prometheus metrics of %s served where metrics_app() is mounted",
        f"every process writing to {directory}" if directory else "this process",
    )
    return MetricsApp(make_asgi_app(reg))


DEFAULT_PORT = 9464
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_REBIND_S = 5.0  # how often a worker without the shared port tries to take it over


class PrometheusExporter:
    """Expose the metrics core to Prometheus; optionally serve them on a port of their own.

    ``port``: start ``prometheus_client``'s HTTP server there (0: any free port; None: none,
    mount ``metrics_app()`` instead). ``addr``: the address to bind, by default
    ``OBS_PROMETHEUS_HOST`` or 127.0.0.1. A port that cannot be bound is warned about, never
    raised: ``url`` is then None and ``error`` says why. ``multiprocess_dir``: see the module
    docstring; values are written at most every ``write_interval_s`` (a burst's last values
    once that is due), and at flush and shutdown.
    Records themselves are not exported: metrics count every span, sampled or not.
    """

    name = "prometheus"

    def __init__(
        self,
        port: int | None = None,
        *,
        addr: str | None = None,
        multiprocess_dir: str | None = None,
        write_interval_s: float = 1.0,
    ) -> None:
        directory = _directory(multiprocess_dir)
        self.registry, self.collector = _registry(directory)
        self.directory = directory
        self.write_interval_s = write_interval_s
        self.addr = addr or os.environ.get("OBS_PROMETHEUS_HOST") or "127.0.0.1"
        self.wanted_port = port
        self.port: int | None = None
        self.url: str | None = None  # what this process serves, when it serves
        self.error: str | None = None  # why it does not
        self._written = 0.0
        self._server: Any = None
        self._server_pid = 0
        self._next_bind = 0.0
        self._lock = threading.Lock()  # one writer of this process's file at a time
        self._timer: threading.Timer | None = None
        self._pid = os.getpid()
        self._closed = False
        if port is None:
            _log.info(
                "obs-middleware: Prometheus exporter without a port: metrics are served only "
                "where metrics_app() is mounted"
            )
        else:
            self._bind(first=True)

    def _bind(self, *, first: bool) -> None:
        port, addr = self.wanted_port, self.addr
        assert port is not None
        self._next_bind = time.monotonic() + _REBIND_S
        try:
            server, _thread = start_http_server(port, addr, self.registry)
        except OSError as exc:
            self.error = f"{addr}:{port}: {exc.strerror or exc}"
            if first:
                self._not_served(exc)
            return
        self._server, self._server_pid = server, os.getpid()
        self.port = server.server_port
        host = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{host}:{self.port}/metrics"
        self.error = None
        whose = f"every process writing to {self.directory}" if self.directory else "this process"
        exposed = "" if addr in _LOOPBACK else " (reachable from the network)"
        _log.info(
            "obs-middleware: Prometheus metrics of %s served at %s%s", whose, self.url, exposed
        )

    def _not_served(self, exc: OSError) -> None:
        port, addr = self.wanted_port, self.addr
        if exc.errno != errno.EADDRINUSE:
            warn_once(
                f"prometheus {addr}:{port}",
                "cannot serve Prometheus metrics on %s:%s (%s): this process "
                "serves none; choose another address or port (prometheus:ADDR:PORT)",
                addr,
                port,
                exc,
            )
        elif self.directory:
            _log.info(
                "obs-middleware: Prometheus port %s:%s is held by another process (a worker "
                "serving the sum over %s); this process writes its values there and takes the "
                "port over if it frees",
                addr,
                port,
                self.directory,
            )
        else:
            warn_once(
                f"prometheus {addr}:{port}",
                "Prometheus port %s:%s is already in use: this process serves no "
                "metrics. If another worker of this application holds it, only that worker's "
                "metrics are served: set PROMETHEUS_MULTIPROC_DIR (or OBS_PROMETHEUS_MULTIPROC_DIR)"
                " to a directory shared by every worker and emptied at start, to serve the sum "
                "of all. Otherwise choose a free port (prometheus:PORT).",
                addr,
                port,
            )

    def _tick(self) -> None:
        # A worker without the shared port takes it over once its holder has exited.
        if (
            self._server is None
            and not self._closed
            and self.directory
            and self.wanted_port
            and time.monotonic() >= self._next_bind
        ):
            self._bind(first=False)

    def export(self, records: Sequence[Record]) -> None:
        """Publish this process's values when due (multiprocess mode); records are not needed."""
        if self.directory is None:
            return
        self._own()
        wait = self._written + self.write_interval_s - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._timer is None:  # the last values of a burst are written once it is due
            timer = self._timer = threading.Timer(wait, self._late_write)
            timer.daemon = True
            timer.start()

    def _late_write(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            self.flush()
        except Exception:
            warn_once(
                f"prometheus write:{self.directory}",
                "Prometheus: cannot write this process's values to %s",
                self.directory,
            )

    def _own(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's timer and lock state are not ours
            self._pid = os.getpid()
            self._timer = None
            self._lock = threading.Lock()

    def flush(self) -> None:
        """Publish this process's values now (multiprocess mode)."""
        self._own()
        with self._lock:
            self._written = time.monotonic()
            self.collector.write()
            self._tick()

    def shutdown(self) -> None:
        """Publish the final values and stop the port's server."""
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self._lock:
            self.collector.write()
        server, self._server = self._server, None
        self.url = None
        if server is None:
            return
        if self._server_pid != os.getpid():  # a forked child: the serving thread is the parent's
            with contextlib.suppress(OSError):
                server.socket.close()
            return
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
    """``prometheus`` (port 9464), ``prometheus:PORT`` or ``prometheus:ADDR:PORT``."""
    if not arg:
        return PrometheusExporter(DEFAULT_PORT)
    addr, _, port = arg.rpartition(":")
    return PrometheusExporter(int(port), addr=addr.strip("[]") or None)
