"""OpenTelemetry GenAI semantic conventions for AI spans exported over OTLP.

An AI span (one with an ``ai.provider`` attribute: ``integrations/_ai.py``'s ``ai.request``, kind
CLIENT) also carries the ``gen_ai.*`` attributes of the OTel GenAI conventions (semantic-conventions
1.37+, ``docs/gen-ai/gen-ai-spans.md``), copied from its ``ai.*`` ones, which stay (the
operation name on AI spans only, the others wherever their ``ai.*`` attribute is):

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
name is left as the span set it. The span keeps its name (``ai.request``).

Order, the same on both OTLP paths (``_otlp_records.to_otel_spans`` through ``with_genai``, and
``_otlp_proto``): each ``ai.*`` attribute of the table is followed by its twins (``TWINS``; on any
span that has one), and an AI span's ``gen_ai.operation.name`` (which reads two attributes) comes
after all of its attributes. The span path caches a source attribute's bytes together with its
twins', so the conventions cost it one cached lookup per AI span (the operation name) and the
encoding of values never seen before (a response id). A span that sets a ``gen_ai.*`` attribute
itself takes the record path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["OPERATION", "TRIGGER", "TWINS", "operation_name", "twin_value", "with_genai"]

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
# An ``ai.*`` attribute and its GenAI twins, with the type the convention takes: the twins follow
# their source attribute, on both paths (the span path caches a source's bytes with its twins').
TWINS: dict[str, tuple[tuple[str, str], ...]] = {
    "ai.provider": (("gen_ai.provider.name", "text"), ("gen_ai.system", "text")),
    "ai.model": (("gen_ai.request.model", "text"),),
    "ai.response_model": (("gen_ai.response.model", "text"),),
    "ai.response_id": (("gen_ai.response.id", "text"),),
    "ai.finish_reason": (("gen_ai.response.finish_reasons", "reasons"),),
    "ai.input_tokens": (("gen_ai.usage.input_tokens", "count"),),
    "ai.output_tokens": (("gen_ai.usage.output_tokens", "count"),),
    "ai.cached_tokens": (("gen_ai.usage.cache_read.input_tokens", "count"),),
    "ai.reasoning_tokens": (("gen_ai.usage.reasoning.output_tokens", "count"),),
    "ai.input.max_tokens": (("gen_ai.request.max_tokens", "count"),),
    "ai.input.seed": (("gen_ai.request.seed", "count"),),
    "ai.input.temperature": (("gen_ai.request.temperature", "number"),),
    "ai.input.top_p": (("gen_ai.request.top_p", "number"),),
}
OPERATION = "gen_ai.operation.name"


def twin_value(rule: str, value: Any) -> Any:
    """The twin's value of a source ``value`` under ``rule`` (``TWINS``); None if its type does
    not fit (only text is text, only an exact int a count, a finish reason a one-item array)."""
    kind = type(value)
    if rule == "text":
        return value if kind is str else None
    if rule == "count":
        return value if kind is int else None
    if rule == "number":
        return value if kind is float or kind is int else None
    return [value] if kind is str else None


def operation_name(operation: str, modality: Any) -> str:
    """``gen_ai.operation.name`` of one of our AI operations (and the call's ``ai.modality``)."""
    name = _OPERATIONS.get(operation)
    if name is None:
        name = _BY_MODALITY.get(modality, operation) if type(modality) is str else operation
    return name


def with_genai(
    source: Mapping[str, Any], attrs: dict[str, Any], convert: Callable[[Any], Any]
) -> dict[str, Any]:
    """``attrs`` (a span record's attributes as OTLP names them, values ``convert``ed from
    ``source``'s) with the ``gen_ai.*`` twins in their place; ``attrs`` itself when none."""
    ai = TRIGGER in source
    if not ai and TWINS.keys().isdisjoint(source):
        return attrs
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        out[key] = value
        for name, rule in TWINS.get(key, ()):
            if name not in attrs:
                twin = twin_value(rule, source.get(key))
                if twin is not None:
                    out[name] = convert(twin)
    operation = source.get("ai.operation")
    if ai and type(operation) is str and OPERATION not in out:
        out[OPERATION] = convert(operation_name(operation, source.get("ai.modality")))
    return out
