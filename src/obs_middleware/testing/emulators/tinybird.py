"""A local Tinybird Events API (``POST /v0/events``) on loopback, enforcing its documented limits.

For tests and offline demos of ``TinybirdExporter`` (or any Events API client)::

    with TinybirdEmulator(tokens={"t0k": ("DATASOURCE:APPEND",)}) as tb:
        exporter = TinybirdExporter(token="t0k", host=tb.url)
        ...
        assert tb.rows("obs_events")

What it enforces, as Tinybird documents it: ``Authorization: Bearer`` tokens with the
``DATASOURCE:APPEND`` scope (``DATASOURCE:CREATE`` to write a datasource that does not exist,
created by inference, without a schema); NDJSON or single-object bodies, optionally gzip'd;
``wait=true`` → 200 once written, else 202; 10 MB per request (413); 100 requests/s and 20 MB/s
per datasource (429 with ``Retry-After``; ``X-RateLimit-Limit/Remaining/Reset`` on every answer);
rows that do not match the datasource schema (parsed from a ``.datasource`` file) go to the
quarantine, counted in ``quarantined_rows``. ``fail_next(status, times)`` makes the next answers
fail, for delivery tests.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

__all__ = ["Column", "TinybirdEmulator", "parse_datasource"]

_COLUMN = re.compile(r"^\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\s+(.+?)(?:\s+`json:\$\.([^`]+)`)?\s*,?\s*$")
_INT_RANGES = {
    "Int8": (-(1 << 7), 1 << 7),
    "Int16": (-(1 << 15), 1 << 15),
    "Int32": (-(1 << 31), 1 << 31),
    "Int64": (-(1 << 63), 1 << 63),
    "UInt8": (0, 1 << 8),
    "UInt16": (0, 1 << 16),
    "UInt32": (0, 1 << 32),
    "UInt64": (0, 1 << 64),
}


class Column:
    """One schema column: name, ClickHouse type and the top-level JSON key it reads."""

    __slots__ = ("key", "name", "nullable", "type")

    def __init__(self, name: str, type_: str, key: str | None) -> None:
        self.name = name
        self.key = key or name
        inner, nullable = type_.strip(), False
        while inner.startswith(("Nullable(", "LowCardinality(")):
            wrapper, _, rest = inner.partition("(")
            nullable = nullable or wrapper == "Nullable"
            inner = rest[:-1]
        self.nullable = nullable
        self.type = inner

    def accepts(self, value: Any) -> bool:
        """Tell whether Tinybird would ingest ``value`` here (rather than quarantine the row)."""
        if value is None:
            return self.nullable
        t = self.type
        if t == "String":
            return isinstance(value, str)
        if t in _INT_RANGES:
            lo, hi = _INT_RANGES[t]
            return type(value) is int and lo <= value < hi
        if t.startswith("Float"):
            return type(value) in (int, float) and math.isfinite(value)
        if t.startswith(("DateTime", "Date")):
            return isinstance(value, str) and _parses_as_time(value)
        return True  # types the emulator does not model are taken as they come


def _parses_as_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def parse_datasource(text: str) -> list[Column]:
    """Parse the columns of a ``.datasource`` file's ``SCHEMA >`` block."""
    columns: list[Column] = []
    in_schema = False
    for line in text.splitlines():
        if line.startswith("SCHEMA >"):
            in_schema = True
        elif in_schema:
            if not line.strip():
                if columns:
                    break
                continue
            match = _COLUMN.match(line)
            if match is None:
                raise ValueError(f"cannot parse schema line {line!r}")
            columns.append(Column(match.group(1), match.group(2), match.group(3)))
    return columns


def _shipped_schema() -> dict[str, list[Column]]:
    from ...exporters.tinybird import asset_path  # noqa: PLC0415 - keep the emulator import light

    folder = Path(asset_path("tinybird", "datasources"))
    return {p.stem: parse_datasource(p.read_text()) for p in folder.glob("*.datasource")}


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can drop the connections it accepted."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class TinybirdEmulator:
    """The Events API on ``127.0.0.1`` (an ephemeral port unless ``port`` is given).

    ``tokens`` maps a token to its scopes (default: ``"test-token"`` with
    ``DATASOURCE:APPEND``). ``datasources`` maps names to schemas (default: the shipped ones).
    Read back with ``rows(name)``, ``quarantine(name)`` and ``requests`` (method, path, headers,
    body size, status of every call).
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, Iterable[str]] | None = None,
        datasources: Mapping[str, list[Column]] | None = None,
        max_request_bytes: int = 10 * 1000 * 1000,
        requests_per_s: int = 100,
        bytes_per_s: int = 20 * 1000 * 1000,
        port: int = 0,
    ) -> None:
        self.tokens = {
            t: set(s) for t, s in (tokens or {"test-token": ("DATASOURCE:APPEND",)}).items()
        }
        self.schemas: dict[str, list[Column] | None] = dict(
            datasources if datasources is not None else _shipped_schema()
        )
        self.max_request_bytes = max_request_bytes
        self.requests_per_s = requests_per_s
        self.bytes_per_s = bytes_per_s
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._quarantine: dict[str, list[Any]] = {}
        self._window: dict[str, deque[tuple[float, int]]] = {}
        self._failures: deque[tuple[int, str | None]] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, to pass as ``TinybirdExporter(host=...)``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> TinybirdEmulator:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; open keep-alive connections are closed too, as
        when the real service goes down (a client sees a reset, then refused connections)."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> TinybirdEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def rows(self, datasource: str) -> list[dict[str, Any]]:
        """Rows written to ``datasource`` (each as the columns it set)."""
        with self._lock:
            return list(self._rows.get(datasource, ()))

    def quarantine(self, datasource: str) -> list[Any]:
        """Rows sent to ``datasource``'s quarantine."""
        with self._lock:
            return list(self._quarantine.get(datasource, ()))

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` valid requests with ``status`` (and ``Retry-After``)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * times)

    # -- request handling (server threads) --------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Answer one request: (status, headers, JSON body)."""
        status, extra, payload = self._handle(method, target, headers, body)
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": target,
                    "headers": dict(headers),
                    "bytes": len(body),
                    "status": status,
                }
            )
        return status, extra, payload

    def _handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        try:
            name, wait = self._admit(method, target, headers, body)
            rate_headers = self._rate_headers(name)
            with self._lock:
                failure = self._failures.popleft() if self._failures else None
            if failure is not None:
                status, retry_after = failure
                extra = {"Retry-After": retry_after} if retry_after is not None else {}
                raise _Reject(status, "injected failure", {**rate_headers, **extra})
            try:
                data = self._decode(body, headers.get("content-encoding", ""))
            except (OSError, EOFError, zlib.error, ValueError) as exc:
                raise _Reject(400, "Cannot decompress the body", rate_headers) from exc
        except _Reject as reject:
            return reject.status, reject.headers, {"error": reject.message}
        ok, bad = self._ingest(name, data)
        payload = {"successful_rows": ok, "quarantined_rows": bad}
        return (200 if wait else 202), rate_headers, payload

    def _admit(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, bool]:
        """Route, auth, size and rate checks; returns (datasource, wait) or raises ``_Reject``."""
        url = urlsplit(target)
        if url.path.rstrip("/") != "/v0/events":
            raise _Reject(404, f"Not found: {url.path}")
        if method != "POST":
            raise _Reject(405, "Use POST")
        query = parse_qs(url.query)
        name = (query.get("name") or [""])[0]
        if not name:
            raise _Reject(400, "The 'name' parameter is required")
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else (query.get("token") or [""])[0]
        scopes = self.tokens.get(token)
        if scopes is None:
            raise _Reject(403, "Invalid token")
        if name not in self.schemas and "DATASOURCE:CREATE" not in scopes:
            raise _Reject(403, f"Data Source '{name}' not found and the token cannot create it")
        if not scopes & {"DATASOURCE:APPEND", f"DATASOURCE:APPEND:{name}", "DATASOURCE:CREATE"}:
            raise _Reject(403, f"The token lacks DATASOURCE:APPEND on '{name}'")
        if len(body) > self.max_request_bytes:
            raise _Reject(413, f"Request body over {self.max_request_bytes} bytes")
        self._rate(name, len(body))
        return name, (query.get("wait") or ["false"])[0].lower() == "true"

    def _decode(self, body: bytes, encoding: str) -> bytes:
        if encoding.lower() == "gzip":
            # Bounded: a small body must not inflate into gigabytes.
            d = zlib.decompressobj(31)
            data = d.decompress(body, self.max_request_bytes * 20)
            if d.unconsumed_tail:
                raise ValueError("decompressed body too large")
            return data
        if encoding:
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
        return body

    def _ingest(self, name: str, data: bytes) -> tuple[int, int]:
        schema = self.schemas.get(name)
        good: list[dict[str, Any]] = []
        bad: list[Any] = []
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad.append(line.decode("utf-8", "replace"))
                continue
            if not isinstance(obj, dict):
                bad.append(obj)
                continue
            if schema is None:
                good.append(obj)
            elif all(c.accepts(obj[c.key]) for c in schema if c.key in obj):
                good.append({c.name: obj[c.key] for c in schema if c.key in obj})
            else:
                bad.append(obj)
        with self._lock:
            self._rows.setdefault(name, []).extend(good)
            if bad:
                self._quarantine.setdefault(name, []).extend(bad)
        return len(good), len(bad)

    def _rate(self, name: str, size: int) -> None:
        now = time.monotonic()
        with self._lock:
            window = self._window.setdefault(name, deque())
            while window and now - window[0][0] >= 1.0:
                window.popleft()
            if len(window) >= self.requests_per_s or (
                window and sum(n for _, n in window) + size > self.bytes_per_s
            ):
                wait = str(max(math.ceil(1.0 - (now - window[0][0])), 1))
                headers = {
                    "Retry-After": wait,
                    "X-RateLimit-Limit": str(self.requests_per_s),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": wait,
                }
                raise _Reject(429, "Too many requests", headers)
            window.append((now, size))

    def _rate_headers(self, name: str) -> dict[str, str]:
        with self._lock:
            window = self._window.get(name) or deque()
            remaining = max(self.requests_per_s - len(window), 0)
        return {
            "X-RateLimit-Limit": str(self.requests_per_s),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": "1",
        }


class _Reject(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _handler(emulator: TinybirdEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._answer("POST")

        def do_GET(self) -> None:
            self._answer("GET")

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > emulator.max_request_bytes:
                # Refuse before reading: answer, then drop the connection and the unread body.
                self.close_connection = True
                body = b"\0" * (emulator.max_request_bytes + 1)
            else:
                body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = emulator.handle(method, self.path, headers, body)
            data = orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read ``emulator.requests``

    return Handler
