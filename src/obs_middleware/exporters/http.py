"""HTTP exporter: JSON batches to Fluent Bit's HTTP input and similar collectors.

Also home of ``HttpTransport``, the small keep-alive HTTP/1.1 client (stdlib ``http.client``) that
every JSON exporter posts through, and ``PostingExporter``, what those exporters share.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson

from .._delivery import Delivery, DeliveryOptions, Result, classify_status
from .._json import dumps_json, encode_records
from .._record import Record
from .._version import __version__

try:  # the same gzip format, ~5x faster at level 1: the [tinybird] and [clickhouse] extras
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    import zlib as _zlib  # type: ignore[no-redef]

__all__ = ["HttpExporter", "HttpTransport", "Response", "cut", "gzip"]

USER_AGENT = f"obs-middleware/{__version__}"
_MAX_RESPONSE = 1024 * 1024  # a collector's answer is small; never buffer a runaway body
_ABORTED_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Response:
    """A finished HTTP exchange: status, headers (lower-case names), body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def result(self) -> Result:
        """Classify the status (retry on 408/429/5xx honouring ``Retry-After``)."""
        return classify_status(
            self.status, self.headers.get("retry-after"), self.body[:200].decode("utf-8", "replace")
        )


def gzip(data: bytes | bytearray) -> bytes:
    """Gzip at level 1: the export thread's CPU matters more than a few percent of bytes.

    Uses Intel ISA-L (``isal``) when installed (the ``[tinybird]`` and ``[clickhouse]`` extras):
    the fastest of the three measured, and as small as zlib's output (BENCHMARKS.md).
    """
    compressor = _zlib.compressobj(1, _zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def cut(sock: socket.socket) -> None:
    """Shut a connection's socket down from another thread: the request on it fails at once.

    ``socket.socket.shutdown`` of the plain socket: ``SSLSocket.shutdown`` would also drop its TLS
    state under the reading thread's feet.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class HttpTransport:
    """One keep-alive connection to one origin; reconnects after any error.

    Every request carries ``User-Agent: obs-middleware/<version>`` (our own traffic is
    recognisable), and is bounded by ``timeout`` for connecting and for each read. Userinfo in the
    URL (``https://user:pass@host``) becomes HTTP Basic authentication.
    """

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if parts.username is not None:
            user = f"{parts.username}:{parts.password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(user).decode()
        self._conn: http.client.HTTPConnection | None = None
        self._cap = float("inf")

    def destination(self, path: str = "") -> str:
        """Where requests go and as whom (URL, ``path``, headers but the user agent): the key of
        the exporter's default spool folder (hashed there, never written out)."""
        headers = sorted(f"{k}:{v}" for k, v in self.headers.items() if k != "User-Agent")
        url = f"{self.scheme}://{self.host}:{self.port}{self.base_path}{path}"
        return "\n".join([url, *headers])

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        conn = self._conn
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        self._conn = cls(self.host, self.port, timeout=timeout)
        return self._conn, False

    def post(
        self, path: str, body: bytes | bytearray, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """POST ``body`` to the base path + ``path``; raises ``OSError``/``HTTPException``."""
        try:
            return self._post(path, body, headers, timeout)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            if self._reused:
                # The server closed an idle keep-alive connection: one immediate fresh try.
                return self._post(path, body, headers, timeout)
            raise

    def _post(
        self, path: str, body: bytes | bytearray, headers: Mapping[str, str], timeout: float
    ) -> Response:
        conn, self._reused = self._connection(timeout)
        try:
            if conn.sock is None:
                conn.connect()
            # Read after connecting: an ``abort()`` racing with the connect still bounds the wait.
            conn.sock.settimeout(min(timeout, self._cap))
            conn.request("POST", self.base_path + path, body, {**self.headers, **headers})
            resp = conn.getresponse()
            data = resp.read(_MAX_RESPONSE)
            if resp.will_close or not resp.isclosed():
                self.close()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        except BaseException:
            self.close()
            raise

    _reused = False

    def abort(self) -> None:
        """Cut the request in flight (call from another thread) and cap later ones at 0.5 s.

        Used when the process exits: the final flush must not wait on a hung backend.
        """
        self._cap = _ABORTED_TIMEOUT_S
        self._reused = False  # the cut request must not look like a stale keep-alive: no retry
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            cut(sock)

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def after_fork(self) -> None:
        """In a forked child: drop the parent's connection without a byte sent on it.

        Only the child's copy of the socket is closed (no shutdown, no TLS alert): the parent's
        connection stays up, and the child opens its own on its first request.
        """
        self._cap = float("inf")
        conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None:
            # Not ``conn.close()``: it closes the response being read, whose reader lock the
            # parent's export thread may hold, and in the child no thread would release it.
            with contextlib.suppress(OSError):
                os.close(conn.sock.detach())


class PostingExporter:
    """Base of the exporters that POST batches through one ``HttpTransport`` with a ``Delivery``
    (HTTP, Tinybird, ClickHouse): request headers, gzip, and the delivery's lifecycle.

    A subclass sets ``name`` and ``path`` and implements ``send(batch, timeout)`` (called by the
    delivery layer), posting the encoded batch with ``_post``.
    """

    name: str
    path: str

    def __init__(
        self,
        transport: HttpTransport,
        content_type: str,
        *,
        compress: bool,
        delivery: DeliveryOptions | None,
    ) -> None:
        self.transport = transport
        self.compress = compress
        self._headers = {"Content-Type": content_type}
        if compress:
            self._headers["Content-Encoding"] = "gzip"
        options = delivery or DeliveryOptions.from_env(self.name)
        self.delivery = Delivery(
            self.name,
            self.send,
            options,
            interrupt=transport.abort,
            destination=transport.destination(getattr(self, "path", "")),
        )

    def send(self, batch: Sequence[Any], timeout: float) -> Result:
        """One request for ``batch`` (called by the delivery layer)."""
        raise NotImplementedError

    def _post(self, body: bytes | bytearray, timeout: float) -> Response:
        if self.compress:
            body = gzip(body)
        return self.transport.post(self.path, body, self._headers, timeout)

    def flush(self) -> None:
        """Replay anything spooled."""
        self.delivery.flush()

    def shutdown(self) -> None:
        """Seal the spool and close the connection."""
        self.delivery.close()
        self.transport.close()

    def after_fork(self) -> None:
        """In a forked child: its own connection and spool segment (the parent keeps its own)."""
        self.transport.after_fork()
        self.delivery.after_fork()


class HttpExporter(PostingExporter):
    """POST batches of records as JSON to an HTTP collector (Fluent Bit ``in_http``, Vector…).

    ``url``: the collector's endpoint (``http://127.0.0.1:9880``). ``tag``: appended to the URL
    path, which is where Fluent Bit's HTTP input takes the tag from (``…:9880/app.obs``).
    ``headers``: extra request headers (an auth token). ``format``: ``"json"`` (one array per
    batch, what Fluent Bit expects) or ``"ndjson"``. ``gzip``: compress bodies.
    ``max_request_bytes``: larger batches are split before sending. Delivery (timeout, retry,
    breaker, spool) follows ``delivery`` or ``OBS_*`` variables, see ``DeliveryOptions``.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        tag: str | None = None,
        headers: Mapping[str, str] | None = None,
        format: Literal["json", "ndjson"] = "json",
        gzip: bool = False,
        max_request_bytes: int = 5 * 1024 * 1024,
        delivery: DeliveryOptions | None = None,
        name: str | None = None,
    ) -> None:
        if format not in ("json", "ndjson"):
            raise ValueError(f"format must be 'json' or 'ndjson', got {format!r}")
        self.name = name or self.name
        self.path = "/" + quote(tag, safe="/.-_~") if tag else ""
        self.format = format
        self.gzip = gzip
        self.max_request_bytes = max_request_bytes
        content_type = "application/json" if format == "json" else "application/x-ndjson"
        super().__init__(
            HttpTransport(url, headers), content_type, compress=gzip, delivery=delivery
        )

    def encode(self, records: Sequence[Record]) -> bytes:
        """Encode ``records`` as one request body."""
        if self.format == "ndjson":
            return encode_records(records)
        return dumps_json(list(records), orjson.OPT_NON_STR_KEYS)

    def send(self, records: Sequence[Record], timeout: float) -> Result:
        """One request for ``records`` (called by the delivery layer)."""
        body = self.encode(records)
        if len(body) > self.max_request_bytes:
            return classify_status(413)
        return self._post(body, timeout).result()

    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch."""
        self.delivery.deliver(records)


def from_spec(arg: str) -> HttpExporter:
    """``http:<url>`` (``OBS_HTTP_TAG`` and ``OBS_HTTP_HEADERS`` as JSON object optional)."""
    url = arg or os.environ.get("OBS_HTTP_URL", "")
    if not url:
        raise ValueError("exporter 'http' needs a URL: 'http:http://host:9880' or OBS_HTTP_URL")
    headers = json.loads(os.environ.get("OBS_HTTP_HEADERS", "{}"))
    return HttpExporter(url, tag=os.environ.get("OBS_HTTP_TAG") or None, headers=headers)
