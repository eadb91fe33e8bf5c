"""ComfyUI: one ``ai.request`` span per workflow run, whatever the client; job events from ``/ws``.

Two layers, one span per prompt:

- The client: ``comfy_api_simplified``'s ``ComfyApiWrapper.queue_prompt_and_wait`` (async; the
  sync ``queue_and_wait_images`` runs it through ``asyncio.run``) is the one client layer patched:
  the span covers posting the prompt and waiting for it.
- The protocol, for any client: ``POST /prompt`` seen through ``requests``, ``httpx`` or
  ``aiohttp`` (a JSON body with a ``prompt`` workflow, answered with a ``prompt_id``) opens the
  span when no client-layer span is active, and the prompt is then followed by its id: WebSocket
  messages (``websockets``, ``aiohttp``) and ``GET /history/<id>`` replies enrich it, and end it
  at ``execution_success``/``execution_error``/``execution_interrupted`` or a finished history
  entry. A rejected prompt (HTTP 400 with ``node_errors``) ends it as an error at once.

Recorded: ``ai.request_id`` (prompt id), ``ai.model`` (the checkpoint), the positive prompt and
sampler settings as inputs (sanitized), ``ai.queue_ms`` (post to ``execution_start``),
``ai.run_ms`` (``execution_start`` to its end, server timestamps), image count and the latent's
width x height, ``ai.preview_count`` (binary preview frames), ``ai.failed_node`` and
``ai.node_errors``. When WebSocket messages are seen, the prompt also drives ``obs.job``
(service type ``comfyui``, job id = prompt id): ``job.received``/``job.started`` at
``execution_start``, ``job.progress`` per sampler step, ``job.completed`` or ``job.failed``.
No cost table applies to a self-hosted server: run seconds are recorded as compute
(``ai.gpu_seconds``), so a ``per_gpu_second`` price for ``comfyui`` in ``PricingOptions`` prices it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import wrapt

from .._core import span as _span
from .._core.job import Job, job
from .._core.patches import Patches
from ._ai import AICall, ai_call, current_call, safe
from ._registry import version_in_range

__all__ = ["patch", "supported", "unpatch"]

_CLIENT_RANGE = ">=1.5,<2"
supported = "comfy-api-simplified" + _CLIENT_RANGE  # the client layer; the protocol: any client

_log = logging.getLogger("obs_middleware")
_lock = threading.RLock()
_MAX_TRACKED = 256
_SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name"}
_SAMPLER_PARAMS = ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")


# -- what one prompt looks like ------------------------------------------------------------------


def _workflow(body: Any) -> dict[str, Any] | None:
    """Return the workflow of a ``POST /prompt`` body, or None if it is not one."""
    if isinstance(body, (bytes, bytearray, str)):
        if not body or body[:1] not in (b"{", "{"):
            return None
        body = json.loads(body)
    if not isinstance(body, dict):
        return None
    workflow = body.get("prompt")
    return workflow if isinstance(workflow, dict) else None


def _nodes_of(workflow: dict[str, Any], class_types: Any) -> list[dict[str, Any]]:
    return [
        n
        for n in workflow.values()
        if isinstance(n, dict)
        and n.get("class_type") in class_types
        and isinstance(n.get("inputs"), dict)
    ]


def _model(workflow: dict[str, Any]) -> str | None:
    for node in _nodes_of(workflow, _LOADERS):
        name = node["inputs"].get(_LOADERS[node["class_type"]])
        if isinstance(name, str):
            return name
    return None


def _latent(workflow: dict[str, Any]) -> tuple[int | None, int | None]:
    for node in _nodes_of(workflow, ("EmptyLatentImage", "EmptySD3LatentImage")):
        width, height = node["inputs"].get("width"), node["inputs"].get("height")
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return None, None


def _record_workflow(call: AICall, workflow: dict[str, Any]) -> None:
    """Model, positive prompt and sampler settings as sanitized inputs."""
    call.set_model(_model(workflow))
    params: dict[str, Any] = {"nodes": len(workflow)}
    prompt = None
    for sampler in _nodes_of(workflow, _SAMPLERS):
        inputs = sampler["inputs"]
        params.update((k, inputs[k]) for k in _SAMPLER_PARAMS if k in inputs)
        positive = inputs.get("positive")
        if isinstance(positive, list) and positive:
            source = workflow.get(str(positive[0]))
            text = source.get("inputs", {}).get("text") if isinstance(source, dict) else None
            prompt = text if isinstance(text, str) else None
        break
    if prompt is None:
        for node in _nodes_of(workflow, ("CLIPTextEncode",)):
            if isinstance(node["inputs"].get("text"), str):
                prompt = node["inputs"]["text"]
                break
    width, height = _latent(workflow)
    if width and height:
        params["width"], params["height"] = width, height
    call.set_inputs(prompt, params)


class _Tracked:
    """One accepted prompt followed by its id until it ends."""

    __slots__ = (
        "call",
        "done",
        "failed",
        "height",
        "images",
        "job",
        "keep",
        "model",
        "posted",
        "posted_wall",
        "previews",
        "prompt_id",
        "started",
        "started_ms",
        "width",
    )

    def __init__(self, prompt_id: str, call: AICall, workflow: dict[str, Any]) -> None:
        self.prompt_id = prompt_id
        self.call = call
        self.keep: Any = None  # an owned call's stream handle: the call ends with it
        self.job: Job | None = None
        self.model = _model(workflow)
        self.width, self.height = _latent(workflow)
        self.posted = time.monotonic()
        self.posted_wall = time.time()
        self.started = 0.0
        self.started_ms: float | None = None
        self.images = 0
        self.previews = 0
        self.failed = False
        self.done = False


_tracked: OrderedDict[str, _Tracked] = OrderedDict()
_executing: list[_Tracked] = []  # the prompt the server runs now: binary previews are its


def _track(tracked: _Tracked) -> None:
    with _lock:
        _tracked[tracked.prompt_id] = tracked
        while len(_tracked) > _MAX_TRACKED:
            _, evicted = _tracked.popitem(last=False)
            _end_job(evicted)
            evicted.done = True  # an owned call ends ("gc") when its handle is collected
            evicted.keep = None


def _lookup(prompt_id: Any) -> _Tracked | None:
    tracked = _tracked.get(prompt_id) if isinstance(prompt_id, str) else None
    return None if tracked is None or tracked.done else tracked


# -- POST /prompt --------------------------------------------------------------------------------


def _on_prompt_reply(
    call: AICall, workflow: dict[str, Any], status: int, reply: Any, owned: bool
) -> None:
    if status == 200 and isinstance(reply, dict) and isinstance(reply.get("prompt_id"), str):
        tracked = _Tracked(reply["prompt_id"], call, workflow)
        call.set_request_id(tracked.prompt_id)
        if isinstance(reply.get("number"), int):
            call.attrs["ai.comfyui.number"] = reply["number"]
        if owned:
            tracked.keep = call.wrap_stream(_Open())
        _track(tracked)
        return
    call.attrs["http.status_code"] = status
    error = reply.get("error") if isinstance(reply, dict) else None
    node_errors = reply.get("node_errors") if isinstance(reply, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(kind, str):
        call.attrs["ai.provider_error"] = kind
    if isinstance(node_errors, dict) and node_errors:
        call.attrs["ai.node_errors"] = ", ".join(
            f"{node_id}:{entry.get('class_type')}:{(entry.get('errors') or [{}])[0].get('type')}"
            for node_id, entry in list(node_errors.items())[:8]
            if isinstance(entry, dict)
        )
    call.set_status(
        "error", error_type=kind or f"HTTP {status}", message=message or f"HTTP {status}"
    )


class _Open:
    """Stands for an owned call's "stream": the prompt, running until its end is seen."""

    def __iter__(self) -> _Open:
        return self

    def __next__(self) -> Any:
        raise StopIteration


# -- WebSocket messages --------------------------------------------------------------------------


def _on_ws(message: Any) -> None:
    if not _tracked:
        return
    if isinstance(message, (bytes, bytearray)):
        with _lock:
            if _executing and not _executing[0].done:
                _executing[0].previews += 1
        return
    # Only messages about a prompt are parsed (not status broadcasts, not other sockets' traffic).
    if not isinstance(message, str) or message[:1] != "{" or '"prompt_id"' not in message:
        return
    parsed = json.loads(message)
    data = parsed.get("data")
    if not isinstance(data, dict):
        return
    with _lock:
        tracked = _lookup(data.get("prompt_id"))
        if tracked is not None:
            _on_event(tracked, parsed.get("type"), data)


def _on_event(tracked: _Tracked, kind: Any, data: dict[str, Any]) -> None:
    if kind in ("execution_start", "executing", "progress", "executed") and tracked.job is None:
        _start_job(tracked, data)
    if kind == "execution_cached" and isinstance(data.get("nodes"), list):
        tracked.call.attrs["ai.cached_nodes"] = len(data["nodes"])
    elif kind == "progress" and tracked.job is not None:
        value, total = data.get("value"), data.get("max")
        if isinstance(value, int) and isinstance(total, int) and total > 0:
            tracked.job.progress(
                value / total, step=value, total=total, message=f"node {data.get('node')}"
            )
    elif kind == "executed":
        output = data.get("output")
        images = output.get("images") if isinstance(output, dict) else None
        if isinstance(images, list):
            tracked.images += len(images)
    elif kind == "execution_success":
        _finish(tracked, data.get("timestamp"))
    elif kind == "execution_error":
        _fail(tracked, data)
        _finish(tracked, data.get("timestamp"))
    elif kind == "execution_interrupted":
        tracked.call.set_status("cancelled", error_type="execution_interrupted")
        _finish(tracked, data.get("timestamp"))
    elif kind == "executing" and data.get("node") is None:
        _finish(tracked, None)


def _start_job(tracked: _Tracked, data: dict[str, Any]) -> None:
    tracked.started = time.monotonic()
    timestamp = data.get("timestamp")
    if isinstance(timestamp, (int, float)):
        tracked.started_ms = float(timestamp)
    tracked.call.set_queue_ms((tracked.started - tracked.posted) * 1000)
    _executing[:] = [tracked]
    queued_at = (_span.wall_anchor_ns + _span.clock_ns()) / 1e9 - (tracked.started - tracked.posted)
    started = job(
        tracked.prompt_id, service_type="comfyui", model=tracked.model, queued_at=queued_at
    )
    started.__enter__()
    started.span.deactivate()  # the job runs on the server: it is nobody's parent here
    tracked.job = started


def _fail(tracked: _Tracked, data: dict[str, Any]) -> None:
    tracked.failed = True
    exception_type = data.get("exception_type")
    node_type = data.get("node_type")
    if isinstance(node_type, str):
        tracked.call.attrs["ai.failed_node"] = f"{data.get('node_id')}:{node_type}"
    tracked.call.set_status(
        "error",
        error_type=exception_type if isinstance(exception_type, str) else "execution_error",
        message=str(data.get("exception_message") or "execution error"),
    )


def _finish(tracked: _Tracked, end_ms: Any) -> None:
    """Record what the prompt produced, end its job and (if ours) its span."""
    if tracked.done:
        return
    tracked.done = True
    call = tracked.call
    if tracked.images:
        call.set_images(tracked.images, width=tracked.width, height=tracked.height)
    if tracked.previews:
        call.attrs["ai.preview_count"] = tracked.previews
    if tracked.started_ms is not None and isinstance(end_ms, (int, float)):
        run_s = max(end_ms - tracked.started_ms, 0.0) / 1000
    elif tracked.started:
        run_s = time.monotonic() - tracked.started
    else:
        run_s = None
    if run_s is not None:
        call.attrs["ai.run_ms"] = round(run_s * 1000, 3)
        call.set_compute(round(run_s, 6))
    _end_job(tracked)
    _tracked.pop(tracked.prompt_id, None)
    if _executing and _executing[0] is tracked:
        _executing.clear()
    keep, tracked.keep = tracked.keep, None
    if keep is not None:  # held until the call ended: dropping it first would end it as "gc"
        call.end_stream("done")


def _end_job(tracked: _Tracked) -> None:
    started, tracked.job = tracked.job, None
    if started is None:
        return
    span = tracked.call.span
    if span.status != "ok":
        started.span.status = span.status
        started.span.error_type = span.error_type
        started.span.error_message = span.error_message
    started.__exit__(None, None, None)


# -- GET /history/<id> ---------------------------------------------------------------------------


def _on_history(prompt_id: str, reply: Any) -> None:
    entry = reply.get(prompt_id) if isinstance(reply, dict) else None
    if not isinstance(entry, dict):
        return
    with _lock:
        tracked = _lookup(prompt_id)
        if tracked is None:
            return
        raw = entry.get("status")
        status: dict[str, Any] = raw if isinstance(raw, dict) else {}
        outputs = entry.get("outputs")
        if isinstance(outputs, dict) and not tracked.images:
            tracked.images = sum(
                len(o.get("images") or ()) for o in outputs.values() if isinstance(o, dict)
            )
        end_ms = None
        for message in status.get("messages") or ():
            if not (
                isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)
            ):
                continue
            kind, data = message
            timestamp = data.get("timestamp")
            if kind == "execution_start" and tracked.started_ms is None and timestamp:
                tracked.started_ms = float(timestamp)
                tracked.call.set_queue_ms(timestamp - tracked.posted_wall * 1000)
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                end_ms = timestamp
                if kind == "execution_error" and not tracked.failed:
                    _fail(tracked, data)
        if status.get("completed") or status.get("status_str") in ("success", "error"):
            _finish(tracked, end_ms)


# -- the client layer ----------------------------------------------------------------------------


async def _queue_prompt_and_wait(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    workflow = args[0] if args else kwargs.get("prompt")
    with ai_call("comfyui", "prompt") as call:
        if isinstance(workflow, dict):
            safe(_record_workflow, call, workflow)
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
    with _lock:
        for tracked in [t for t in _tracked.values() if t.call is call]:
            job_ = tracked.job
            if exc is not None and job_ is not None and job_.span.status == "ok":
                job_.span.record_exception(exc)
            _finish(tracked, None)


def _record_client_result(call: AICall, result: Any) -> None:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list) and result[1]:
        call.attrs["ai.output_bytes"] = sum(len(b) for b in result[1] if isinstance(b, bytes))


# -- the protocol layer: HTTP clients ------------------------------------------------------------


def _candidate(method: Any) -> bool:
    """The hot-path filter for every HTTP request: a POST, or a GET while prompts are tracked."""
    return method == "POST" or (method == "GET" and bool(_tracked))


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
            self.workflow = _workflow(body)
            if self.workflow is None:
                return
            self.call = current_call("comfyui")
            if self.call is None:  # no client-layer span: this hook owns the prompt's span
                self.call = ai_call("comfyui", "prompt", _model(self.workflow))
                self.owned = True

    @property
    def relevant(self) -> bool:
        return self.kind == "history" or self.call is not None

    def start(self) -> None:
        if self.owned and self.call is not None and self.workflow is not None:
            self.call.__enter__()
            _record_workflow(self.call, self.workflow)

    def end(self, status: int, reply: Any) -> None:
        if self.call is not None and self.workflow is not None:
            _on_prompt_reply(self.call, self.workflow, status, reply, self.owned)
        elif self.kind == "history" and status == 200:
            path = str(self.url).split("?", 1)[0]
            _on_history(path.rsplit("/history/", 1)[1].strip("/"), reply)

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


def _sync_send(exchange: _Exchange | None, send: Callable[[], Any], status: str) -> Any:
    """Run ``send()`` inside the exchange (the owned span, when the hook owns one)."""
    if exchange is None:
        return send()
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
    exchange: _Exchange | None,
    send: Callable[[], Awaitable[Any]],
    reply: Callable[[Any], Awaitable[tuple[int, Any]]],
) -> Any:
    if exchange is None:
        return await send()
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


def _requests_send(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if kwargs.get("stream") or not _candidate(request.method):
        return wrapped(*args, **kwargs)
    exchange = safe(_exchange, request.method, request.url, lambda: request.body)
    return _sync_send(exchange, lambda: wrapped(*args, **kwargs), "status_code")


def _httpx_send(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if kwargs.get("stream") or not _candidate(request.method):
        return wrapped(*args, **kwargs)
    exchange = safe(_exchange, request.method, request.url, lambda: request.content)
    return _sync_send(exchange, lambda: wrapped(*args, **kwargs), "status_code")


async def _httpx_reply(response: Any) -> tuple[int, Any]:
    return response.status_code, safe(_json, response)


async def _httpx_send_async(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    request = args[0] if args else kwargs.get("request")
    if kwargs.get("stream") or not _candidate(request.method):
        return await wrapped(*args, **kwargs)
    exchange = safe(_exchange, request.method, request.url, lambda: request.content)
    return await _async_send(exchange, lambda: wrapped(*args, **kwargs), _httpx_reply)


async def _aiohttp_reply(response: Any) -> tuple[int, Any]:
    """Status and JSON; aiohttp keeps the body read here for the caller's own ``.json()``."""
    try:
        return response.status, json.loads(await response.read())
    except Exception:
        return getattr(response, "status", 0), None


async def _aiohttp_request(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    method = str(args[0] if args else kwargs.get("method", "")).upper()
    if not _candidate(method):
        return await wrapped(*args, **kwargs)
    url = args[1] if len(args) > 1 else kwargs.get("str_or_url", "")
    body = kwargs.get("json") if kwargs.get("json") is not None else kwargs.get("data")
    exchange = safe(_exchange, method, url, lambda: body)
    return await _async_send(exchange, lambda: wrapped(*args, **kwargs), _aiohttp_reply)


# -- the protocol layer: WebSocket clients -------------------------------------------------------


async def _ws_recv_async(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    message = await wrapped(*args, **kwargs)
    if _tracked:
        safe(_on_ws, message)
    return message


def _ws_recv(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    message = wrapped(*args, **kwargs)
    if _tracked:
        safe(_on_ws, message)
    return message


async def _aiohttp_ws_receive(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    message = await wrapped(*args, **kwargs)
    if _tracked:
        safe(_on_ws, getattr(message, "data", None))
    return message


# -- patching ------------------------------------------------------------------------------------

# Module whose import makes a layer patchable -> ("Class.method", wrapper).
_LAYERS: dict[str, tuple[tuple[str, Callable[..., Any]], ...]] = {
    "comfy_api_simplified.comfy_api_wrapper": (
        ("ComfyApiWrapper.queue_prompt_and_wait", _queue_prompt_and_wait),
    ),
    "requests.sessions": (("Session.send", _requests_send),),
    "httpx": (("Client.send", _httpx_send), ("AsyncClient.send", _httpx_send_async)),
    "aiohttp.client": (("ClientSession._request", _aiohttp_request),),
    "aiohttp.client_ws": (("ClientWebSocketResponse.receive", _aiohttp_ws_receive),),
    "websockets.asyncio.connection": (("Connection.recv", _ws_recv_async),),
    "websockets.sync.connection": (("Connection.recv", _ws_recv),),
}
_CLIENT = "comfy_api_simplified.comfy_api_wrapper"
_patches = Patches("comfyui")
_applied: set[str] = set()
_hooked: set[str] = set()
_enabled = False


def _client_supported() -> bool:
    try:
        version = importlib.metadata.version("comfy-api-simplified")
    except importlib.metadata.PackageNotFoundError:
        return True
    if version_in_range(version, _CLIENT_RANGE):
        return True
    _log.warning(
        "obs-middleware: comfy-api-simplified %s is outside %s: traced at the protocol level only",
        version,
        supported,
    )
    return False


def _apply(module_name: str) -> None:
    with _lock:
        if not _enabled or module_name in _applied or module_name not in sys.modules:
            return
        _applied.add(module_name)
        if module_name == _CLIENT and not _client_supported():
            return
        for path, wrapper in _LAYERS[module_name]:
            _patches.wrap(module_name, path, wrapper)


def _on_import(module_name: str) -> Callable[[Any], None]:
    def hook(_module: Any) -> None:
        _apply(module_name)

    return hook


def patch() -> None:
    """Patch the layers already imported; hook the others to be patched when imported."""
    global _enabled
    with _lock:
        if _enabled:
            return
        _enabled = True
        for module_name in _LAYERS:
            if module_name in sys.modules:
                _apply(module_name)
            elif module_name not in _hooked:
                _hooked.add(module_name)
                wrapt.register_post_import_hook(_on_import(module_name), module_name)


def unpatch() -> None:
    """Restore every patched method; pending import hooks do nothing afterwards (idempotent)."""
    global _enabled
    with _lock:
        _enabled = False
        _patches.undo()
        _applied.clear()
        _tracked.clear()
        _executing.clear()
