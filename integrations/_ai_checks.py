"""What the AI-provider suites read from a capture: the ``ai.request`` spans and chosen fields."""

from __future__ import annotations

from typing import Any

from obs_middleware.testing import Capture


def ai_spans(cap: Capture) -> list[dict[str, Any]]:
    """Every ``ai.request`` span record, in finish order."""
    return [s for s in cap.spans if s["name"] == "ai.request"]


def only_ai_span(cap: Capture) -> dict[str, Any]:
    """The one ``ai.request`` span record (fails naming the operations if there are several)."""
    spans = ai_spans(cap)
    assert len(spans) == 1, [s.get("ai.operation") for s in spans]
    return spans[0]


def pick(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``keys`` of ``record`` (None where absent)."""
    return {k: record.get(k) for k in keys}
