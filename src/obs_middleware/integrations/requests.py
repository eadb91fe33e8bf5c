"""requests: a ``client`` span per ``Session.send`` (``requests.get`` and friends included).

What is recorded and when ``traceparent`` is sent: ``_outbound``. Redirects followed by the
session stay inside the first request's span (one span per call). With ``stream=True`` the span
ends when the response headers arrive; otherwise after the body is read. Requests of our own
exporters are not traced.
"""

from __future__ import annotations

import contextvars
from typing import Any
from urllib.parse import urlsplit

from .._core.http import content_length
from .._core.internal import internal_error
from .._core.patches import Patches
from ._outbound import ClientCall, suppressed
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("requests").requirement

_patches = Patches("requests")
# Set while a traced send runs: the redirect hops it makes through ``send`` join its span.
_sending: contextvars.ContextVar[bool] = contextvars.ContextVar("obs_requests_send", default=False)


def _start(request: Any) -> ClientCall | None:
    try:
        if suppressed():
            return None
        url = urlsplit(request.url)
        return ClientCall(
            request.method or "GET",
            url.scheme,
            url.hostname or "",
            url.port,
            path=url.path or "/",
            query=url.query,
            headers=request.headers,
        )
    except Exception:
        internal_error("requests request start")
        return None


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _sending.get():
        return wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    call = _start(request)
    if call is None:
        return wrapped(*args, **kwargs)
    token = _sending.set(True)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        _sending.reset(token)
        try:
            call.fail(exc)
        except Exception:
            internal_error("requests request end")
        raise
    _sending.reset(token)
    try:
        streamed = kwargs.get("stream", False)
        size = None if streamed else len(response.content)
        call.finish(
            response.status_code,
            content_length(request.headers.get("Content-Length")),
            size if size is not None else content_length(response.headers.get("Content-Length")),
        )
    except Exception:
        internal_error("requests request end")
    return response


def patch() -> None:
    """Wrap ``requests.Session.send`` (idempotent)."""
    if not _patches:
        _patches.wrap("requests", "Session.send", _send)


def unpatch() -> None:
    """Restore the original method (idempotent)."""
    _patches.undo()
