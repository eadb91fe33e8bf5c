"""The AI metrics, and the cost rollup that records ``ai.cost_usd`` once the trace's root has
ended (its route and tier known). Part of ``_ai``, split out for size.

``ai.errors`` counts service failures only; a user-caused status (``_core/status.py``) goes to
``ai.user_errors``, so the failure alert and the column stores' error rate read the same thing.

The ``ai.model`` label is the model the request names (``AICall.model``), never the snapshot a
response reports: a model's failed and successful calls are one series, so its error rate holds.
"""

from __future__ import annotations

from .._core import span as _span
from .._core.metrics import registry

__all__ = [
    "ai_cost",
    "ai_duration",
    "ai_errors",
    "ai_output_rate",
    "ai_queue_time",
    "ai_run_time",
    "ai_time_to_first_token",
    "ai_user_errors",
    "record_cost",
    "record_latency",
    "rollup",
]

ai_duration = registry.histogram(
    "ai.duration",
    ("ai.provider", "ai.model", "ai.operation"),
    "ms",
    "Duration of AI provider calls (streams: to their end).",
)
registry.count_view("ai.requests", ai_duration, "AI provider calls.")
ai_errors = registry.counter(
    "ai.errors",
    ("ai.provider", "ai.model", "ai.operation", "error.type"),
    "1",
    "Failed AI provider calls (service failures; user-caused outcomes are ai.user_errors).",
)
ai_user_errors = registry.counter(
    "ai.user_errors",
    ("ai.provider", "ai.model", "ai.operation", "status"),
    "1",
    "AI calls ended by the user's request: invalid_input, content_violation (no failure).",
)
ai_cost = registry.counter(
    "ai.cost_usd",
    ("ai.provider", "ai.model", "ai.operation", "http.route", "tier"),
    "USD",
    "Estimated cost of AI provider calls.",
)

# Latency as LLM and image teams read it, per provider/model/operation: recorded when the call
# reports the figure (streams: first token and rate; image providers: queue and run time).
_LABELS = ("ai.provider", "ai.model", "ai.operation")
ai_time_to_first_token = registry.histogram(
    "ai.time_to_first_token",
    _LABELS,
    "ms",
    "Time from an AI call's start to its stream's first chunk.",
)
ai_output_rate = registry.histogram(
    "ai.output_tokens_per_s",
    _LABELS,
    "{token}/s",
    "Output tokens per second of streamed AI calls, after the first token.",
    bounds=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000),
)
ai_queue_time = registry.histogram(
    "ai.queue_time",
    _LABELS,
    "ms",
    "Time AI calls waited in the provider's queue (as the provider reports it).",
)
ai_run_time = registry.histogram(
    "ai.run_time",
    _LABELS,
    "ms",
    "Time AI calls ran on the provider's hardware (as the provider reports it).",
)
_LATENCY = (
    ("ai.time_to_first_token_ms", ai_time_to_first_token),
    ("ai.output_tokens_per_s", ai_output_rate),
    ("ai.queue_ms", ai_queue_time),
    ("ai.run_ms", ai_run_time),
)


def record_latency(labels: tuple[str, str, str], attrs: dict[str, object]) -> None:
    """Record the latency figures an ending call has (four dict lookups when it has none)."""
    for attr, histogram in _LATENCY:
        value = attrs.get(attr)
        if type(value) is float or type(value) is int:
            histogram.record(labels, value)


class _CostRollup:
    """Per-trace cost sums, added to ``ai.cost_usd`` when the root ends (route, tier known)."""

    __slots__ = ("done", "sums")

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str, str], float] = {}
        self.done = False

    def add(self, labels: tuple[str, str, str], usd: float, local: _span.LocalTrace) -> None:
        if self.done:  # the root already ended (a stream outliving its request)
            record_cost(labels, usd, local)
        else:
            self.sums[labels] = self.sums.get(labels, 0.0) + usd

    def __call__(self, root: _span.Span) -> None:
        self.done = True
        for labels, usd in self.sums.items():
            record_cost(labels, usd, root.local)


def record_cost(labels: tuple[str, str, str], usd: float, local: _span.LocalTrace) -> None:
    """Add ``usd`` to ``ai.cost_usd`` under the route of the root of ``local`` and its tier."""
    attrs = local.root_attrs
    route = attrs.get("http.route") or attrs.get("job.service_type") or ""
    ai_cost.add((*labels, str(route), local.tier or ""), usd)


def rollup(local: _span.LocalTrace) -> _CostRollup:
    deferred = local.deferred
    if deferred is None:
        deferred = local.deferred = []
    for callback in deferred:
        if type(callback) is _CostRollup:
            return callback
    rollup = _CostRollup()
    deferred.append(rollup)
    return rollup
