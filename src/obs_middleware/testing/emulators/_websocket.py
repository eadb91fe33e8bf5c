"""The server side of a WebSocket (RFC 6455) for emulators that push events (ComfyUI's ``/ws``).

Enough of the protocol for clients to connect, receive text and binary frames, ping and close:
the upgrade handshake, unfragmented frames, masked client frames.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import uuid
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from . import _Handler

__all__ = ["WebSocket", "WebSocketHandler"]

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Sockets(Protocol):
    """What the handler tells its emulator: a socket opened, a socket closed."""

    def _connected(self, ws: WebSocket) -> None: ...

    def _disconnected(self, ws: WebSocket) -> None: ...


class WebSocket:
    """One server side of a WebSocket: framed writes under a lock."""

    def __init__(self, sock: socket.socket, client_id: str) -> None:
        self.sock = sock
        self.client_id = client_id
        self.lock = threading.Lock()
        self.open = True

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        with self.lock:
            if not self.open:
                return
            try:
                self.sock.sendall(head + payload)
            except OSError:
                self.open = False

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(0x1, json.dumps(message).encode())

    def close(self) -> None:
        self.send(0x8, struct.pack(">H", 1000))
        with self.lock:
            self.open = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class WebSocketHandler(_Handler):
    """The base handler, plus a WebSocket upgrade on ``GET /ws``."""

    def do_GET(self) -> None:
        """Upgrade ``/ws`` requests; serve the rest as HTTP."""
        if urlsplit(self.path).path == "/ws" and "websocket" in self.headers.get("upgrade", ""):
            self._websocket()
        else:
            self._serve()

    def _websocket(self) -> None:
        key = self.headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        client_id = parse_qs(urlsplit(self.path).query).get("clientId", [""])[0] or uuid.uuid4().hex
        ws = WebSocket(self.connection, client_id)
        emulator = cast(_Sockets, self.emulator)  # an emulator that pushes events
        emulator._connected(ws)
        try:
            self._read_frames(ws)
        finally:
            emulator._disconnected(ws)

    def _read_frames(self, ws: WebSocket) -> None:
        read = self.rfile.read
        while ws.open:
            try:
                head = read(2)
            except OSError:
                return
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", read(8))[0]
            mask = read(4) if head[1] & 0x80 else b"\x00\x00\x00\x00"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read(length)))
            if opcode == 0x8:  # close: answer it, then the connection ends
                ws.send(0x8, payload[:2])
                return
            if opcode == 0x9:
                ws.send(0xA, payload)
