"""fal emulator: the synchronous run API, the queue API and SSE streams, on one loopback port.

``fal_client`` builds its URLs from two module constants fixed to ``https://`` at import;
``FalEmulator.use()`` points them here for a block (and sets a placeholder ``FAL_KEY``)::

    with FalEmulator(queue_s=0.05, run_s=0.05) as emu, emu.use():
        fal_client.subscribe("fal-ai/flux/dev", {"prompt": "a cat"}, with_logs=True)

Routes: ``POST /run/<app>[/<path>]`` (answers at once), ``POST /run/<app>/stream`` (SSE),
``POST /queue/<app>[/<path>]`` (enqueue), ``GET /queue/<owner>/<alias>/requests/<id>/status``
(``IN_QUEUE`` for ``queue_s``, its ``queue_position`` one lower at each poll; ``IN_PROGRESS``
with logs for ``run_s``; then ``COMPLETED`` with ``metrics.inference_time``),
``GET …/requests/<id>`` (the result), ``PUT …/requests/<id>/cancel``, ``GET /files/<name>``
(output images). Results and run replies carry ``x-fal-request-id`` and
``x-fal-billable-units`` (``billable_units``, else images x whole megapixels). Default apps make
``num_images`` images of ``image_size``; ``app(id, fn)`` installs your own
``fn(arguments) -> result``. Failures: ``fail(path, status, body)`` (HTTP, from the base class)
and ``fail_request(app, detail, error_type=..., status=...)`` (queued requests that fail).
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import Emulator, Reply, Request, serve, sse

__all__ = ["IMAGE_SIZES", "FalEmulator", "png"]

IMAGE_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
_NAMESPACES = ("workflows", "comfy")  # app ids with a leading namespace (fal_client.APP_NAMESPACES)


def png(width: int, height: int) -> bytes:
    """Return a valid grey PNG of ``width`` x ``height`` (cheap: zlib of zero rows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" * ((width + 1) * height), 1)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@dataclass
class _Queued:
    request_id: str
    app: str
    arguments: Any
    submitted: float
    logs: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    cancelled: bool = False
    result: Any = None


def _split_app(path: str) -> tuple[str, str]:
    """``owner/alias[/sub/path]`` (or ``ns/owner/alias/...``) -> (endpoint id, namespace prefix)."""
    path = path.strip("/")
    namespace = path.split("/", 1)[0]
    return path, namespace + "/" if namespace in _NAMESPACES else ""


def _lookup(table: dict[str, Any], endpoint: str) -> Any:
    """Return the entry for ``endpoint`` or its longest ``owner/alias/...`` prefix."""
    parts = endpoint.split("/")
    for n in range(len(parts), 1, -1):
        found = table.get("/".join(parts[:n]))
        if found is not None:
            return found
    return None


class FalEmulator(Emulator):
    """fal's run and queue APIs (see the module docstring); extra knobs as in ``Emulator``."""

    name = "fal"

    def __init__(
        self,
        *,
        queue_s: float = 0.0,
        run_s: float = 0.0,
        queue_position: int = 3,
        billable_units: float | None = None,
        stream_events: int = 3,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        self.queue_s = queue_s
        self.run_s = run_s
        self.queue_position = queue_position
        self.billable_units = billable_units
        self.stream_events = stream_events
        self._apps: dict[str, Callable[[Any], Any]] = {}
        self._request_failures: dict[str, tuple[int, str, str]] = {}
        self._queued: dict[str, _Queued] = {}
        self._ids = itertools.count(1)
        self._queue_lock = threading.Lock()

    # -- knobs -----------------------------------------------------------------------------------
    @property
    def run_url(self) -> str:
        """What ``fal_client.client.RUN_URL_FORMAT`` must be."""
        return self.url + "/run/"

    @property
    def queue_url(self) -> str:
        """What ``fal_client.client.QUEUE_URL_FORMAT`` must be."""
        return self.url + "/queue/"

    @contextmanager
    def use(self) -> Iterator[FalEmulator]:
        """Point ``fal_client`` here for a block: URL constants and ``FAL_KEY``, restored after."""
        from fal_client import client  # noqa: PLC0415 - only when pointing the SDK here

        saved = (client.RUN_URL_FORMAT, client.QUEUE_URL_FORMAT, os.environ.get("FAL_KEY"))
        client.RUN_URL_FORMAT, client.QUEUE_URL_FORMAT = self.run_url, self.queue_url
        os.environ["FAL_KEY"] = "emulator-key-id:emulator-key-secret"
        try:
            yield self
        finally:
            client.RUN_URL_FORMAT, client.QUEUE_URL_FORMAT = saved[0], saved[1]
            if saved[2] is None:
                os.environ.pop("FAL_KEY", None)
            else:
                os.environ["FAL_KEY"] = saved[2]

    def app(self, app_id: str, fn: Callable[[Any], Any]) -> None:
        """Answer ``app_id`` (and its sub-paths) with ``fn(arguments)``; it may raise to fail."""
        self._apps[app_id] = fn

    def fail_request(
        self, app_id: str, detail: str, *, error_type: str = "internal_error", status: int = 500
    ) -> None:
        """Queued requests to ``app_id`` run, then complete with this error."""
        self._request_failures[app_id] = (status, detail, error_type)

    # -- routes ----------------------------------------------------------------------------------
    def route(self, request: Request) -> Reply:
        """Dispatch by path prefix."""
        path = request.path
        if path.startswith("/run/"):
            app, _prefix = _split_app(path[5:])
            if app.endswith("/stream") and request.method == "POST":
                return self._stream(app.removesuffix("/stream"), request.json)
            return self._run(app, request.json)
        if path.startswith("/queue/"):
            return self._queue(request, path[7:])
        if path.startswith("/files/") and request.method == "GET":
            width, _, height = path.rsplit("-", 1)[-1].removesuffix(".png").partition("x")
            return Reply(body=png(int(width), int(height)), content_type="image/png")
        return super().route(request)

    def _next_id(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._ids):012d}"

    def _result(self, app: str, arguments: Any, request_id: str) -> Any:
        handler = _lookup(self._apps, app)
        if handler is not None:
            return handler(arguments)
        args = arguments if isinstance(arguments, dict) else {}
        size = args.get("image_size", "landscape_4_3")
        if isinstance(size, dict):
            width, height = int(size.get("width", 1024)), int(size.get("height", 768))
        else:
            width, height = IMAGE_SIZES.get(str(size), (1024, 768))
        count = int(args.get("num_images", 1))
        return {
            "images": [
                {
                    "url": f"{self.url}/files/{request_id}-{i}-{width}x{height}.png",
                    "width": width,
                    "height": height,
                    "content_type": "image/png",
                }
                for i in range(count)
            ],
            "timings": {"inference": self.run_s},
            "seed": 42,
            "has_nsfw_concepts": [False] * count,
            "prompt": args.get("prompt", ""),
        }

    def _units(self, result: Any) -> str:
        if self.billable_units is not None:
            return f"{self.billable_units:g}"
        images = result.get("images") if isinstance(result, dict) else None
        if not isinstance(images, list) or not images:
            return "1"
        megapixels = sum(
            math.ceil(int(i.get("width", 0)) * int(i.get("height", 0)) / 1e6) or 1 for i in images
        )
        return str(megapixels)

    def _headers(self, request_id: str, result: Any = None) -> dict[str, str]:
        headers = {"x-fal-request-id": request_id}
        if result is not None:
            headers["x-fal-billable-units"] = self._units(result)
        return headers

    def _run(self, app: str, arguments: Any) -> Reply:
        request_id = self._next_id()
        if self.run_s:
            time.sleep(self.run_s)
        try:
            result = self._result(app, arguments, request_id)
        except Exception as exc:
            return Reply(500, json={"detail": str(exc)}, headers=self._headers(request_id))
        return Reply(json=result, headers=self._headers(request_id, result))

    def _stream(self, app: str, arguments: Any) -> Reply:
        request_id = self._next_id()
        result = self._result(app, arguments, request_id)

        def events() -> Iterator[bytes]:
            steps = max(self.stream_events - 1, 0)
            for step in range(steps):
                yield sse({"status": "IN_PROGRESS", "step": step + 1, "total": steps})
            yield sse(result)

        return Reply(events=events(), headers=self._headers(request_id, result))

    # -- queue -----------------------------------------------------------------------------------
    def _queue(self, request: Request, path: str) -> Reply:
        parts = path.strip("/").split("/")
        if "requests" in parts:
            return self._request_route(request, parts)
        if request.method != "POST":
            return super().route(request)
        app, prefix = _split_app(path)
        request_id = self._next_id()
        queued = _Queued(request_id, app, request.json, time.monotonic())
        with self._queue_lock:
            self._queued[request_id] = queued
        # As fal does: the queue URLs name owner/alias only, whatever the sub-path.
        owner_alias = "/".join(app.removeprefix(prefix).split("/")[:2])
        base = f"{self.queue_url}{prefix}{owner_alias}/requests/{request_id}"
        return Reply(
            json={
                "request_id": request_id,
                "response_url": base,
                "status_url": base + "/status",
                "cancel_url": base + "/cancel",
                "queue_position": self.queue_position,
            },
            headers=self._headers(request_id),
        )

    def _request_route(self, request: Request, parts: list[str]) -> Reply:
        at = parts.index("requests")
        request_id = parts[at + 1] if len(parts) > at + 1 else ""
        with self._queue_lock:
            queued = self._queued.get(request_id)
        if queued is None:
            return Reply(404, json={"detail": f"Request {request_id} not found"})
        tail = parts[at + 2 :]
        if tail == ["status"] and request.method == "GET":
            base = self.queue_url + "/".join(parts[: at + 2])
            return self._status(queued, base, request.query.get("logs", [""])[0] in ("1", "true"))
        if tail == ["cancel"] and request.method == "PUT":
            queued.cancelled = True
            return Reply(202, json={"status": "CANCELLATION_REQUESTED"})
        if not tail and request.method == "GET":
            return self._response(queued)
        return super().route(request)

    def _status(self, queued: _Queued, base: str, with_logs: bool) -> Reply:
        elapsed = time.monotonic() - queued.submitted
        body: dict[str, Any] = {"request_id": queued.request_id, "response_url": base}
        if elapsed < self.queue_s:
            position = max(self.queue_position - queued.polls, 0)
            queued.polls += 1
            body.update(status="IN_QUEUE", queue_position=position)
        elif elapsed < self.queue_s + self.run_s:
            step = len(queued.logs) + 1
            queued.logs.append({"message": f"step {step}", "level": "INFO", "source": "user"})
            body.update(status="IN_PROGRESS", logs=list(queued.logs) if with_logs else None)
        else:
            body.update(
                status="COMPLETED",
                logs=list(queued.logs) if with_logs else None,
                metrics={"inference_time": self.run_s},
            )
            failure = _lookup(self._request_failures, queued.app)
            if failure is not None:
                body.update(error=failure[1], error_type=failure[2])
        return Reply(json=body, headers=self._headers(queued.request_id))

    def _response(self, queued: _Queued) -> Reply:
        if time.monotonic() - queued.submitted < self.queue_s + self.run_s:
            return Reply(400, json={"detail": "Request is still in progress"})
        failure = _lookup(self._request_failures, queued.app)
        if failure is not None:
            status, detail, error_type = failure
            return Reply(
                status,
                json={"detail": detail, "error_type": error_type},
                headers=self._headers(queued.request_id),
            )
        if queued.result is None:
            try:
                queued.result = self._result(queued.app, queued.arguments, queued.request_id)
            except Exception as exc:
                return Reply(
                    500, json={"detail": str(exc)}, headers=self._headers(queued.request_id)
                )
        return Reply(json=queued.result, headers=self._headers(queued.request_id, queued.result))


if __name__ == "__main__":
    serve(FalEmulator())
