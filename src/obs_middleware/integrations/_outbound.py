"""Outbound HTTP client spans, shared by the ``httpx`` and ``requests`` integrations.

One ``client`` span per request made through the client (redirects included), named
``METHOD host``, with ``http.method``, ``server.address``, ``url.full`` (no credentials, secrets
scrubbed from the path, query keys kept and values dropped), ``http.status_code``, request and
response sizes; status ``error`` for 4xx/5xx answers and transport exceptions. A W3C
``traceparent`` (and the incoming ``tracestate``) is added to the request unless the caller set one
or the host is excluded by ``HttpOptions.propagate_hosts``/``no_propagate_hosts``. Requests made
by our own exporters (``_delivery.EXPORTING``, or anything on the export worker thread) are never
traced. Metrics: ``http.client.duration`` by method, host and status class.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

from .. import _setup
from .._core import span as _span
from .._core.context import EXPORTING, format_traceparent
from .._core.http import OTHER_METHOD, STATUS_CLASS, other_method
from .._core.metrics import registry
from .._core.redact import query_keys, scrub

__all__ = ["ClientCall", "client_duration", "suppressed"]

client_duration = registry.histogram(
    "http.client.duration",
    ("http.method", "server.address", "http.status_class"),
    "ms",
    "Duration of outbound HTTP requests (to the response body when it is read by the call).",
)
registry.count_view("http.client.requests", client_duration, "Outbound HTTP requests.")

_EXPORT_THREAD = "obs-export"  # the pipeline's worker (_pipeline.Pipeline) never traces itself
_policy: tuple[object, frozenset[str], tuple[str, ...], frozenset[str], tuple[str, ...]] | None = (
    None
)


def suppressed() -> bool:
    """Tell whether this request must not become a span: our own exporters are sending, or it
    is made inside another client span's send (a transport wrapping a second client, as fal's
    does), which already records it."""
    if EXPORTING.get() or threading.current_thread().name == _EXPORT_THREAD:
        return True
    current = _span.current_span()
    return current is not None and current.kind == "client" and "url.full" in current.attrs


def _patterns(hosts: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact = {h.lower() for h in hosts if not h.startswith("*.")}
    suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))
    return frozenset(exact), suffixes


def may_propagate(host: str) -> bool:
    """Whether ``traceparent`` may be sent to ``host`` (``*.example.com`` matches subdomains)."""
    global _policy
    options = _setup.current_config().http
    policy = _policy
    if policy is None or policy[0] is not options:
        allow = _patterns(options.propagate_hosts)
        deny = _patterns(options.no_propagate_hosts)
        policy = _policy = (options, *allow, *deny)
    _, allow_exact, allow_suffix, deny_exact, deny_suffix = policy
    host = host.lower()
    if host in deny_exact or host.endswith(deny_suffix):
        return False
    if not allow_exact and not allow_suffix:
        return True
    return host in allow_exact or host.endswith(allow_suffix)


class ClientCall:
    """One outbound request's span: started (and its trace headers added to ``headers``) when
    made, before sending; then ``finish`` or ``fail``."""

    __slots__ = ("host", "method", "span")

    def __init__(
        self,
        method: str,
        scheme: str,
        host: str,
        port: int | None,
        *,
        path: str,
        query: str,
        headers: MutableMapping[str, str],
    ) -> None:
        self.host = host
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc = f"{netloc}:{port}"
        url = f"{scheme}://{netloc}{scrub(path)}"
        if query:
            url = f"{url}?{query_keys(query)}"
        attrs: dict[str, Any] = {"server.address": host, "url.full": url}
        if method not in _setup.current_config().http.known_method_set:
            method = other_method(method, attrs)  # a method the caller made up: not a label
        self.method = attrs["http.method"] = method
        if port is not None:
            attrs["server.port"] = port
        verb = "HTTP" if method == OTHER_METHOD else method
        self.span = span = _span.Span(f"{verb} {host}", attrs, "client").start()
        # The caller's own trace headers win; none go to an excluded host.
        if "traceparent" not in headers and may_propagate(host):
            headers["traceparent"] = format_traceparent(span.trace_id, span.span_id, span.sampled)
            if span.local.tracestate:
                headers["tracestate"] = span.local.tracestate

    def finish(self, status: int, request_size: int | None, response_size: int | None) -> None:
        """End the span with the response's status and sizes."""
        span = self.span
        attrs = span.attrs
        attrs["http.status_code"] = status
        attrs["http.request_size"] = request_size
        attrs["http.response_size"] = response_size
        if status >= 400 and span.status == "ok":
            span.status = "error"
        self._end(status)

    def fail(self, exc: BaseException) -> None:
        """End the span with the exception that stopped the request."""
        self.span.record_exception(exc)
        self._end(0)

    def _end(self, status: int) -> None:
        span = self.span
        span.end()
        client_duration.record(
            (self.method, self.host, STATUS_CLASS.get(status // 100, "xxx")),
            (span.end_ns - span.start_ns) / 1e6,
        )
