"""The ``requests`` session our OTLP requests go through: the trace requests we write
(``post_body``), and the SDK's metric exporter's (``session=``, its seam).

Left to itself the SDK retries a refused or unanswered request with 1 s, 2 s, 4 s backoffs until
its timeout, blind to our breaker and to shutdown, and logs every retry: ``obs.flush()`` against a
closed port took 5 s per call. Through this session it makes exactly one request per export: any
failure (no answer, or an HTTP error status) is raised to it as final, and our delivery layer
retries, opens its breaker, spools, and stops waiting at shutdown. ``quiet_sdk_logs`` keeps the
SDK's loggers silent about our own exports (failures are counted, and warned about once, by us).

Each request's timeout is capped by the exporter's (the delivery layer's, shorter at exit), and
``abort_all()`` cuts the requests in flight from another thread.
"""

from __future__ import annotations

import gzip
import logging
import os
import weakref
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .._core.context import EXPORTING
from .http import cut

__all__ = ["OtlpSession", "Unanswered", "abort_all", "compress", "quiet_sdk_logs", "trace_settings"]

# Every connection our sessions opened in this process: ``abort_all`` shuts their sockets down.
_open: weakref.WeakSet[HTTPConnection] = weakref.WeakSet()


class Unanswered(OSError):
    """A request that failed (raised to the SDK as final; older SDKs let it through to us)."""


class _Connection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _open.add(self)


class _TLSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _open.add(self)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class OtlpSession(requests.Session):
    """One request per SDK export call, its timeout capped at ``limit()`` seconds."""

    def __init__(self, limit: Callable[[], float]) -> None:
        super().__init__()
        self.limit = limit
        self._settings: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._templates: dict[str, requests.PreparedRequest] = {}
        adapter = _Adapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def post_body(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> None:
        """POST ``body`` as ``post`` would, without its per-request preparation: the request
        (URL, headers, cookies, netrc auth, hooks) is prepared once per URL, then copied."""
        template = self._templates.get(url)
        if template is None:
            template = self.prepare_request(requests.Request("POST", url, headers=dict(headers)))
            self._templates[url] = template
        prepared = template.copy()
        prepared.prepare_body(body, None)
        settings = self.merge_environment_settings(url, {}, None, None, None)
        self.send(prepared, timeout=timeout, allow_redirects=False, **settings)

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        """``requests``' own, with what it reads from the environment (proxy variables, CA
        bundle) read once per URL and session, not for every request (BENCHMARKS.md)."""
        key = (url, stream, verify, cert, tuple(sorted((proxies or {}).items())))
        settings = self._settings.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._settings) < 16:
                self._settings[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request``; raise ``Unanswered`` on any failure, so the SDK does not retry."""
        limit = self.limit()
        timeout = kwargs.get("timeout")
        kwargs["timeout"] = limit if not isinstance(timeout, (int, float)) else min(timeout, limit)
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException as exc:  # refused, reset, timed out
            raise Unanswered(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise Unanswered(f"HTTP {response.status_code}")
        return response


def trace_settings(
    session: requests.Session, headers: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, str], str]:
    """Headers and compression of our trace requests, from the ``OTEL_EXPORTER_OTLP_*`` variables
    the SDK's span exporter reads (headers, compression, certificates, which go on ``session``),
    then ``headers``. Returns the request headers and the compression (``gzip``, ``deflate``
    or ``""``)."""

    def env(name: str) -> str:
        return environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(
            f"OTEL_EXPORTER_OTLP_{name}", ""
        )

    out = {"Content-Type": "application/x-protobuf"}
    if env("HEADERS"):
        from opentelemetry.util.re import parse_env_headers  # noqa: PLC0415 - rarely set

        try:
            out.update(parse_env_headers(env("HEADERS"), liberal=True))
        except TypeError:  # SDKs before ``liberal``
            out.update(parse_env_headers(env("HEADERS")))
    out.update(headers)
    compression = env("COMPRESSION").strip().lower()
    compression = compression if compression in ("gzip", "deflate") else ""
    if compression:
        out["Content-Encoding"] = compression
    session.verify = env("CERTIFICATE") or True
    client_cert, client_key = env("CLIENT_CERTIFICATE"), env("CLIENT_KEY")
    if client_cert:
        session.cert = (client_cert, client_key) if client_key else client_cert
    return out, compression


def compress(body: bytes, compression: str) -> bytes:
    """``body`` compressed as ``trace_settings`` said (``""``: as it is)."""
    if compression == "gzip":
        return gzip.compress(body, 6, mtime=0)
    if compression == "deflate":
        return zlib.compress(body)
    return body


def abort_all() -> None:
    """Cut every OTLP request in flight in this process (from another thread).

    Called when the process stops waiting on backends (shutdown).
    """
    for connection in list(_open):
        sock = connection.sock
        if sock is not None:
            cut(sock)


class _OurExports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not EXPORTING.get()


_quiet = _OurExports()


def quiet_sdk_logs(*exporter_types: type) -> None:
    """Silence the loggers of these SDK exporters (and their HTTP client) during our exports.

    The user's own use of the same exporters still logs as usual.
    """
    names = {t.__module__ for t in exporter_types} | {"opentelemetry.exporter.otlp.common.http"}
    for name in names:
        logger = logging.getLogger(name)
        if _quiet not in logger.filters:
            logger.addFilter(_quiet)


def _after_fork_in_child() -> None:
    # The parent's connections are not ours to cut: shutting an inherited socket down would cut
    # the parent's request too.
    _open.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
