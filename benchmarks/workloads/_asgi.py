"""Calls an ASGI app directly, as ``await app(scope, receive, send)``: no server, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

SCOPE_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"obs-bench/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]


def scope(
    path: str, headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET"
) -> dict[str, Any]:
    """A ``method path`` HTTP scope with 5 ordinary headers (plus ``headers``)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": SCOPE_HEADERS + (headers or []),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class Driver:
    """Calls an ASGI app in a tight loop on one event loop (``loop``: share one between apps).

    ``run(n)`` makes n requests; ``call_once()`` makes one and returns (status, body). A request
    is ``method path`` with ``headers`` and ``body`` (one ``http.request`` message).
    """

    def __init__(
        self,
        app: Any,
        path: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        method: str = "GET",
        body: bytes = b"",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.app = app
        self.scope = scope(path, headers, method)
        self.loop = loop or asyncio.new_event_loop()
        self.status = 0
        self.body = b""
        request = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> dict[str, Any]:
            return request

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        async def send_keep(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        async def drive(n: int) -> None:
            app, base = self.app, self.scope
            for _ in range(n):
                # Starlette writes route/path params into the scope: one fresh copy per request.
                await app(dict(base), receive, send)

        async def once() -> None:
            self.body = b""
            await self.app(dict(self.scope), receive, send_keep)

        self.drive = drive
        self.once = once

    def run(self, n: int) -> None:
        """Make ``n`` requests."""
        self.loop.run_until_complete(self.drive(n))

    def call_once(self) -> tuple[int, bytes]:
        """Make one request; its status and body."""
        self.loop.run_until_complete(self.once())
        return self.status, self.body

    def check(self, check_body: Callable[[bytes], None]) -> None:
        """One request: status 200 and a body ``check_body`` accepts (else AssertionError)."""
        status, body = self.call_once()
        if status != 200:
            raise AssertionError(f"status {status}: {body[:200]!r}")
        check_body(body)
