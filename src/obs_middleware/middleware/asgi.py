"""Pure ASGI middleware: one server span per HTTP request (never ``BaseHTTPMiddleware``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import _setup
from .._core import runtime as _runtime
from .._core import span as _span
from .._core.config import HttpOptions
from .._core.context import parse_trace_fields, parse_traceparent, valid_request_id
from .._core.http import SERVED, UNTRACED, other_method
from .._core.internal import internal_error
from .._core.metrics import http_active
from ._excluded import run_excluded
from ._http import captured_headers, finish_request
from ._routes import route_template

__all__ = ["ObsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ObsMiddleware:
    """Trace every HTTP request: ``app.add_middleware(ObsMiddleware)`` (Starlette, FastAPI).

    With ``obs.instrument_all()`` (its Starlette integration) the middleware added so runs outside
    Starlette's error handling, and the 500 responses that builds carry the correlation id too;
    without it, wrap the app instead (``app = ObsMiddleware(app)``) for the same.

    The span is named ``METHOD <route template>`` once routing has run and records method, route,
    status, request/response body sizes and duration to the last body chunk; the correlation id
    (incoming ``X-Request-ID`` if valid, else the trace id) is echoed on the response; a W3C
    ``traceparent`` continues the caller's trace. Exceptions are recorded (status 500) and
    re-raised. Websocket scopes pass through; on lifespan shutdown the pipeline is flushed. Nested
    in another ``ObsMiddleware`` (``obs run`` inserted one and the app added its own), the inner
    one passes every scope through: one span per request. No
    client IP, query string or credential header is recorded; ``url.path`` is bounded and
    scrubbed of secrets; a method outside ``HttpOptions.known_methods`` is recorded as ``_OTHER``.
    ``options`` overrides the configured ``HttpOptions`` for this app. Cost per request:
    BENCHMARKS.md (W3).
    """

    def __init__(self, app: ASGIApp, *, options: HttpOptions | None = None) -> None:
        self.app = app
        self.options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if SERVED in scope:  # an outer ObsMiddleware serves it (``obs run`` and the app's own)
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "lifespan":  # (a nested one flushes again: harmless, unmarked)
                await self.app(scope, receive, _flush_on_shutdown(send))
            else:
                await self.app(scope, receive, send)
            return
        scope[SERVED] = True
        try:
            options = self.options or _setup.current_config().http
            path = scope["path"]
            excluded = path in options.exclude_paths
            if _runtime.probe_wanted:  # once per event loop: its delay probe (_core/runtime.py)
                _runtime.watch_loop()
        except Exception:
            internal_error("asgi request start")
            await self.app(scope, receive, send)
            return
        if excluded:  # what it starts goes with it, unexported (_excluded.py); the app runs once
            await run_excluded(self.app, scope, receive, send)
            return
        span = None
        try:
            raw = scope["headers"]
            headers = dict(raw)
            method = scope["method"]
            traceparent = headers.get(b"traceparent")
            if traceparent is None:
                remote = None
            elif len(headers) == len(raw):  # no field repeated: the one-pass usual case
                remote = parse_traceparent(traceparent, headers.get(b"tracestate"))
            else:  # a repeated traceparent is invalid; repeated tracestates are combined
                remote = parse_trace_fields(raw)
            length = headers.get(b"content-length")
            attrs: dict[str, Any] = {"url.path": path}
            if method not in options.known_method_set:
                method = other_method(method, attrs)
            span = _span.Span(method, attrs, "server", remote).start()
            rid_name = options.request_id_header_bytes
            incoming = headers.get(rid_name)
            local = span.local
            request_id = incoming and valid_request_id(incoming)
            if not request_id:  # the trace id, hexed once for the trace (``Span.trace_hex``)
                request_id = local.trace_hex = span.trace_id.to_bytes(16, "big").hex()
            local.request_id = request_id
            if options.capture_headers:
                span.attrs.update(
                    captured_headers(options, lambda n: _latin1(headers.get(n.encode())))
                )
            rid_header = (rid_name, request_id.encode())
            active = http_active.enter((method,))
        except Exception:
            if span is not None:  # never leave a half-made span current
                span.deactivate()
            internal_error("asgi request start")
            await self.app(scope, receive, send)
            return

        status = 0
        response_size = 0
        end_ns = 0

        # A plain function returning send's awaitable: no extra coroutine per message.
        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal status, response_size, end_ns
            kind = message["type"]
            if kind == "http.response.body":
                response_size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    end_ns = _span.clock_ns()
            elif kind == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            return send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            span.record_exception(exc)
            if not status:
                status = 500
            raise
        finally:
            try:
                next(active)
                if UNTRACED in scope:  # an app that asked not to be traced (metrics_app)
                    span.deactivate()
                else:
                    finish_request(
                        span,
                        route_template(scope, span.attrs),
                        status,
                        length,
                        response_size,
                        end_ns,
                        options,
                        scope,
                    )
            except Exception:
                internal_error("asgi request end")


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _flush_on_shutdown(send: Send) -> Send:
    """Forward lifespan messages unchanged; flush telemetry before shutdown completes (within the
    process's one shutdown deadline, see ``_setup``)."""

    async def lifespan_send(message: Message) -> None:
        kind = message["type"]
        try:
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                _runtime.unwatch_loop()
                _setup.server_stopping()
            elif kind == "lifespan.startup.complete":
                _setup.server_started()
                if _runtime.probe_wanted:
                    _runtime.watch_loop()
        except Exception:
            internal_error("lifespan flush")
        await send(message)

    return lifespan_send
