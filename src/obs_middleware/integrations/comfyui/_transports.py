"""Where ComfyUI prompts are seen: the client layer (comfy-api-simplified) and, for any client,
the protocol: ``POST /prompt`` and ``GET /history/<id>`` through requests, httpx or aiohttp, and
WebSocket messages through websockets or aiohttp. The wrappers ``__init__`` patches in."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from .._ai import AICall, ai_call, current_call, safe
from . import _tracking
from ._tracking import finish, on_history, on_prompt_reply, on_ws, prompts
from ._workflow import model, record_workflow, workflow

__all__ = [
    "aiohttp_request",
    "aiohttp_ws_receive",
    "httpx_send",
    "httpx_send_async",
    "queue_prompt_and_wait",
    "requests_send",
    "ws_recv",
    "ws_recv_async",
]


# -- the client layer ----------------------------------------------------------------------------


async def queue_prompt_and_wait(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    workflow = args[0] if args else kwargs.get("prompt")
    with ai_call("comfyui", "prompt", modality="image") as call:
        if isinstance(workflow, dict):
            safe(record_workflow, call, workflow)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            safe(_release, call, exc)
            raise
        safe(_release, call, None)
        safe(_record_client_result, call, result)
        return result


def _release(call: AICall, exc: BaseException | None) -> None:
    """End what the prompts of a client call left open (their job) as the call returns."""
    with _tracking.lock:
        for tracked in [t for t in prompts.values() if t.call is call]:
            job_ = tracked.job
            if exc is not None and job_ is not None and job_.span.status == "ok":
                job_.span.record_exception(exc)
            finish(tracked, None)


def _record_client_result(call: AICall, result: Any) -> None:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list) and result[1]:
        call.attrs["ai.output_bytes"] = sum(len(b) for b in result[1] if isinstance(b, bytes))


# -- the protocol layer: HTTP clients ------------------------------------------------------------


def _candidate(method: Any) -> bool:
    """The hot-path filter for every HTTP request: a POST, or a GET while prompts are tracked."""
    return method == "POST" or (method == "GET" and bool(prompts))


def _kind(method: str, url: Any) -> str | None:
    """``"prompt"``, ``"history"`` or None, from the method and URL path."""
    if method not in ("POST", "GET"):
        return None
    path = str(url).split("?", 1)[0]
    if method == "POST":
        return "prompt" if path.endswith("/prompt") else None
    return "history" if "/history/" in path else None


class _Exchange:
    """One ``POST /prompt`` or ``GET /history/<id>`` seen by an HTTP client hook."""

    __slots__ = ("call", "kind", "owned", "url", "workflow")

    def __init__(self, kind: str, url: Any, body: Any) -> None:
        self.kind = kind
        self.url = url
        self.call: AICall | None = None
        self.workflow: dict[str, Any] | None = None
        self.owned = False
        if kind == "prompt":
            self.workflow = workflow(body)
            if self.workflow is None:
                return
            self.call = current_call("comfyui")
            if self.call is None:  # no client-layer span: this hook owns the prompt's span
                self.call = ai_call("comfyui", "prompt", model(self.workflow), modality="image")
                self.owned = True

    @property
    def relevant(self) -> bool:
        return self.kind == "history" or self.call is not None

    def start(self) -> None:
        if self.owned and self.call is not None and self.workflow is not None:
            self.call.__enter__()
            record_workflow(self.call, self.workflow)

    def end(self, status: int, reply: Any) -> None:
        if self.call is not None and self.workflow is not None:
            on_prompt_reply(self.call, self.workflow, status, reply, self.owned)
        elif self.kind == "history" and status == 200:
            path = str(self.url).split("?", 1)[0]
            on_history(path.rsplit("/history/", 1)[1].strip("/"), reply)

    def close(self, exc: BaseException | None) -> None:
        if self.owned and self.call is not None:
            self.call.__exit__(type(exc) if exc else None, exc, None)


def _exchange(method: Any, url: Any, body: Callable[[], Any]) -> _Exchange | None:
    kind = _kind(str(method).upper(), url)
    if kind is None:
        return None
    exchange = _Exchange(kind, url, body())
    return exchange if exchange.relevant else None


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _sync_send(exchange: _Exchange, send: Callable[[], Any], status: str) -> Any:
    """Run ``send()`` inside the exchange (the owned span, when the hook owns one)."""
    safe(exchange.start)
    try:
        response = send()
    except BaseException as exc:
        safe(exchange.close, exc)
        raise
    safe(exchange.end, getattr(response, status), safe(_json, response))
    safe(exchange.close, None)
    return response


async def _async_send(
    exchange: _Exchange,
    send: Callable[[], Awaitable[Any]],
    reply: Callable[[Any], Awaitable[tuple[int, Any]]],
) -> Any:
    safe(exchange.start)
    try:
        response = await send()
    except BaseException as exc:
        safe(exchange.close, exc)
        raise
    status, body = await reply(response)
    safe(exchange.end, status, body)
    safe(exchange.close, None)
    return response


def requests_send(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if kwargs.get("stream") or not _candidate(request.method):
        return wrapped(*args, **kwargs)
    exchange = safe(_exchange, request.method, request.url, lambda: request.body)
    if exchange is None:
        return wrapped(*args, **kwargs)
    return _sync_send(exchange, lambda: wrapped(*args, **kwargs), "status_code")


def _httpx_candidate(request: Any, kwargs: Any) -> bool:
    # Every httpx request of the app passes here: ``_kind`` on the decoded path, which httpx
    # keeps, rather than on the whole URL built as text.
    if kwargs.get("stream"):
        return False
    method = request.method
    if method != "POST" and (method != "GET" or not prompts):
        return False
    path: str = request.url.path
    return path.endswith("/prompt") if method == "POST" else "/history/" in path


def _httpx_exchange(request: Any) -> _Exchange | None:
    exchange: _Exchange | None = safe(
        _exchange, request.method, request.url.path, lambda: request.content
    )
    return exchange


def httpx_send(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    exchange = _httpx_exchange(request) if _httpx_candidate(request, kwargs) else None
    if exchange is None:
        return wrapped(*args, **kwargs)
    return _sync_send(exchange, lambda: wrapped(*args, **kwargs), "status_code")


async def _httpx_reply(response: Any) -> tuple[int, Any]:
    return response.status_code, safe(_json, response)


def httpx_send_async(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Awaitable[Any]:
    # A plain function: a request that is no ComfyUI exchange awaits the client's own
    # coroutine, with no frame of ours around it.
    request = args[0] if args else kwargs.get("request")
    exchange = _httpx_exchange(request) if _httpx_candidate(request, kwargs) else None
    if exchange is None:
        return wrapped(*args, **kwargs)
    return _async_send(exchange, lambda: wrapped(*args, **kwargs), _httpx_reply)


async def _aiohttp_reply(response: Any) -> tuple[int, Any]:
    """Status and JSON; aiohttp keeps the body read here for the caller's own ``.json()``."""
    try:
        return response.status, json.loads(await response.read())
    except Exception:
        return getattr(response, "status", 0), None


def aiohttp_request(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Awaitable[Any]:
    # A plain function, as ``httpx_send_async``.
    method = str(args[0] if args else kwargs.get("method", "")).upper()
    if not _candidate(method):
        return wrapped(*args, **kwargs)
    url = args[1] if len(args) > 1 else kwargs.get("str_or_url", "")
    body = kwargs.get("json") if kwargs.get("json") is not None else kwargs.get("data")
    exchange = safe(_exchange, method, url, lambda: body)
    if exchange is None:
        return wrapped(*args, **kwargs)
    return _async_send(exchange, lambda: wrapped(*args, **kwargs), _aiohttp_reply)


# -- the protocol layer: WebSocket clients -------------------------------------------------------


async def ws_recv_async(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    message = await wrapped(*args, **kwargs)
    if prompts:
        safe(on_ws, message)
    return message


def ws_recv(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    message = wrapped(*args, **kwargs)
    if prompts:
        safe(on_ws, message)
    return message


async def aiohttp_ws_receive(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    message = await wrapped(*args, **kwargs)
    if prompts:
        safe(on_ws, getattr(message, "data", None))
    return message
