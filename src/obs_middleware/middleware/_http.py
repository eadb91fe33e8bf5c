"""What the ASGI and WSGI middleware share: names, request attributes, metrics, the span's end."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._core import events
from .._core import span as _span
from .._core.config import HttpOptions
from .._core.http import OTHER_METHOD, STATUS_CLASS, content_length
from .._core.internal import internal_error
from .._core.metrics import FOLD_AT, Series, http_duration
from .._core.redact import SENSITIVE_HEADERS, clean_path, scrub
from .._core.span import Span

__all__ = [
    "captured_headers",
    "finish_request",
    "span_name",
]

_MAX_NAMES = 10_000


def span_name(method: str, template: str | None) -> str:
    """``"GET /items/{id}"`` (or ``"GET"`` when no route matched).

    An unknown method (``_OTHER``) is named ``HTTP``, as OTel names it.
    """
    verb = "HTTP" if method == OTHER_METHOD else method
    return f"{verb} {template}" if template else verb


def captured_headers(options: HttpOptions, get: Callable[[str], str | None]) -> dict[str, str]:
    """Request headers the user asked for, without sensitive ones unless explicitly allowed
    (then as sent); secrets in the values of the others are scrubbed."""
    out: dict[str, str] = {}
    for name in options.capture_headers:
        lower = name.lower()
        sensitive = lower in SENSITIVE_HEADERS
        if sensitive and not options.allow_sensitive_headers:
            continue
        value = get(lower)
        if value is not None:
            out[f"http.request.header.{lower}"] = value if sensitive else scrub(value)
    return out


def finish_request(  # noqa: PLR0917 - positional on purpose: called once per request
    span: Span,
    template: str | None,
    status: int,
    length: bytes | str | None,
    response_size: int,
    end_ns: int,
    options: HttpOptions,
    scope: Mapping[str, Any],
) -> None:
    """Name the span after its route, record attributes and metrics, end it (at ``end_ns``: the
    last body chunk, when seen). The span's provisional name is the request method; ``length``
    the request's ``Content-Length`` as received (parsed only if recorded).

    ``url.path`` is bounded and scrubbed unless it is the matched route's own (static) template
    or plain lower-case letters, digits and slashes. Attributes (and the ``user_id`` hook) are
    skipped for a span sure to be forgotten: one of an unsampled trace that is neither kept,
    failed nor slow, when no handler or root callback reads it.
    """
    method = span.name
    known = _finished.get((method, template, status))
    if known is None:
        known = _name_and_series(method, template, status)
    span.name, series = known
    if status >= 500 and span.status == "ok":
        span.status = "error"
    end_ns = end_ns or _span.clock_ns()
    local = span.local
    if _span.may_export(span, end_ns) or events.active or local.deferred is not None:
        attrs = span.attrs
        path = attrs.get("url.path")
        if path is not None and path != template:
            attrs["url.path"] = clean_path(path)
        attrs["http.method"] = method
        attrs["http.route"] = template
        attrs["http.status_code"] = status
        attrs["http.request_size"] = None if length is None else content_length(length)
        attrs["http.response_size"] = response_size
        if local.user_id is None and options.user_id is not None:
            try:
                uid = options.user_id(scope)
                local.user_id = None if uid is None else str(uid)
            except Exception:
                internal_error("user_id hook")
    span.end(end_ns)
    series.append((end_ns - span.start_ns) / 1e6)
    if len(series) >= FOLD_AT:
        series.fold()


# (method, template, status) -> the span's name (interned here) and the duration metric's series
# (method, route, status class): one lookup per request.
_finished: dict[tuple[str, str | None, int], tuple[str, Series]] = {}


def _name_and_series(method: str, template: str | None, status: int) -> tuple[str, Series]:
    labels = (method, template or "", STATUS_CLASS.get(status // 100, "xxx"))
    known = (span_name(method, template), http_duration.series(labels))
    if len(_finished) < _MAX_NAMES:  # as for names: raw paths from a framework must not grow us
        _finished[method, template, status] = known
    return known
