"""The public face of AI calls no integration covers: ``obs.ai_call``, ``obs.current_ai_call``,
``obs.ai_cache``. They make and find the same ``AICall`` the built-in integrations use, so a
custom call gets the same span, record fields, metrics, cost roll-up and alerts."""

from __future__ import annotations

from .._core import span as _span
from ._ai import AICall, current_call
from ._ai import ai_call as _ai_call

__all__ = ["AICall", "ai_cache", "ai_call", "current_ai_call"]


def ai_call(
    provider: str,
    model: str | None = None,
    *,
    operation: str = "generate",
    modality: str = "text",
    private: bool = False,
) -> AICall:
    """An AI call to a provider no integration covers, as a context manager or a decorator.

    ::

        with obs.ai_call("a1111", "sdxl", operation="txt2img", modality="image") as call:
            images = webui.txt2img(prompt=prompt, steps=30, seed=7)
            call.set_images(len(images), width=1024, height=1024)
            call.set_image_params(steps=30, seed=7, sampler="Euler a")

        @obs.ai_call("my-gpu", "llama-3-8b", operation="chat")
        async def complete(prompt: str) -> str:
            call = obs.current_ai_call()
            ...

    ``provider`` and ``model`` (the model the request names) are the metric labels and what the
    pricing table is looked up by; ``operation`` names the entry point; ``modality`` (``text``,
    ``image``, ``audio``, ``embedding``, …) is written as ``ai.modality``; ``private=True``
    exports ``[PRIVATE]`` for the prompt, inputs and error message.

    The span ``ai.request`` starts on entry (a child of the current span); an exception leaving
    the ``with`` is recorded (status ``error``, or the finer one set before) and re-raised. On
    exit the call is priced (``set_cost``, or the pricing table from the usage set), its
    metrics (``ai.requests``, ``ai.duration``, ``ai.errors`` or ``ai.user_errors``,
    ``ai.cost_usd`` by route and tier) recorded, and its cost added to the trace's root, exactly
    as for a built-in provider call. Made inside a built-in call of the same ``provider``, it
    joins that call (one span, counted once). As a decorator (sync or async functions), each
    call of the function is a new AI call; ``current_ai_call()`` reaches it from inside.
    Cost: one span, as a built-in call.
    """
    return _ai_call(provider, operation, model, private=private, modality=modality)


def current_ai_call(provider: str | None = None) -> AICall | None:
    """The AI call running in this context (of ``provider``, if given), or None.

    Inside a function decorated with ``obs.ai_call(...)`` or a ``with obs.ai_call(...)`` block,
    and inside a built-in integration's call (e.g. from a hook run by the SDK): set usage,
    cost, cache status or content-safety flags on it.
    """
    return current_call(provider)


def ai_cache(hit: bool, *, provider: str | None = None) -> bool:
    """Record whether the current AI work was answered from a cache: ``ai.cache_status``.

    Sets ``hit``/``miss`` on the running AI call (of ``provider``), or, when none runs (an app
    cache checked before any provider call), on the current span. Returns False when there is
    neither. Per-model hit rates need the AI call: on a hit served without a provider, make an
    ``obs.ai_call(...)`` with ``set_cache(True)`` and ``set_cost(0.0)``.
    """
    call = current_call(provider)
    if call is not None:
        call.set_cache(hit)
        return True
    current = _span.current_span()
    if current is None:
        return False
    current.attrs["ai.cache_status"] = "hit" if hit else "miss"
    return True
