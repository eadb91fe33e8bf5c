"""WSGI middleware: the same server span and record as the ASGI one (Flask, Django, any app)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .. import _setup
from .._core import span as _span
from .._core.config import HttpOptions
from .._core.context import parse_traceparent, valid_request_id
from .._core.http import SERVED, UNTRACED, content_length, other_method
from .._core.internal import internal_error
from .._core.metrics import http_active
from ._excluded import end_silence, silence
from ._http import captured_headers, finish_request

__all__ = ["ObsWSGIMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ROUTE_KEY = "obs.route"  # environ key a framework hook fills with the matched route template
_HOOKED = "_obs_signals_connected"  # set on a Flask app whose signals we connected


def _encoded(environ: Environ, key: str) -> bytes | None:
    value = environ.get(key)
    return value.encode("latin-1", "replace") if isinstance(value, str) else None


class ObsWSGIMiddleware:
    """Trace every WSGI request: ``app.wsgi_app = ObsWSGIMiddleware(app.wsgi_app)``.

    Records what ``ObsMiddleware`` records. The route template comes from ``environ["obs.route"]``;
    for a Flask app it is filled from ``request.url_rule`` automatically. The span ends with the
    body's last byte: when the response iterable has yielded ``Content-Length`` bytes, is exhausted,
    fails or is closed, whichever comes first; so streamed bodies are timed to their last chunk, and
    a test client that reads only the first chunk (Flask's) still sees the span end. Nested in
    another ``ObsWSGIMiddleware``, the inner one passes requests through: one span per request.
    """

    def __init__(self, app: WSGIApp, *, options: HttpOptions | None = None) -> None:
        self.app = app
        self.options = options
        _hook_flask(app)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one WSGI request."""
        if SERVED in environ:  # an outer ObsWSGIMiddleware serves it (``obs run`` and the app's)
            return self.app(environ, start_response)
        environ[SERVED] = True
        try:
            options = self.options or _setup.current_config().http
            path = environ.get("PATH_INFO", "")
            excluded = path in options.exclude_paths
        except Exception:
            internal_error("wsgi request start")
            return self.app(environ, start_response)
        if excluded:  # what the app starts goes with it, unexported (_excluded.py)
            token = silence()
            try:
                return self.app(environ, start_response)
            finally:
                end_silence(token)
        span = None
        try:
            method = environ.get("REQUEST_METHOD", "GET")
            remote = parse_traceparent(
                _encoded(environ, "HTTP_TRACEPARENT"), _encoded(environ, "HTTP_TRACESTATE")
            )
            length = environ.get("CONTENT_LENGTH")
            rid_key = "HTTP_" + options.request_id_header.upper().replace("-", "_")
            incoming = valid_request_id(_encoded(environ, rid_key))
            attrs: dict[str, Any] = {"url.path": path}
            if method not in options.known_method_set:
                method = other_method(method, attrs)
            span = _span.Span(method, attrs, "server", remote).start()
            local = span.local
            trace_hex = span.trace_hex
            local.request_id = request_id = incoming or trace_hex
            if options.capture_headers:
                span.attrs.update(
                    captured_headers(
                        options, lambda n: environ.get("HTTP_" + n.upper().replace("-", "_"))
                    )
                )
            active = http_active.enter((method,))
        except Exception:
            if span is not None:  # never leave a half-made span current for the next request
                span.deactivate()
            internal_error("wsgi request start")
            return self.app(environ, start_response)

        state = _Request(span, active, length, options, environ)

        def traced_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            try:
                state.status = int(status[:3])
                for name, value in headers:
                    if name.lower() == "content-length":
                        state.expected = content_length(value)
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
            state.fail(exc)
            raise
        # The server iterates the body after this call returns: the span stays open, current
        # only while the app's iterator runs, so the thread's next request never nests under it.
        span.deactivate()
        return _Body(result, state)


class _Request:
    __slots__ = (
        "active",
        "done",
        "environ",
        "expected",
        "length",
        "options",
        "response_size",
        "span",
        "status",
    )

    def __init__(
        self,
        span: _span.Span,
        active: Iterator[int],
        length: str | None,
        options: HttpOptions,
        environ: Environ,
    ) -> None:
        self.span = span
        self.active = active
        self.length = length  # Content-Length as received
        self.options = options
        self.environ = environ
        self.status = 0
        self.response_size = 0
        self.expected: int | None = None  # the response's Content-Length
        self.done = False

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.span.record_exception(exc)
            self.status = self.status or 500
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            next(self.active)
            if UNTRACED in self.environ:  # an app that asked not to be traced (a metrics scrape)
                return
            route = self.environ.get(ROUTE_KEY)
            finish_request(
                self.span,
                route if isinstance(route, str) else None,
                self.status,
                self.length,
                self.response_size,
                0,
                self.options,
                self.environ,
            )
        except Exception:
            internal_error("wsgi request end")


class _Body:
    """The app's response iterable: counts bytes, makes the server span current while the app's
    iterator runs, and ends the span when the body is complete (``Content-Length`` bytes),
    exhausted, fails or is closed."""

    __slots__ = ("_iterator", "_result", "_state")

    def __init__(self, result: Iterable[bytes], state: _Request) -> None:
        self._result = result
        self._state = state
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        state = self._state
        if self._iterator is None:
            self._iterator = iter(self._result)
        state.span.reactivate()
        try:
            chunk = next(self._iterator)
        except StopIteration:
            state.finish()
            raise
        except BaseException as exc:
            state.fail(exc)
            raise
        finally:
            state.span.deactivate()
        state.response_size += len(chunk)
        expected = state.expected
        if expected is not None and state.response_size >= expected:
            state.finish()  # the whole body: a client need not ask for more to end the span
        return chunk

    def close(self) -> None:
        state = self._state
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            state.fail(exc)
            raise
        finally:
            state.finish()


def _hook_flask(app: Any) -> None:
    """For a Flask app (or its ``wsgi_app``), copy ``request.url_rule`` into the environ."""
    target = getattr(app, "__self__", app)
    flask = sys.modules.get("flask")
    if flask is None or not isinstance(target, flask.Flask) or getattr(target, _HOOKED, False):
        return
    setattr(target, _HOOKED, True)  # a second middleware on the app (obs run): one set of hooks

    def on_exception(sender: Any, exception: BaseException, **_: Any) -> None:
        # Flask turns the exception into a 500 itself: record it on the (current) server span.
        current = _span.current_span()
        if current is not None and current.kind == "server":
            current.record_exception(exception)

    def on_request_started(sender: Any, **_: Any) -> None:
        try:
            request = flask.request
            rule = request.url_rule
            if rule is not None:
                request.environ[ROUTE_KEY] = rule.rule
        except Exception:
            internal_error("flask route hook")

    flask.request_started.connect(on_request_started, sender=target, weak=False)
    flask.got_request_exception.connect(on_exception, sender=target, weak=False)
