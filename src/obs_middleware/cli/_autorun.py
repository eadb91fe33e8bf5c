"""What ``obs run`` does inside each Python process of the command (its ``sitecustomize`` calls
``start()`` before the app is imported).

- ``obs.configure()`` from the ``OBS_*`` variables, plus a port-less ``PrometheusExporter`` when
  ``/metrics`` is served and none is configured: it writes this process's values to the shared
  ``OBS_PROMETHEUS_MULTIPROC_DIR`` (``obs run`` made one), so any worker answers with the sum.
- ``obs.instrument_all()``: every installed integration patched now or on import.
- Framework hooks, applied when the framework is imported: Starlette and FastAPI apps get
  ``ObsMiddleware`` around their built stack (none added when the app added its own), Litestar
  apps the ``ObsPlugin`` (``instrument_all``'s Litestar row), Flask apps ``ObsWSGIMiddleware``
  around ``wsgi_app``. An app that instruments itself as well still yields one span per request:
  the inner middleware passes requests through (``_core/http.SERVED``).
- ``OBS_METRICS_PATH`` (default ``/metrics``; empty: off) is answered in front of all of that,
  untraced, with the metrics of every worker.

Nothing here may break the app: a failure warns once on stderr and the process runs without
instrumentation (what was patched is undone; a configuration already made stays, exporting
nothing the app does not trace).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import _setup
from .._core.http import UNTRACED
from .._core.internal import internal_error, warn_once
from .._core.patches import Patches
from ..integrations._registry import instrument_all, uninstrument_all
from ..middleware import ObsMiddleware, ObsWSGIMiddleware
from ..middleware.starlette import is_obs_middleware

__all__ = ["start"]

DEFAULT_METRICS_PATH = "/metrics"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_patches = Patches("obs run")
_started = False


# Helper processes of the standard library a server starts (``uvicorn --workers`` spawns a
# resource tracker): they serve nothing, and instrumenting them would only cost their startup.
# (``python [-B ...] -c "from multiprocessing.resource_tracker import main;main(5)"``)
_HELPERS = ("from multiprocessing.resource_tracker ", "from multiprocessing.forkserver ")


def start() -> None:
    """Instrument this process for ``obs run``; never raises (a failure: one line on stderr)."""
    global _started
    if _started or any(arg.startswith(_HELPERS) for arg in sys.orig_argv[1:]):
        return
    _started = True
    try:
        _start()
    except Exception as exc:
        _patches.undo()
        with contextlib.suppress(Exception):  # already failing: the warning below is what matters
            uninstrument_all()
        sys.stderr.write(
            f"obs run: instrumentation failed in process {os.getpid()} "
            f"({type(exc).__name__}: {exc}); the app runs uninstrumented\n"
        )


def _start() -> None:
    path = _metrics_path()
    config = _setup.build_config()
    exporters = list(config.exporters)
    served = None
    if path:
        served = _metrics_exporter(exporters, path)
    _setup.configure(exporters=exporters or "none")  # an empty list would mean the default
    if served is not None:
        _patches.wrap("obs_middleware._setup", "activate", _reconfigured)
    instrument_all()
    front = _Fronts(path, served.registry) if served is not None else None
    _hook_frameworks(front)


def _reconfigured(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """The app calls ``obs.configure()`` itself: its exporters replace ours, and this process's
    metrics no longer reach the other workers' ``/metrics``. Said once; the app's choice holds."""
    warn_once(
        "obs run configure",
        "the app's own obs.configure() replaced the configuration obs run made from the OBS_* "
        "variables: /metrics of the other workers no longer includes this one's values; "
        "configure through OBS_* variables under obs run",
    )
    return wrapped(*args, **kwargs)


def _metrics_path() -> str:
    raw = os.environ.get("OBS_METRICS_PATH")
    path = DEFAULT_METRICS_PATH if raw is None else raw.strip()
    if path and not path.startswith("/"):
        sys.stderr.write(f"obs run: OBS_METRICS_PATH={raw!r} is not a path: metrics not served\n")
        return ""
    return path


def _metrics_exporter(exporters: list[Any], path: str) -> Any:
    """The Prometheus exporter whose registry ``path`` serves (added when none is configured);
    None when ``prometheus_client`` is missing (a warning if the path was asked for)."""
    if importlib.util.find_spec("prometheus_client") is None:
        if "OBS_METRICS_PATH" in os.environ:
            sys.stderr.write(
                f"obs run: OBS_METRICS_PATH={path} needs prometheus-client, not installed: "
                "pip install 'obs-middleware[prometheus]'\n"
            )
        return None
    from ..exporters.prometheus import PrometheusExporter  # noqa: PLC0415 - optional

    for exporter in exporters:
        if isinstance(exporter, PrometheusExporter):
            return exporter
    exporter = PrometheusExporter()  # no port: served at ``path`` by the app's middleware
    exporters.append(exporter)
    return exporter


class _Fronts:
    """The metrics route set in front of every inserted middleware (ASGI and WSGI flavours)."""

    def __init__(self, path: str, registry: Any) -> None:
        from prometheus_client import make_asgi_app, make_wsgi_app  # noqa: PLC0415

        from ..exporters.prometheus import MetricsApp  # noqa: PLC0415

        self.path = path
        self.asgi = MetricsApp(make_asgi_app(registry))  # marks its requests untraced
        self.wsgi = _untraced_wsgi(make_wsgi_app(registry))

    def around(self, app: ASGIApp) -> ASGIApp:
        return app if isinstance(app, _MetricsFront) else _MetricsFront(app, self)


def _untraced_wsgi(app: Callable[..., Any]) -> Callable[..., Any]:
    def metrics(environ: dict[str, Any], start_response: Any) -> Any:
        environ[UNTRACED] = True  # an ObsWSGIMiddleware the app put around itself skips it
        return app(environ, start_response)

    return metrics


class _MetricsFront:
    """Answer ``OBS_METRICS_PATH`` with the metrics, pass everything else to the app."""

    __slots__ = ("app", "metrics", "path")

    def __init__(self, app: ASGIApp, fronts: _Fronts) -> None:
        self.app = app
        self.metrics = fronts.asgi
        self.path = fronts.path

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.metrics(scope, receive, send)  # type: ignore[arg-type]
        else:
            await self.app(scope, receive, send)


# -- framework hooks -------------------------------------------------------------------------------
def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _hook_frameworks(front: _Fronts | None) -> None:
    if _installed("starlette"):
        wrapper = _starlette_stack(front)
        _patches.wrap("starlette.applications", "Starlette.build_middleware_stack", wrapper)
        if _installed("fastapi"):  # it builds its stack without Starlette's method
            _patches.wrap("fastapi.applications", "FastAPI.build_middleware_stack", wrapper)
    if front is not None and _installed("litestar"):  # its ObsPlugin: instrument_all()
        _patches.wrap("litestar.app", "Litestar._create_asgi_handler", _litestar_handler(front))
    if _installed("flask"):
        _patches.wrap("flask.app", "Flask.__init__", _flask_init)
        if front is not None:
            _patches.wrap("flask.app", "Flask.__call__", _flask_call(front))


def _starlette_stack(front: _Fronts | None) -> Callable[..., Any]:
    def build(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        app = wrapped(*args, **kwargs)
        try:
            if isinstance(app, _MetricsFront):  # built through a second hooked method
                return app
            # The app's own ObsMiddleware (moved outermost by instrument_all) keeps its options.
            if not isinstance(app, ObsMiddleware) and not any(
                is_obs_middleware(m) for m in instance.user_middleware
            ):
                app = ObsMiddleware(app)
            return app if front is None else front.around(app)
        except Exception:
            internal_error("obs run: starlette app", "app")
            return app

    return build


def _litestar_handler(front: _Fronts) -> Callable[..., Any]:
    def create(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        handler = wrapped(*args, **kwargs)
        try:
            return front.around(handler)
        except Exception:
            internal_error("obs run: litestar app", "app")
            return handler

    return create


def _flask_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    try:
        instance.wsgi_app = ObsWSGIMiddleware(instance.wsgi_app)
    except Exception:
        internal_error("obs run: flask app", "app")


def _flask_call(front: _Fronts) -> Callable[..., Any]:
    path, metrics = front.path, front.wsgi

    def call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # Before wsgi_app and whatever wraps it: scrapes are never traced.
        environ = args[0] if args else kwargs.get("environ")
        if isinstance(environ, dict) and environ.get("PATH_INFO") == path:
            return metrics(*args, **kwargs)
        return wrapped(*args, **kwargs)

    return call
