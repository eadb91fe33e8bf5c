"""OpenAI: one ``ai.request`` span per chat completion, response, image or embedding call.

Patches the resource methods (sync and async): ``chat.completions.create``/``parse``,
``completions.create``, ``responses.create``/``parse``, ``images.generate``/``edit``/
``create_variation``, ``embeddings.create``, and the ``.stream()`` managers of chat and responses
(whose inner ``create`` joins the manager's span: one span, not two). Records the model asked
for (``ai.model``: metrics and reports group by it, failed calls included) and the snapshot that
answered (``ai.response_model``, e.g. ``gpt-4o-mini-2024-07-18``: priced by it when the table
has a price for it), ``x-request-id`` (``ai.request_id``), response id, sanitized prompt and
scalar parameters, token usage (streams: from the final usage chunk, sent when
``stream_options={"include_usage": True}``), image count/size/quality, and cost. Streams end
their span when exhausted, closed or collected. HTTP errors set ``ai.http_status`` and status
``invalid_input`` (400/404/422) or ``content_violation`` (moderation refusals).

Calls made through a ``with_raw_response`` accessor cached before ``patch()`` bypass it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from .._core.patches import Patches
from ._ai import AICall, ai_call, extractor_failed, safe
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("openai").requirement

_patches = Patches("openai")
_stream_types: tuple[type, ...] = ()
_manager_calls: weakref.WeakKeyDictionary[Any, AICall] = weakref.WeakKeyDictionary()
_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "n",
        "seed",
        "stream",
        "reasoning_effort",
        "service_tier",
        "size",
        "quality",
        "style",
        "output_format",
        "background",
        "dimensions",
        "encoding_format",
        "response_format",
    }
)
# ``ai.modality`` of each operation: a constant bound into its wrapper, never looked up per call.
_MODALITY = {"embeddings": "embedding"} | dict.fromkeys(
    ("images.generate", "images.edit", "images.variation"), "image"
)
_INVALID_INPUT = frozenset({400, 404, 409, 413, 422})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "moderation_blocked"})


# -- inputs --------------------------------------------------------------------------------------
def _params(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    if _PARAMS.isdisjoint(kwargs):
        return None
    return {k: v for k, v in kwargs.items() if k in _PARAMS}


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
            text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
            if isinstance(text, str):
                parts.append(text)
            elif kind:
                parts.append(f"[{kind}]")
        return " ".join(parts)
    return None


def _last_user_text(messages: Any) -> str | None:
    if type(messages) is list and messages:  # the usual shape: the user's text comes last
        last = messages[-1]
        if type(last) is dict and last.get("role") == "user":
            content = last.get("content")
            if type(content) is str:
                return content
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, (list, tuple)):
        return None
    for message in reversed(messages):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role == "user":
            content = (
                message.get("content")
                if isinstance(message, dict)
                else getattr(message, "content", None)
            )
            return _text_of(content)
    return None


def _chat_inputs(call: AICall, kwargs: dict[str, Any]) -> None:
    call.set_inputs(_last_user_text(kwargs.get("messages")), _params(kwargs))


def _responses_inputs(call: AICall, kwargs: dict[str, Any]) -> None:
    call.set_inputs(_last_user_text(kwargs.get("input")), _params(kwargs))


def _prompt_inputs(call: AICall, kwargs: dict[str, Any]) -> None:
    prompt = kwargs.get("prompt")
    call.set_inputs(prompt if isinstance(prompt, str) else None, _params(kwargs))


def _embedding_inputs(call: AICall, kwargs: dict[str, Any]) -> None:
    value = kwargs.get("input")
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = value[0]
    call.set_inputs(value if isinstance(value, str) else None, _params(kwargs))


# -- results -------------------------------------------------------------------------------------
def _common(call: AICall, result: Any) -> dict[str, Any]:
    # Snapshot, response id and request id; returns the span's attributes for the caller to add to.
    attrs = call.span.attrs
    call.set_response_model(getattr(result, "model", None))
    response_id = getattr(result, "id", None)
    if isinstance(response_id, str):
        attrs["ai.response_id"] = response_id
    request_id = getattr(result, "_request_id", None)
    if request_id is None:  # a raw response (with_raw_response): headers only
        headers = getattr(result, "headers", None)
        request_id = headers.get("x-request-id") if headers is not None else None
    call.set_request_id(request_id)
    return attrs


def _chat_usage(call: AICall, usage: Any) -> None:
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    call.set_tokens(
        getattr(usage, "prompt_tokens", None),
        getattr(prompt_details, "cached_tokens", None),
        getattr(usage, "completion_tokens", None),
        getattr(completion_details, "reasoning_tokens", None),
    )


def _responses_usage(call: AICall, usage: Any) -> None:
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    call.set_tokens(
        input=getattr(usage, "input_tokens", None),
        cached=getattr(input_details, "cached_tokens", None),
        output=getattr(usage, "output_tokens", None),
        reasoning=getattr(output_details, "reasoning_tokens", None),
    )


def _image_usage(call: AICall, usage: Any) -> None:
    call.set_tokens(
        input=getattr(usage, "input_tokens", None), output=getattr(usage, "output_tokens", None)
    )


def _chat_result(call: AICall, result: Any, kwargs: dict[str, Any]) -> None:
    attrs = _common(call, result)
    usage = getattr(result, "usage", None)
    if usage is not None:
        _chat_usage(call, usage)
    choices = getattr(result, "choices", None)
    if choices:
        attrs["ai.finish_reason"] = getattr(choices[0], "finish_reason", None)
    tier = getattr(result, "service_tier", None)
    if tier:
        attrs["ai.service_tier"] = tier


def _responses_result(call: AICall, result: Any, kwargs: dict[str, Any]) -> None:
    _common(call, result)
    usage = getattr(result, "usage", None)
    if usage is not None:
        _responses_usage(call, usage)
    status = getattr(result, "status", None)
    if status in ("failed", "incomplete"):
        call.attrs["ai.finish_reason"] = status


def _embedding_result(call: AICall, result: Any, kwargs: dict[str, Any]) -> None:
    _common(call, result)
    usage = getattr(result, "usage", None)
    if usage is not None:
        call.set_tokens(input=getattr(usage, "prompt_tokens", None))


def _image_result(call: AICall, result: Any, kwargs: dict[str, Any]) -> None:
    _common(call, result)
    data = getattr(result, "data", None)
    model = str(call.attrs.get("ai.model") or "")
    quality = getattr(result, "quality", None) or kwargs.get("quality")
    if quality is None and model == "dall-e-3":
        quality = "standard"
    size = getattr(result, "size", None) or kwargs.get("size")
    if size is None and model.startswith("dall-e"):
        size = "1024x1024"
    call.set_images(
        len(data) if data is not None else None,
        size=size if isinstance(size, str) else None,
        quality=quality if isinstance(quality, str) else None,
    )
    revised = getattr(data[0], "revised_prompt", None) if data else None
    if revised:  # dall-e-3 rewrites every prompt it is given
        call.set_prompt_transformed(prompt=revised)
    usage = getattr(result, "usage", None)
    if usage is not None:
        _image_usage(call, usage)


# -- stream items (usage from the last chunk that has it, never summed) ---------------------------
def _chat_chunk(call: AICall, chunk: Any) -> None:
    if "ai.response_id" not in call.attrs:
        _common(call, chunk)
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        _chat_usage(call, usage)
    choices = getattr(chunk, "choices", None)
    if choices:
        reason = getattr(choices[0], "finish_reason", None)
        if reason:
            call.attrs["ai.finish_reason"] = reason


def _responses_event(call: AICall, event: Any) -> None:
    response = getattr(event, "response", None)
    if response is None:
        return
    if "ai.response_id" not in call.attrs:
        call.set_response_model(getattr(response, "model", None))
        call.attrs["ai.response_id"] = getattr(response, "id", None)
    usage = getattr(response, "usage", None)
    if usage is not None:
        _responses_usage(call, usage)


def _image_event(call: AICall, event: Any) -> None:
    if getattr(event, "type", "").endswith(".completed"):
        call.set_images(int(call.attrs.get("ai.image_count") or 0) + 1)
        usage = getattr(event, "usage", None)
        if usage is not None:
            _image_usage(call, usage)


def _error(call: AICall, exc: BaseException) -> None:
    status_code = getattr(exc, "status_code", None)
    call.set_request_id(getattr(exc, "request_id", None))
    if isinstance(status_code, int):
        call.attrs["ai.http_status"] = status_code
    if getattr(exc, "code", None) in _POLICY_CODES:
        call.set_content_safety(True)
        call.span.status = "content_violation"
    elif status_code in _INVALID_INPUT:
        call.span.status = "invalid_input"


def _stream_request_id(call: AICall, stream: Any) -> None:
    call.set_request_id(stream.response.headers.get("x-request-id"))


# -- wrappers ------------------------------------------------------------------------------------
Inputs = Callable[[AICall, dict[str, Any]], None]
After = Callable[[AICall, Any, dict[str, Any]], None]
OnItem = Callable[[AICall, Any], None]


def _finish(
    call: AICall, result: Any, kwargs: dict[str, Any], after: After, on_item: OnItem
) -> Any:
    if _stream_types and isinstance(result, _stream_types):
        safe(_stream_request_id, call, result)
        return call.wrap_stream(result, on_item)
    try:
        after(call, result, kwargs)
    except Exception:
        extractor_failed(after)
    return result


def _sync(operation: str, inputs: Inputs, after: After, on_item: OnItem) -> Any:
    modality = _MODALITY.get(operation, "text")

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with ai_call("openai", operation, kwargs.get("model"), modality=modality) as call:
            try:
                inputs(call, kwargs)
            except Exception:
                extractor_failed(inputs)
            try:
                result = wrapped(*args, **kwargs)
            except Exception as exc:
                safe(_error, call, exc)
                raise
            return _finish(call, result, kwargs, after, on_item)

    return wrapper


def _async(operation: str, inputs: Inputs, after: After, on_item: OnItem) -> Any:
    modality = _MODALITY.get(operation, "text")

    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with ai_call("openai", operation, kwargs.get("model"), modality=modality) as call:
            try:
                inputs(call, kwargs)
            except Exception:
                extractor_failed(inputs)
            try:
                result = await wrapped(*args, **kwargs)
            except Exception as exc:
                safe(_error, call, exc)
                raise
            return _finish(call, result, kwargs, after, on_item)

    return wrapper


def _image_inputs(call: AICall, kwargs: dict[str, Any]) -> None:
    if "ai.model" not in call.attrs:  # the API's default image model
        call.set_model("dall-e-2")
    _prompt_inputs(call, kwargs)


def _manager_enter(operation: str) -> Any:
    """``.stream()`` managers: the span opens on entry; the inner ``create`` joins it."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with ai_call("openai", operation, modality="text") as call:
            stream = wrapped(*args, **kwargs)
            safe(_manager_calls.__setitem__, instance, call)
            return stream

    return wrapper


def _manager_aenter(operation: str) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with ai_call("openai", operation, modality="text") as call:
            stream = await wrapped(*args, **kwargs)
            safe(_manager_calls.__setitem__, instance, call)
            return stream

    return wrapper


def _manager_exit(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        call = _manager_calls.pop(instance, None)
        if call is not None:
            call.end_stream("close")


async def _manager_aexit(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        call = _manager_calls.pop(instance, None)
        if call is not None:
            call.end_stream("close")


def _endpoints() -> list[tuple[str, str, str, tuple[Inputs, After, OnItem]]]:
    """Each wrapped method: module, ``Class.method`` (its async twin is ``AsyncClass.method``),
    operation, and the call's inputs, result and stream-item handlers."""
    chat = "openai.resources.chat.completions.completions"
    responses = "openai.resources.responses.responses"
    images = "openai.resources.images"
    on_chat = (_chat_inputs, _chat_result, _chat_chunk)
    on_responses = (_responses_inputs, _responses_result, _responses_event)
    on_images = (_image_inputs, _image_result, _image_event)
    return [
        (chat, "Completions.create", "chat", on_chat),
        (responses, "Responses.create", "responses", on_responses),
        (chat, "Completions.parse", "chat", on_chat),
        (responses, "Responses.parse", "responses", on_responses),
        (
            "openai.resources.completions",
            "Completions.create",
            "completions",
            (_prompt_inputs, _chat_result, _chat_chunk),
        ),
        (images, "Images.generate", "images.generate", on_images),
        (images, "Images.edit", "images.edit", on_images),
        (images, "Images.create_variation", "images.variation", on_images),
        (
            "openai.resources.embeddings",
            "Embeddings.create",
            "embeddings",
            (_embedding_inputs, _embedding_result, _chat_chunk),
        ),
    ]


def patch() -> None:
    """Instrument the OpenAI SDK (idempotent)."""
    global _stream_types
    if _patches:
        return
    from openai import AsyncStream, Stream  # noqa: PLC0415 - imported only when openai is

    _stream_types = (Stream, AsyncStream)
    wrap = _patches.wrap
    for module, path, operation, handlers in _endpoints():
        wrap(module, path, _sync(operation, *handlers))
        wrap(module, f"Async{path}", _async(operation, *handlers))
    for module, prefix, operation in (
        ("openai.lib.streaming.chat._completions", "ChatCompletionStreamManager", "chat"),
        ("openai.lib.streaming.responses._responses", "ResponseStreamManager", "responses"),
    ):
        wrap(module, f"{prefix}.__enter__", _manager_enter(operation))
        wrap(module, f"{prefix}.__exit__", _manager_exit)
        wrap(module, f"Async{prefix}.__aenter__", _manager_aenter(operation))
        wrap(module, f"Async{prefix}.__aexit__", _manager_aexit)


def unpatch() -> None:
    """Remove every OpenAI patch (idempotent)."""
    _patches.undo()
