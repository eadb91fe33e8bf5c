"""fal: one ``ai.request`` span per ``run``, ``subscribe``, ``submit``, ``stream`` and ``result``.

Patched: ``SyncClient``/``AsyncClient`` ``run``, ``subscribe``, ``submit``, ``stream`` (a
stream: the span ends with it) and ``result``, and ``SyncRequestHandle``/``AsyncRequestHandle``
``get`` (``handle.get()`` is a ``result``). ``fal_client.run`` and the other module aliases are
bound methods captured at import: they are re-bound to the patched methods (and restored by
``unpatch``); a reference taken before ``instrument_all()`` stays untraced.

Nested entry points (``subscribe`` → ``submit`` → ``handle.get``, ``result`` → ``handle.get``)
enrich the outer span instead of opening another, so ``subscribe`` carries ``ai.request_id``
(``subscribe(client_timeout=...)`` runs in fal's thread pool, which is given the caller's context).
Hooks that only enrich the current call: ``_BaseRequestHandle._parse_status`` (queue position,
``ai.queue_ms`` from submit to the first ``IN_PROGRESS``, ``ai.run_ms`` from
``metrics.inference_time``, a request that completed with an error) and the response headers
(``_maybe_retry_request``, ``handle_response_headers``): ``x-fal-request-id`` and
``x-fal-billable-units``, which the SDK discards. Cost: billable units x the endpoint's unit
price (``ai.model`` is the endpoint id, e.g. ``fal-ai/flux/dev``). Inputs: the arguments'
``prompt`` and scalar fields, sanitized; outputs: image count and size, ``ai.output_bytes``.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from .._core.forks import renew_after_fork
from .._core.patches import Patches
from ._ai import AICall, ai_call, current_call, safe
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("fal").requirement

_lock = threading.Lock()
renew_after_fork(globals(), "_lock", threading.Lock)
_MAX_REQUESTS = 1024
# request_id -> (endpoint id, submit time): handle.get() of a request submitted by an earlier
# call names its model and measures its queue time.
_submitted: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

_ALIASES = {
    "run": ("sync_client", "run"),
    "subscribe": ("sync_client", "subscribe"),
    "submit": ("sync_client", "submit"),
    "result": ("sync_client", "result"),
    "stream": ("sync_client", "stream"),
    "run_async": ("async_client", "run"),
    "subscribe_async": ("async_client", "subscribe"),
    "submit_async": ("async_client", "submit"),
    "result_async": ("async_client", "result"),
    "stream_async": ("async_client", "stream"),
}


class _Queue:
    """What the status polls of one call have shown so far."""

    __slots__ = ("position", "started", "submitted")

    def __init__(self) -> None:
        self.submitted = 0.0  # time.monotonic() when the submit answered
        self.position: int | None = None
        self.started = False


def _queue(call: AICall) -> _Queue:
    state = call.handle
    if not isinstance(state, _Queue):
        state = call.handle = _Queue()
    return state


_MODALITY = "image"  # every fal endpoint this module knows makes images


def _argument(args: Any, kwargs: Any, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


# -- entry points --------------------------------------------------------------------------------


def _start(call: AICall, operation: str, args: Any, kwargs: Any) -> None:
    if call.operation != operation:
        return  # an inner entry point: the outer one recorded the inputs
    if operation == "result":
        call.set_request_id(_argument(args, kwargs, 1, "request_id"))
        return
    arguments = _argument(args, kwargs, 1, "arguments")
    if isinstance(arguments, dict):
        call.set_inputs(None, arguments)
        call.set_image_params_from(arguments)
        size = arguments.get("image_size")
        if isinstance(size, dict):
            call.set_image_params(width=size.get("width"), height=size.get("height"))


def _finish(call: AICall, operation: str, result: Any) -> None:
    if operation == "submit":
        request_id = getattr(result, "request_id", None)
        call.set_request_id(request_id)
        submitted = _queue(call).submitted = time.monotonic()
        if request_id:
            with _lock:
                _submitted[request_id] = (call.attrs.get("ai.model"), submitted)
                while len(_submitted) > _MAX_REQUESTS:
                    _submitted.popitem(last=False)
    elif isinstance(result, dict):
        _record_result(call, result)


def _record_result(call: AICall, result: dict[str, Any]) -> None:
    images = result.get("images")
    if not isinstance(images, list):
        image = result.get("image")
        images = [image] if isinstance(image, dict) else None
    if images is not None:
        first = images[0] if images and isinstance(images[0], dict) else {}
        width, height = first.get("width"), first.get("height")
        call.set_images(
            len(images),
            width=width if isinstance(width, int) else None,
            height=height if isinstance(height, int) else None,
        )
    flagged = result.get("has_nsfw_concepts")
    if isinstance(flagged, list) and any(flagged):  # the safety checker blanked these images
        call.set_content_safety(flagged=sum(1 for f in flagged if f), categories=("nsfw",))
    timings = result.get("timings")
    if "ai.run_ms" not in call.attrs and isinstance(timings, dict):
        inference = timings.get("inference")
        if isinstance(inference, (int, float)):
            call.attrs["ai.run_ms"] = round(inference * 1000, 3)


def _sync_entry(operation: str) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        with ai_call(
            "fal", operation, _argument(args, kwargs, 0, "application"), modality=_MODALITY
        ) as call:
            safe(_start, call, operation, args, kwargs)
            result = wrapped(*args, **kwargs)
            safe(_finish, call, operation, result)
            return result

    return wrapper


def _async_entry(operation: str) -> Callable[..., Awaitable[Any]]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        with ai_call(
            "fal", operation, _argument(args, kwargs, 0, "application"), modality=_MODALITY
        ) as call:
            safe(_start, call, operation, args, kwargs)
            result = await wrapped(*args, **kwargs)
            safe(_finish, call, operation, result)
            return result

    return wrapper


def _stream(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Sync and async ``stream`` (generator functions: no HTTP until the first item)."""
    with ai_call(
        "fal", "stream", _argument(args, kwargs, 0, "application"), modality=_MODALITY
    ) as call:
        safe(_start, call, "stream", args, kwargs)
        return call.wrap_stream(wrapped(*args, **kwargs), _on_event, reenter=True)


def _on_event(call: AICall, event: Any) -> None:
    call.attrs["ai.stream_events"] = call.attrs.get("ai.stream_events", 0) + 1
    if isinstance(event, dict):
        _record_result(call, event)


def _start_get(call: AICall, handle: Any) -> None:
    if call.operation != "result":
        return  # subscribe's own wait: the submit already recorded the request
    request_id = getattr(handle, "request_id", None)
    if "ai.request_id" not in call.attrs:
        call.set_request_id(request_id)
    with _lock:
        endpoint, submitted = _submitted.get(request_id or "", (None, 0.0))
    if "ai.model" not in call.attrs:
        call.set_model(endpoint)
    _queue(call).submitted = submitted


def _handle_get(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    with ai_call("fal", "result", modality=_MODALITY) as call:
        safe(_start_get, call, instance)
        result = wrapped(*args, **kwargs)
        safe(_finish, call, "result", result)
        return result


async def _handle_get_async(
    wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    with ai_call("fal", "result", modality=_MODALITY) as call:
        safe(_start_get, call, instance)
        result = await wrapped(*args, **kwargs)
        safe(_finish, call, "result", result)
        return result


# -- enrichment ----------------------------------------------------------------------------------


def _parse_status(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    status = wrapped(*args, **kwargs)
    call = current_call("fal")
    if call is not None:
        safe(_on_status, call, status)
    return status


def _on_status(call: AICall, status: Any) -> None:
    kind = type(status).__name__
    state = _queue(call)
    if kind == "Queued":
        position = getattr(status, "position", None)
        if isinstance(position, int) and position != state.position:
            if state.position is None:
                call.attrs["ai.queue_position"] = position
            state.position = position
            call.event("fal.queued", position=position)
        return
    if not state.started and state.submitted:
        state.started = True
        waited = time.monotonic() - state.submitted
        if kind == "Completed":  # never seen running: the run time was part of the wait
            waited -= (getattr(status, "metrics", None) or {}).get("inference_time") or 0.0
        call.set_queue_ms(waited * 1000)
        call.event("fal.in_progress")
    if kind != "Completed":
        return
    inference = (getattr(status, "metrics", None) or {}).get("inference_time")
    if isinstance(inference, (int, float)):
        call.attrs["ai.run_ms"] = round(inference * 1000, 3)
    error = getattr(status, "error", None)
    if error:
        error_type = getattr(status, "error_type", None)
        call.attrs["ai.provider_error"] = error_type or "error"
        call.set_status("error", error_type=error_type or "FalRequestError", message=str(error))


def _on_headers(call: AICall, headers: Any) -> None:
    request_id = headers.get("x-fal-request-id")
    if request_id and "ai.request_id" not in call.attrs:
        call.set_request_id(request_id)
    units = headers.get("x-fal-billable-units")
    if units:
        with contextlib.suppress(ValueError):  # not a number: set_units drops it, counted
            units = float(units)
        call.set_units(units)


def _on_response(call: AICall, method: str, url: Any, response: Any) -> None:
    _on_headers(call, response.headers)
    path = str(url).split("?", 1)[0]
    is_result = method == "GET" and not path.endswith("/status")
    if is_result or (method == "POST" and call.operation == "run"):
        call.attrs["ai.output_bytes"] = len(response.content)


def _on_http_error(call: AICall, exc: BaseException) -> None:
    headers = getattr(exc, "response_headers", None)
    if isinstance(headers, dict):
        _on_headers(call, {k.lower(): v for k, v in headers.items()})
    error_type = getattr(exc, "error_type", None)
    if error_type:
        call.attrs["ai.provider_error"] = error_type
    status_code = getattr(exc, "status_code", None)
    if isinstance(status_code, int):
        call.attrs["http.status_code"] = status_code


def _request(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    call = current_call("fal")
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except Exception as exc:
        safe(_on_http_error, call, exc)
        raise
    method, url = _argument(args, kwargs, 1, "method"), _argument(args, kwargs, 2, "url")
    safe(_on_response, call, method, url, response)
    return response


async def _request_async(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    call = current_call("fal")
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except Exception as exc:
        safe(_on_http_error, call, exc)
        raise
    method, url = _argument(args, kwargs, 1, "method"), _argument(args, kwargs, 2, "url")
    safe(_on_response, call, method, url, response)
    return response


def _response_headers(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    call = current_call("fal")
    if call is not None and args:
        safe(_on_headers, call, args[0])
    return wrapped(*args, **kwargs)


class _ContextExecutor:
    """fal's thread pool, carrying the caller's context into its threads.

    ``subscribe(client_timeout=...)`` runs there: its submit and polls then join the subscribe
    span instead of opening their own.
    """

    def __init__(self, executor: Any) -> None:
        self._executor = executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self._executor.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)


def _executor_property(original: Any) -> property:
    return property(lambda self: _ContextExecutor(original.__get__(self)))


# -- patching ------------------------------------------------------------------------------------


def _targets() -> list[tuple[str, Callable[..., Any]]]:
    targets: list[tuple[str, Callable[..., Any]]] = []
    for operation in ("run", "subscribe", "submit", "result"):
        targets.append((f"SyncClient.{operation}", _sync_entry(operation)))
        targets.append((f"AsyncClient.{operation}", _async_entry(operation)))
    return [
        *targets,
        ("SyncClient.stream", _stream),
        ("AsyncClient.stream", _stream),
        ("SyncRequestHandle.get", _handle_get),
        ("AsyncRequestHandle.get", _handle_get_async),
        ("_BaseRequestHandle._parse_status", _parse_status),
        ("_maybe_retry_request", _request),
        ("_async_maybe_retry_request", _request_async),
        ("handle_response_headers", _response_headers),
    ]


_patches = Patches("fal")


def patch() -> None:
    """Wrap the clients, request handles and response hooks; re-bind the aliases (idempotent)."""
    import fal_client  # noqa: PLC0415 - imported once fal_client itself is

    with _lock:
        if _patches:
            return
        for path, wrapper in _targets():
            _patches.wrap("fal_client.client", path, wrapper)
        executor = vars(fal_client.SyncClient).get("_executor")
        if isinstance(executor, property):
            _patches.set(fal_client.SyncClient, "_executor", _executor_property(executor))
        for alias, (holder, method) in _ALIASES.items():
            instance = getattr(fal_client, holder, None)
            if instance is not None and hasattr(fal_client, alias):
                _patches.set(fal_client, alias, getattr(instance, method))


def unpatch() -> None:
    """Restore the original methods and aliases (idempotent)."""
    with _lock:
        _patches.undo()
        _submitted.clear()
