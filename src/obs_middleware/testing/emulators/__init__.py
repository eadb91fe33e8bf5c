"""Provider API emulators: real HTTP on 127.0.0.1 that the real SDKs complete calls against.

Each emulator is a context manager running a threaded stdlib HTTP/1.1 server (keep-alive,
chunked streaming) in a background thread::

    from obs_middleware.testing.emulators.openai import OpenAIEmulator

    with OpenAIEmulator(latency_s=0.01) as emu:
        client = openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0)

Common knobs: ``latency_s`` (before every reply), ``stream_delay_s`` (between streamed events),
``fail(path_contains, status, body, times=1)`` (scripted failures), ``requests`` (what arrived).
A subclass implements ``route(request) -> Reply``. Run one standalone (other process, demos)
with ``python -m obs_middleware.testing.emulators.<name> [--port N]``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Emulator", "Reply", "Request", "serve", "sse"]


@dataclass
class Request:
    """One request as the emulator saw it (``json`` is None for a non-JSON body)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any = None


@dataclass
class Reply:
    """What to answer: a JSON (or raw) body, or ``events`` streamed with chunked encoding."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    events: Iterable[bytes] | None = None
    content_type: str = "application/json"


def sse(data: Any, event: str | None = None, id: str | None = None) -> bytes:
    """One server-sent event (``data`` JSON-encoded unless it is a str)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


@dataclass
class _Failure:
    path_contains: str
    status: int
    body: Any
    times: int
    headers: dict[str, str]


class Emulator:
    """Base: a loopback server in a thread. Subclasses implement ``route``."""

    name = "emulator"

    def __init__(
        self, *, latency_s: float = 0.0, stream_delay_s: float = 0.0, port: int = 0
    ) -> None:
        self.latency_s = latency_s
        self.stream_delay_s = stream_delay_s
        self.port = port
        self.requests: list[Request] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        """Bind and serve in a daemon thread; returns ``self``."""
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        server.block_on_close = False  # keep-alive connections must not hold up stop()
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"{self.name}-emulator",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- knobs -----------------------------------------------------------------------------------
    def fail(
        self,
        path_contains: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fail the next ``times`` requests whose path contains ``path_contains``."""
        with self._lock:
            self._failures.append(_Failure(path_contains, status, body, times, headers or {}))

    def _scripted_failure(self, path: str) -> Reply | None:
        with self._lock:
            for failure in self._failures:
                if failure.path_contains in path and failure.times > 0:
                    failure.times -= 1
                    return Reply(failure.status, json=failure.body, headers=dict(failure.headers))
        return None

    # -- subclasses ------------------------------------------------------------------------------
    def route(self, request: Request) -> Reply:
        """Answer one request (subclasses)."""
        return Reply(404, json={"error": f"no route for {request.method} {request.path}"})

    def handle(self, request: Request) -> Reply:
        """Record, delay, apply scripted failures, then ``route``."""
        with self._lock:
            self.requests.append(request)
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._scripted_failure(request.path) or self.route(request)


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def handle(self) -> None:
        """Serve a keep-alive connection; a client hanging up is not an error."""
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``emulator.requests`` instead."""

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        decoded: Any = None
        if body and "json" in (self.headers.get("content-type") or ""):
            try:
                decoded = json.loads(body)
            except ValueError:
                decoded = None
        request = Request(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            decoded,
        )
        try:
            reply = self.emulator.handle(request)
        except Exception as exc:  # an emulator bug must show up as a 500, not a hang
            reply = Reply(500, json={"error": f"emulator error: {type(exc).__name__}: {exc}"})
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        if reply.events is not None:
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("cache-control", "no-store")
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            delay = self.emulator.stream_delay_s
            try:
                for event in reply.events:
                    if delay:
                        time.sleep(delay)
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):  # the client closed the stream early
                self.close_connection = True
            return
        payload = reply.body
        content_type = reply.content_type
        if reply.json is not None:
            payload = json.dumps(reply.json).encode()
            content_type = "application/json"
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


def serve(emulator: Emulator, argv: list[str] | None = None) -> None:
    """Command-line entry: serve ``emulator`` on ``--port`` until interrupted."""
    parser = argparse.ArgumentParser(description=f"{emulator.name} API emulator on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args(argv)
    emulator.port = args.port
    emulator.latency_s = args.latency
    with emulator:
        print(emulator.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
