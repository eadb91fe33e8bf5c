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

This package: ``patch``/``unpatch`` here; ``_transports`` (the wrappers patched into each client
and transport), ``_tracking`` (a prompt followed by its id to its end), ``_workflow`` (what a
prompt's workflow says).
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Callable
from typing import Any

from ..._core.patches import Patches, module_exists
from .._registry import lookup, version_in_range
from . import _tracking
from ._tracking import executing, prompts
from ._transports import (
    aiohttp_request,
    aiohttp_ws_receive,
    httpx_send,
    httpx_send_async,
    queue_prompt_and_wait,
    requests_send,
    ws_recv,
    ws_recv_async,
)

__all__ = ["patch", "supported", "unpatch"]

_ROW = lookup("comfyui")
supported = _ROW.requirement  # the client layer; the protocol: any client

_log = logging.getLogger("obs_middleware")

# Module whose import makes a layer patchable -> ("Class.method", wrapper).
_LAYERS: dict[str, tuple[tuple[str, Callable[..., Any]], ...]] = {
    "comfy_api_simplified.comfy_api_wrapper": (
        ("ComfyApiWrapper.queue_prompt_and_wait", queue_prompt_and_wait),
    ),
    "requests.sessions": (("Session.send", requests_send),),
    "httpx": (("Client.send", httpx_send), ("AsyncClient.send", httpx_send_async)),
    "aiohttp.client": (("ClientSession._request", aiohttp_request),),
    "aiohttp.client_ws": (("ClientWebSocketResponse.receive", aiohttp_ws_receive),),
    "websockets.asyncio.connection": (("Connection.recv", ws_recv_async),),
    "websockets.sync.connection": (("Connection.recv", ws_recv),),
}
_CLIENT = "comfy_api_simplified.comfy_api_wrapper"
_patches = Patches("comfyui")


def _client_supported() -> bool:
    if _ROW.client is None:
        return True
    distribution, spec = _ROW.client
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return True
    if version_in_range(version, spec):
        return True
    _log.warning(
        "obs-middleware: %s %s is outside %s: traced at the protocol level only",
        distribution,
        version,
        supported,
    )
    return False


def patch() -> None:
    """Patch the layers already imported; the others are patched when imported (idempotent).

    A transport that is not installed is skipped without a word: any one of them is enough.
    """
    with _tracking.lock:
        if _patches:
            return
        for module_name, layers in _LAYERS.items():
            if module_name not in sys.modules and not module_exists(module_name):
                continue
            if module_name == _CLIENT and not _client_supported():
                continue
            for path, wrapper in layers:
                _patches.wrap(module_name, path, wrapper)


def unpatch() -> None:
    """Restore every patched method; pending import hooks lapse (idempotent)."""
    with _tracking.lock:
        _patches.undo()
        prompts.clear()
        executing.clear()
