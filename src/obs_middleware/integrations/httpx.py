"""httpx: a ``client`` span per ``Client.send`` / ``AsyncClient.send`` (every request method).

What is recorded and when ``traceparent`` is sent: ``_outbound``. A request with ``stream=True``
ends its span when the response headers arrive (the body is the caller's to read); otherwise at
the end of the body. Requests of our own exporters are not traced.
"""

from __future__ import annotations

from typing import Any

from .._core.http import content_length
from .._core.internal import internal_error
from .._core.patches import Patches
from ._outbound import ClientCall, suppressed
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("httpx").requirement

_patches = Patches("httpx")


def _start(request: Any) -> ClientCall | None:
    try:
        if suppressed():
            return None
        url = request.url
        return ClientCall(
            request.method,
            url.scheme,
            url.host,
            url.port,
            path=url.path,
            query=url.query.decode("latin-1"),
            headers=request.headers,
        )
    except Exception:
        internal_error("httpx request start")
        return None


def _finish(call: ClientCall, request: Any, response: Any) -> None:
    try:
        call.finish(
            response.status_code,
            content_length(request.headers.get("content-length")),
            response.num_bytes_downloaded or content_length(response.headers.get("content-length")),
        )
    except Exception:
        internal_error("httpx request end")


def _fail(call: ClientCall, exc: BaseException) -> None:
    try:
        call.fail(exc)
    except Exception:
        internal_error("httpx request end")


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs["request"]


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    call = _start(request)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(call, exc)
        raise
    _finish(call, request, response)
    return response


def _asend(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _asend_traced(wrapped, args, kwargs)


async def _asend_traced(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # The span starts inside the coroutine, so it belongs to the task that awaits the request.
    request = _request_of(args, kwargs)
    call = _start(request)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(call, exc)
        raise
    _finish(call, request, response)
    return response


def patch() -> None:
    """Wrap ``httpx.Client.send`` and ``httpx.AsyncClient.send`` (idempotent)."""
    if _patches:
        return
    _patches.wrap("httpx", "Client.send", _send)
    _patches.wrap("httpx", "AsyncClient.send", _asend)


def unpatch() -> None:
    """Restore the original methods (idempotent)."""
    _patches.undo()
