"""Litestar: ``ObsPlugin`` traces every request and describes each route handler as a procedure.

``Litestar(route_handlers=[...], plugins=[ObsPlugin()])`` puts ``ObsMiddleware`` around the
whole app (outside Litestar's router and exception handling, so 404s, 405s and the routing cost
are included) and treats route handlers as tRPC-style procedures. The request span gets
``procedure.name`` (the handler's operation id, else its qualified name), ``procedure.router``
(the path of the routers it is registered under), ``procedure.input`` / ``procedure.output``
(the ``data`` and return type names) next to ``http.route``. Metrics per procedure:
``procedure.calls``, ``procedure.duration`` (ms, to the last response byte) and
``procedure.errors`` (by status); calls and durations are the ``http.server.duration``
observations of the procedure's method and route, regrouped when metrics are read. A request
that fails validation gets status ``invalid_input`` and ``procedure.invalid_fields`` (field paths
such as ``items.0.price``, never values); an unhandled exception is recorded with its type.
Resolving dependencies and running guards that take at least ``slow_ms`` appear as child spans
``litestar.dependencies`` / ``litestar.guards``.

``obs.instrument_all()`` adds the plugin to every Litestar app created afterwards; a Litestar
app wrapped in ``ObsMiddleware`` by hand gets the same procedure attributes once this module is
imported. Cost per request beyond the middleware's: two dictionary lookups and an attribute
update (the middleware calls in after routing: no extra ASGI layer).

The plugin is ``ObsMiddleware`` fitted to Litestar, so it lives with the middleware, not with the
integrations (which never import the middleware). ``instrument_all()`` still treats it as one:
the registry's ``litestar`` row holds its supported range and calls ``patch()``/``unpatch()`` here.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple

from litestar.exceptions import (
    ClientException,
    HTTPException,
    SerializationException,
    ValidationException,
)
from litestar.plugins import InitPlugin, ReceiveRoutePlugin

from .. import _setup
from .._core import span as _span
from .._core.config import HttpOptions
from .._core.internal import internal_error
from .._core.metrics import http_duration, registry
from .._core.patches import Patches
from . import _routes
from .asgi import ObsMiddleware

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.routes import BaseRoute

__all__ = ["ObsPlugin", "patch", "unpatch"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# (method, route template) -> (procedure name,); how procedure metrics regroup HTTP ones
_by_route: dict[tuple[str, str], tuple[str]] = {}
procedure_duration = registry.histogram_view(
    "procedure.duration",
    ("procedure",),
    http_duration,
    lambda labels: _by_route.get((labels[0], labels[1])),
    "Duration of procedure (route handler) calls, to the last response byte.",
)
registry.count_view("procedure.calls", procedure_duration, "Procedure (route handler) calls.")
procedure_errors = registry.counter(
    "procedure.errors",
    ("procedure", "status"),
    "1",
    "Failed procedure calls, by status (error, invalid_input).",
)

_EXCEPTION = "obs.exception"  # scope key: the exception Litestar turned into a response
_MAX_FIELDS = 20
_MAX_CACHED = 10_000

_hooks = Patches("litestar")  # what every ObsPlugin needs; installed on first use
_auto = Patches("litestar")  # instrument_all(): the plugin added to new apps


class _Procedure(NamedTuple):
    """What is known of one route handler (computed once per handler)."""

    handler: object
    labels: tuple[str]  # (procedure name,): the procedure metrics' labels
    attrs: dict[str, str]  # span attributes
    templates: set[str]  # the route templates it was seen under
    methods: tuple[str, ...]  # its HTTP methods


_procedures: dict[int, _Procedure] = {}  # id(route handler) -> what is known of it
# id(route handler or its kwargs model) -> (that object, slow threshold in ns of its app's plugin)
_slow: dict[int, tuple[object, int]] = {}


class ObsPlugin(InitPlugin, ReceiveRoutePlugin):
    """Trace a Litestar app: ``Litestar(..., plugins=[ObsPlugin()])``.

    ``slow_ms``: dependency resolution or guards taking at least this long become child spans
    (None: never). ``http``: ``HttpOptions`` for this app instead of the configured ones.
    """

    __slots__ = ("http", "slow_ns")

    def __init__(self, *, slow_ms: float | None = 5.0, http: HttpOptions | None = None) -> None:
        self.slow_ns = None if slow_ms is None else int(slow_ms * 1_000_000)
        self.http = http

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Register the exception hook and the shutdown flush; arm the app-wide middleware."""
        _install_hooks()
        app_config.after_exception.append(_remember_exception)  # type: ignore[arg-type]
        app_config.on_shutdown.append(_flush)
        return app_config

    def receive_route(self, route: BaseRoute) -> None:
        """Remember this app's slow threshold for the route's handlers (guards, dependencies)."""
        slow_ns = self.slow_ns
        if slow_ns is None:
            return
        handler_map = getattr(route, "route_handler_map", None)
        steps: list[object] = []
        if isinstance(handler_map, dict):
            for handler, kwargs_model in handler_map.values():
                steps += (handler, kwargs_model)
        elif (handler := getattr(route, "route_handler", None)) is not None:
            steps += (handler, getattr(route, "handler_parameter_model", None))
        for step in steps:
            if step is not None and len(_slow) < _MAX_CACHED:
                _slow[id(step)] = (step, slow_ns)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Return Litestar's ASGI handler wrapped in the middleware."""
        return ObsMiddleware(app, options=self.http)


def _record(scope: Scope, attrs: dict[str, Any]) -> None:
    """Record the request's procedure (the middleware calls this after Litestar answered)."""
    handler = scope.get("route_handler")
    if handler is None:
        return
    try:
        entry = _procedures.get(id(handler))
        if entry is None or entry.handler is not handler:
            entry = _describe(handler)
        _, labels, described, templates, methods = entry
        attrs |= described
        template = scope["path_template"]
        if template not in templates and len(_by_route) < _MAX_CACHED:
            templates.add(template)  # the procedure metrics' view of this route
            for method in methods:
                _by_route[(method, template)] = labels
        exc = scope.get(_EXCEPTION)
        if exc is not None:
            span = _span.current_span()  # the request span: the middleware ends it after this
            if span is not None:
                _record_failure(span, exc)
                if span.status in ("error", "invalid_input"):
                    procedure_errors.add((labels[0], span.status))
    except Exception:  # never let the request span go unended
        internal_error("litestar procedure")


def _record_failure(span: _span.Span, exc: BaseException) -> None:
    if isinstance(exc, ValidationException) or (
        type(exc) is ClientException and isinstance(exc.__cause__, SerializationException)
    ):
        span.status = "invalid_input"
        span.error_type = type(exc).__qualname__
        fields = _invalid_fields(exc)
        if fields:
            span.attrs["procedure.invalid_fields"] = fields
    elif not isinstance(exc, HTTPException) or exc.status_code >= 500:
        span.record_exception(exc)


def _invalid_fields(exc: BaseException) -> list[str]:
    """Return the failing field paths Litestar reports (its ``extra`` keys), not messages."""
    extra = getattr(exc, "extra", None)
    if not isinstance(extra, list):
        return []
    keys = [m["key"] for m in extra if isinstance(m, dict) and isinstance(m.get("key"), str)]
    return [key[:128] for key in keys[:_MAX_FIELDS]]


def _describe(handler: Any) -> _Procedure:
    """Procedure name and attributes of a route handler, computed once per handler."""
    operation_id = getattr(handler, "operation_id", None)
    if isinstance(operation_id, str):
        name = operation_id
    else:
        fn = getattr(handler, "fn", None)
        qualname = getattr(fn, "__qualname__", None) or handler.handler_name
        name = qualname.rpartition("<locals>.")[2]
    attrs = {
        "procedure.name": name,
        "procedure.router": _router_path(handler),
    }
    signature = getattr(handler, "parsed_fn_signature", None)
    if signature is not None:
        data = signature.parameters.get("data")
        input_name = _type_name(data.annotation) if data is not None else None
        output_name = _type_name(signature.return_type.annotation)
        if input_name:
            attrs["procedure.input"] = input_name
        if output_name:
            attrs["procedure.output"] = output_name
    methods = getattr(handler, "http_methods", None) or ()
    entry = _Procedure(
        handler, (name,), attrs, set(), tuple(sorted(m for m in methods if isinstance(m, str)))
    )
    if len(_procedures) < _MAX_CACHED:
        _procedures[id(handler)] = entry
    return entry


def _router_path(handler: Any) -> str:
    """Join the paths of the routers (and controller) a handler is registered under."""
    layers = getattr(handler, "ownership_layers", ())[:-1]
    parts = [p.strip("/") for layer in layers if isinstance(p := getattr(layer, "path", None), str)]
    return "/" + "/".join(part for part in parts if part)


def _type_name(annotation: Any) -> str | None:
    """``UserOut``, ``list[UserOut]``, ``UserOut | None`` -> a short type name (None: no type)."""
    if annotation is None or annotation is type(None) or annotation is typing.Any:
        return None
    origin = typing.get_origin(annotation)
    if origin is None:
        name = getattr(annotation, "__name__", None)
        return name if isinstance(name, str) else None
    args = [_type_name(a) or "Any" for a in typing.get_args(annotation)]
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(a for a in args if a != "Any") or None
    base = getattr(origin, "__name__", None) or str(origin)
    return f"{base}[{', '.join(args)}]" if args else base


async def _remember_exception(exc: Exception, scope: Scope) -> None:
    """Litestar ``after_exception`` hook: keep the exception for the request span."""
    scope[_EXCEPTION] = exc


def _flush() -> None:
    """Litestar shutdown hook: deliver what is queued (lifespan bypasses the middleware)."""
    try:
        _setup.flush(_setup.current_config().pipeline.shutdown_timeout_s)
    except Exception:
        internal_error("litestar shutdown flush")


# -- class hooks -----------------------------------------------------------------------------
def _create_asgi_handler(
    wrapped: Callable[[], ASGIApp], instance: Any, args: Any, kwargs: Any
) -> ASGIApp:
    handler = wrapped(*args, **kwargs)
    try:
        plugin = next((p for p in instance.plugins.init if isinstance(p, ObsPlugin)), None)
        return handler if plugin is None else plugin.wrap(handler)
    except Exception:
        internal_error("litestar app wrap")
        return handler


def _timed(name: str) -> Callable[..., Any]:
    """Wrap an async method of a handler or kwargs model: a slow call becomes span ``name``."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        entry = _slow.get(id(instance))
        if entry is None or entry[0] is not instance:  # not from an app with the plugin
            return wrapped(*args, **kwargs)
        return _time(name, entry[1], wrapped(*args, **kwargs))

    return wrapper


async def _time(name: str, slow_ns: int, step: Awaitable[Any]) -> Any:
    start = _span.clock_ns()
    failure: BaseException | None = None
    try:
        return await step
    except BaseException as exc:
        failure = exc
        raise
    finally:
        end = _span.clock_ns()
        if end - start >= slow_ns:
            try:
                child = _span.Span(name, {}, "internal").start()
                child.start_ns = start
                if failure is not None:
                    child.record_exception(failure)
                child.end(end)
            except Exception:
                internal_error("litestar slow step")


def _install_hooks() -> None:
    if _hooks:
        return
    _hooks.wrap("litestar.app", "Litestar._create_asgi_handler", _create_asgi_handler)
    _hooks.wrap(
        "litestar._kwargs.kwargs_model",
        "KwargsModel.resolve_dependencies",
        _timed("litestar.dependencies"),
    )
    _hooks.wrap(
        "litestar.handlers.base", "BaseRouteHandler.authorize_connection", _timed("litestar.guards")
    )


def _add_plugin(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    plugins = list(kwargs.get("plugins") or ())
    if not any(isinstance(p, ObsPlugin) for p in plugins):
        kwargs["plugins"] = [*plugins, ObsPlugin()]
    return wrapped(*args, **kwargs)


def patch() -> None:
    """Add ``ObsPlugin`` to every Litestar app created from now on (idempotent)."""
    _install_hooks()
    if not _auto:
        _auto.wrap("litestar.app", "Litestar.__init__", _add_plugin)


def unpatch() -> None:
    """Stop adding the plugin and remove the class hooks (built apps keep their middleware)."""
    _auto.undo()
    _hooks.undo()


_routes.on_path_template(_record)
