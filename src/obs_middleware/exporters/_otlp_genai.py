"""OpenTelemetry GenAI semantic conventions for AI spans exported over OTLP.

An AI span (one with an ``ai.provider`` attribute: ``integrations/_ai.py``'s ``ai.request``, kind
CLIENT) also carries the ``gen_ai.*`` attributes of the OTel GenAI conventions (semantic-conventions
1.37+, ``docs/gen-ai/gen-ai-spans.md``), copied from its ``ai.*`` ones, which stay:

=====================================  ===================================================
``gen_ai.provider.name``, ``gen_ai.system``  ``ai.provider`` (``gen_ai.system``: the older name,
                                       still the one many backends read)
``gen_ai.operation.name``              ``ai.operation`` mapped to the well-known values
                                       (``chat``, ``text_completion``, ``embeddings``,
                                       ``generate_content``; see ``operation_name``)
``gen_ai.request.model``               ``ai.model``
``gen_ai.response.model``              ``ai.response_model``
``gen_ai.response.id``                 ``ai.response_id``
``gen_ai.response.finish_reasons``     ``[ai.finish_reason]``
``gen_ai.usage.input_tokens``          ``ai.input_tokens`` (cached included, as both define it)
``gen_ai.usage.output_tokens``         ``ai.output_tokens`` (reasoning included)
``gen_ai.usage.cache_read.input_tokens``  ``ai.cached_tokens``
``gen_ai.usage.reasoning.output_tokens``  ``ai.reasoning_tokens``
``gen_ai.request.temperature`` / ``top_p`` / ``max_tokens`` / ``seed``  the numeric
                                       ``ai.input.*`` request parameters of that name
=====================================  ===================================================

Values are copied only when of the convention's type (text, integer, number); nothing is derived
from prompts or messages (``gen_ai.input.messages`` is opt-in there, and private here), so nothing
leaks that the span did not already export. An attribute the span already has under a ``gen_ai``
name is left as the span set it. The span keeps its name (``ai.request``). Both OTLP paths
(``otlp.to_otel_spans`` and ``_otlp_proto``) call ``genai_attributes`` with the same values, so
they stay equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "TRIGGER",
    "genai_attributes",
    "head_attributes",
    "operation_name",
    "tail_attributes",
]

# The attribute that makes a span an AI span (set by every ``ai_call``).
TRIGGER = "ai.provider"

# Our operations (the SDK method an integration wraps) to the convention's well-known values.
_OPERATIONS = {
    "chat": "chat",
    "responses": "chat",  # OpenAI's Responses API: ``chat`` with ``openai.api.type=responses``
    "completions": "text_completion",
    "embeddings": "embeddings",
    "images.generate": "generate_content",
    "images.edit": "generate_content",
    "images.variation": "generate_content",
}
# Otherwise by the call's modality; an operation with neither keeps its own name (a custom value
# the convention allows).
_BY_MODALITY = {
    "text": "text_completion",
    "embedding": "embeddings",
    "image": "generate_content",
    "audio": "generate_content",
    "video": "generate_content",
}
_TEXT = (
    ("ai.response_model", "gen_ai.response.model"),
    ("ai.response_id", "gen_ai.response.id"),
)
_COUNTS = (
    ("ai.input_tokens", "gen_ai.usage.input_tokens"),
    ("ai.output_tokens", "gen_ai.usage.output_tokens"),
    ("ai.cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("ai.reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
    ("ai.input.max_tokens", "gen_ai.request.max_tokens"),
    ("ai.input.seed", "gen_ai.request.seed"),
)
_NUMBERS = (
    ("ai.input.temperature", "gen_ai.request.temperature"),
    ("ai.input.top_p", "gen_ai.request.top_p"),
)

TAIL_SOURCES = frozenset(
    [source for source, _ in (*_TEXT, *_COUNTS, *_NUMBERS)] + ["ai.finish_reason"]
)


def operation_name(operation: str, modality: Any) -> str:
    """``gen_ai.operation.name`` of one of our AI operations (and the call's ``ai.modality``)."""
    name = _OPERATIONS.get(operation)
    if name is None:
        name = _BY_MODALITY.get(modality, operation) if type(modality) is str else operation
    return name


def head_attributes(
    provider: Any, operation: Any, modality: Any, model: Any
) -> list[tuple[str, Any]]:
    """The leading ``gen_ai.*`` attributes: those of a call's provider, operation and model
    (the same for many calls: the span path caches their encoding)."""
    out: list[tuple[str, Any]] = []
    if type(provider) is str:
        out.append(("gen_ai.provider.name", provider))
        out.append(("gen_ai.system", provider))
    if type(operation) is str:
        out.append(("gen_ai.operation.name", operation_name(operation, modality)))
    if type(model) is str:
        out.append(("gen_ai.request.model", model))
    return out


def tail_attributes(attrs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The ``gen_ai.*`` attributes after ``head_attributes``: response and usage."""
    out: list[tuple[str, Any]] = []
    if TAIL_SOURCES.isdisjoint(attrs):  # a call without response fields: one pass
        return out
    get = attrs.get
    for source, target in _TEXT:
        value = get(source)
        if type(value) is str:
            out.append((target, value))
    reason = get("ai.finish_reason")
    if type(reason) is str:
        out.append(("gen_ai.response.finish_reasons", [reason]))
    for source, target in _COUNTS:
        value = get(source)
        if type(value) is int:
            out.append((target, value))
    for source, target in _NUMBERS:
        value = get(source)
        if type(value) is float or type(value) is int:
            out.append((target, value))
    return out


def genai_attributes(attrs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The ``gen_ai.*`` attributes of an AI span's attributes (or record), in a fixed order.

    Called only for spans that have ``TRIGGER``; reads ``ai.*`` keys only.
    """
    get = attrs.get
    head = head_attributes(
        get("ai.provider"), get("ai.operation"), get("ai.modality"), get("ai.model")
    )
    return head + tail_attributes(attrs)
