"""AUTOMATIC1111 (stable-diffusion-webui) through ``webuiapi``: one ``ai.request`` per call.

Patches ``webuiapi.WebUIApi.txt2img``, ``img2img`` and ``extra_single_image`` (operation
``upscale``); the ControlNet and instruct-pix2pix helpers call these, so they are covered too.
Provider ``a1111``. Records the checkpoint asked for (``override_settings.sd_model_checkpoint``;
for an upscale the upscaler, ``upscaler_1``) as ``ai.model``, the one that ran (``info``'s
``sd_model_name``) as ``ai.response_model``, the sanitized prompt and scalar parameters, the
image count (the images generated, a grid not counted), ``ai.width``/``ai.height`` of the result,
and from the webui's ``info`` the seed it used (``ai.seed``: a request's ``-1`` resolved), the
steps (``ai.steps``) and the sampler (``ai.sampler``).

Cost: a self-hosted webui has no list price, so ``cost.unknown`` says so unless the pricing table
has an ``a1111`` entry for the checkpoint (per image, per megapixel or per GPU-second, e.g.
``PricingOptions(prices={"models": {"a1111": {"sdxl": {"per_image": {"*": 0.002}}}}})``).

A failed call (the webui's non-200 answer, which ``webuiapi`` raises as ``RuntimeError(status,
body)``, or a connection error) is an error span (``invalid_input`` for a 422) and the exception
reaches the caller unchanged. A ``use_async=True`` call returns a future, as the client does:
the span covers the request made in it and ends when it completes.

Not installed: ``patch()`` logs one warning and patches nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Mapping
from typing import Any

from .._core.internal import once
from .._core.patches import Patches
from ._ai import AICall, ai_call, safe
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("a1111").requirement

_log = logging.getLogger("obs_middleware")
_patches = Patches("a1111")
_PROVIDER = "a1111"
# Request fields kept as ``ai.input.<name>`` (the payload also carries images and script args).
_PARAMS = (
    "negative_prompt",
    "width",
    "height",
    "steps",
    "cfg_scale",
    "sampler_name",
    "scheduler",
    "seed",
    "batch_size",
    "n_iter",
    "denoising_strength",
    "enable_hr",
    "hr_scale",
    "upscaling_resize",
    "upscaler_1",
    "upscaler_2",
)
_INVALID_INPUT = frozenset({400, 404, 422})
# method name -> (operation, the method's positional parameters before its keywords)
_METHODS = {
    "txt2img": ("txt2img", ("enable_hr", "denoising_strength")),
    "img2img": ("img2img", ("images",)),
    "extra_single_image": ("upscale", ("image",)),
}


# -- extractors ----------------------------------------------------------------------------------
def _checkpoint(kwargs: Mapping[str, Any]) -> str | None:
    overrides = kwargs.get("override_settings")
    if isinstance(overrides, Mapping):
        name = overrides.get("sd_model_checkpoint")
        if isinstance(name, str) and name:
            return name.rsplit(".", 1)[0] if name.endswith((".safetensors", ".ckpt")) else name
    return None


def _inputs(call: AICall, operation: str, kwargs: Mapping[str, Any]) -> None:
    params = {k: kwargs[k] for k in _PARAMS if k in kwargs}
    if hasattr(params.get("upscaler_1"), "value"):  # webuiapi's Upscaler enum
        params["upscaler_1"] = params["upscaler_1"].value
    call.set_inputs(prompt=kwargs.get("prompt"), params=params)
    if operation != "upscale":
        call.set_image_params_from(kwargs)  # ai.image.*: what the request asked for
        width, height = kwargs.get("width", 512), kwargs.get("height", 512)
        if isinstance(width, int) and isinstance(height, int):
            call.set_images(None, width=width, height=height)


def _result(call: AICall, operation: str, result: Any) -> None:
    images = getattr(result, "images", None)
    images = images if isinstance(images, list) else []
    info = getattr(result, "info", None)
    attrs = call.attrs
    if isinstance(info, Mapping):
        call.set_response_model(info.get("sd_model_name"))
        for key, attr in (("seed", "ai.seed"), ("steps", "ai.steps")):
            value = info.get(key)
            if type(value) is int:
                attrs[attr] = value
        sampler = info.get("sampler_name")
        if isinstance(sampler, str) and sampler:
            attrs["ai.sampler"] = sampler
        made = info.get("infotexts") or info.get("all_seeds")
        # The webui adds a grid (and extensions their maps) to ``images``: count what was made.
        count = min(len(made), len(images)) if isinstance(made, list) and made else len(images)
    else:
        count = len(images)
    size = getattr(images[0], "size", None) if images else None
    if isinstance(size, tuple) and len(size) == 2:
        call.set_images(count, width=size[0], height=size[1])
    else:
        call.set_images(count)


def _error(call: AICall, exc: BaseException) -> None:
    # webuiapi raises RuntimeError(status_code, body) for any answer but 200.
    status = exc.args[0] if isinstance(exc, RuntimeError) and exc.args else None
    if type(status) is int:
        call.attrs["ai.http_status"] = status
        if status in _INVALID_INPUT:
            call.span.status = "invalid_input"


def _call_args(method: str, args: Any, kwargs: Any) -> dict[str, Any]:
    named = dict(zip(_METHODS[method][1], args, strict=False))
    return {**named, **kwargs}


# -- wrappers ------------------------------------------------------------------------------------
def _open(method: str, instance: Any, args: Any, kwargs: Any) -> tuple[AICall, str, dict[str, Any]]:
    operation = _METHODS[method][0]
    given = safe(_call_args, method, args, kwargs) or {}
    upscaler = given.get("upscaler_1") if operation == "upscale" else None
    model = getattr(upscaler, "value", upscaler) if upscaler not in (None, "None") else None
    call = ai_call(
        _PROVIDER,
        operation,
        model if operation == "upscale" else _checkpoint(given),
        modality="image",
    )
    return call, operation, given


def _wrapper(method: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if kwargs.get("use_async"):
            return _async_call(method, wrapped, instance, args, kwargs)
        call, operation, given = _open(method, instance, args, kwargs)
        with call:
            safe(_inputs, call, operation, given)
            try:
                result = wrapped(*args, **kwargs)
            except Exception as exc:
                safe(_error, call, exc)
                raise
            safe(_result, call, operation, result)
            return result

    return wrapper


def _async_call(method: str, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # ``use_async=True``: the client schedules its aiohttp request and returns that future. We
    # return a future too, of a task that makes the client's call inside the span and awaits it.
    return asyncio.ensure_future(_awaited(method, wrapped, instance, args, kwargs))


async def _awaited(method: str, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call, operation, given = _open(method, instance, args, kwargs)
    with call:
        safe(_inputs, call, operation, given)
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            safe(_error, call, exc)
            raise
        safe(_result, call, operation, result)
        return result


def patch() -> None:
    """Instrument ``webuiapi.WebUIApi`` (idempotent); without webuiapi, warn once and skip."""
    if _patches:
        return
    if importlib.util.find_spec("webuiapi") is None:
        if once("a1111:missing"):
            _log.warning(
                "obs-middleware: not instrumenting a1111: webuiapi is not installed "
                "(pip install 'obs-middleware[a1111]')"
            )
        return
    for method in _METHODS:
        _patches.wrap("webuiapi.webuiapi", f"WebUIApi.{method}", _wrapper(method))


def unpatch() -> None:
    """Remove the ``webuiapi`` patches (idempotent)."""
    _patches.undo()
