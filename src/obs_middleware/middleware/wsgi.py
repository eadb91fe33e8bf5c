"""WSGI middleware: the same server span and record as the ASGI one (Flask, Django, any WSGI app)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .. import _setup
from .._core import span as _span
from .._core.config import HttpOptions
from .._core.context import parse_traceparent, valid_request_id
from .._core.metrics import http_active
from ._http import captured_headers, finish_request, internal_error

__all__ = ["ObsWSGIMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ROUTE_KEY = "obs.route"  # environ key a framework hook fills with the matched route template


def _encoded(environ: Environ, key: str) -> bytes | None:
    value = environ.get(key)
    return value.encode("latin-1", "replace") if isinstance(value, str) else None


class ObsWSGIMiddleware:
    """Trace every WSGI request: ``app.wsgi_app = ObsWSGIMiddleware(app.wsgi_app)``.

    Records what ``ObsMiddleware`` records. The route template comes from ``environ["obs.route"]``;
    for a Flask app it is filled from ``request.url_rule`` automatically. The span ends when the
    server closes the response iterable, so streamed bodies are timed to their last chunk.
    """

    def __init__(self, app: WSGIApp, *, options: HttpOptions | None = None) -> None:
        self.app = app
        self.options = options
        _hook_flask(app)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            options = self.options or (_setup._config or _setup.current_config()).http
            path = environ.get("PATH_INFO", "")
            if path in options.exclude_paths:
                return self.app(environ, start_response)
            method = environ.get("REQUEST_METHOD", "GET")
            remote = parse_traceparent(
                _encoded(environ, "HTTP_TRACEPARENT"), _encoded(environ, "HTTP_TRACESTATE")
            )
            span = _span.Span(method, {"url.path": path}, "server", remote).start()
            rid_key = "HTTP_" + options.request_id_header.upper().replace("-", "_")
            request_id = valid_request_id(_encoded(environ, rid_key)) or format(
                span.trace_id, "032x"
            )
            span.local.request_id = request_id
            if options.capture_headers:
                span.attrs.update(
                    captured_headers(
                        options, lambda n: environ.get("HTTP_" + n.upper().replace("-", "_"))
                    )
                )
            length = environ.get("CONTENT_LENGTH")
            request_size = int(length) if length and length.isdigit() else None
            http_active.enter((method,))
        except Exception:
            internal_error("wsgi request start")
            return self.app(environ, start_response)

        state = _Request(span, method, request_size, options, environ)

        def traced_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            try:
                state.status = int(status[:3])
                headers = [*headers, (options.request_id_header, request_id)]
            except Exception:
                internal_error("wsgi start_response")
            write = start_response(status, headers, exc_info)

            def counting_write(data: bytes) -> object:
                state.response_size += len(data)
                return write(data)

            return counting_write

        try:
            result = self.app(environ, traced_start_response)
        except BaseException as exc:
            span.record_exception(exc)
            state.status = state.status or 500
            state.finish()
            raise
        # The body is iterated by the server, outside this call: keep the span open but not
        # current, so the thread's next request does not nest under it.
        span.deactivate()
        return _Body(result, state)


class _Request:
    __slots__ = ("environ", "method", "options", "request_size", "response_size", "span", "status")

    def __init__(
        self,
        span: _span.Span,
        method: str,
        request_size: int | None,
        options: HttpOptions,
        environ: Environ,
    ) -> None:
        self.span = span
        self.method = method
        self.request_size = request_size
        self.options = options
        self.environ = environ
        self.status = 0
        self.response_size = 0

    def finish(self) -> None:
        try:
            route = self.environ.get(ROUTE_KEY)
            finish_request(
                self.span,
                self.method,
                route if isinstance(route, str) else None,
                self.status,
                self.request_size,
                self.response_size,
                0,
                self.options,
                self.environ,
            )
        except Exception:
            internal_error("wsgi request end")


class _Body:
    """The app's response iterable, counting bytes and ending the span on ``close()``."""

    __slots__ = ("_done", "_result", "_state")

    def __init__(self, result: Iterable[bytes], state: _Request) -> None:
        self._result = result
        self._state = state
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        state = self._state
        try:
            for chunk in self._result:
                state.response_size += len(chunk)
                yield chunk
        except BaseException as exc:
            state.span.record_exception(exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException:
            self._state.span.record_exception(sys.exc_info()[1])  # type: ignore[arg-type]
            raise
        finally:
            if not self._done:
                self._done = True
                self._state.finish()


def _hook_flask(app: Any) -> None:
    """For a Flask app (or its ``wsgi_app``), copy ``request.url_rule`` into the environ."""
    target = getattr(app, "__self__", app)
    flask = sys.modules.get("flask")
    if flask is None or not isinstance(target, flask.Flask):
        return

    def on_request_started(sender: Any, **_: Any) -> None:
        try:
            request = flask.request
            rule = request.url_rule
            if rule is not None:
                request.environ[ROUTE_KEY] = rule.rule
        except Exception:
            internal_error("flask route hook")

    flask.request_started.connect(on_request_started, sender=target, weak=False)
