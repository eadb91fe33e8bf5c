"""The usage and cost setters of an AI call: tokens, images, compute, units, explicit cost, queue
and run time. Each value is checked as it is set; an invalid one is dropped from the usage and the
span, named in ``ai.usage.invalid``, counted and logged once per provider (``AICall`` inherits
these)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._core import cost
from .._core import span as _span
from .._core.internal import once
from .._core.metrics import dropped
from ._ai_values import MAX_USAGE, size_pair, usage_amount, usage_count

__all__ = ["CallUsage"]

_log = logging.getLogger("obs_middleware")


class CallUsage:
    """Setters of what an AI call used and cost (``AICall`` inherits them)."""

    # The explicit cost or the reason there is none (set by ``set_cost``, read when pricing).
    __slots__ = ("_cost_unknown", "_cost_usd")

    span: _span.Span
    usage: cost.Usage
    provider: str

    def set_tokens(
        self,
        input: int | None = None,
        cached: int | None = None,
        output: int | None = None,
        reasoning: int | None = None,
    ) -> None:
        """Token counts of the whole call (a stream's final usage; never per-chunk sums)."""
        # Inline checks for what SDKs report (a plain int): this runs on every call.
        usage, attrs = self.usage, self.span.attrs
        if input is not None:
            if type(input) is int and 0 <= input <= MAX_USAGE:
                usage.input_tokens = attrs["ai.input_tokens"] = input
            else:
                self._usage("input_tokens", input, usage_count)
        if cached is not None:
            if type(cached) is int and 0 <= cached <= MAX_USAGE:
                usage.cached_tokens = attrs["ai.cached_tokens"] = cached
            else:
                self._usage("cached_tokens", cached, usage_count)
        if output is not None:
            if type(output) is int and 0 <= output <= MAX_USAGE:
                usage.output_tokens = attrs["ai.output_tokens"] = output
            else:
                self._usage("output_tokens", output, usage_count)
        if reasoning is not None:
            if type(reasoning) is int and 0 <= reasoning <= MAX_USAGE:
                usage.reasoning_tokens = attrs["ai.reasoning_tokens"] = reasoning
            else:
                self._usage("reasoning_tokens", reasoning, usage_count)

    def set_images(
        self,
        count: int | None,
        *,
        width: int | None = None,
        height: int | None = None,
        size: str | None = None,
        quality: str | None = None,
    ) -> None:
        """Images produced: count, pixel size (or a ``"WxH"`` size label), quality."""
        usage, attrs = self.usage, self.span.attrs
        if count is not None:
            self._usage("images", count, usage_count, "ai.image_count")
        if size:
            usage.size = attrs["ai.image_size"] = size
            pair = size_pair(size)
            if pair is not None and width is None and height is None:
                width, height = pair
        if width and height:
            self._usage("width", width, usage_count)
            self._usage("height", height, usage_count)
        if quality:
            usage.quality = attrs["ai.image_quality"] = quality

    def set_compute(
        self, seconds: float | None, *, gpu: str | None = None, gpu_count: int = 1
    ) -> None:
        """Billed compute time (Replicate ``predict_time``, Modal run time) and its hardware."""
        usage, attrs = self.usage, self.span.attrs
        if seconds is not None:
            self._usage("gpu_seconds", seconds, usage_amount)
        if gpu:
            usage.gpu = attrs["ai.gpu"] = gpu
        count = usage_count(gpu_count)
        if count is None:
            self._invalid("ai.gpu_count", gpu_count)
        else:
            usage.gpu_count = count
            if count != 1:
                attrs["ai.gpu_count"] = count

    def set_units(self, units: float | None) -> None:
        """Billable units reported by the provider (fal ``x-fal-billable-units``)."""
        if units is not None:
            self._usage("units", units, usage_amount, "ai.billable_units")

    def set_cost(self, usd: float | None, *, unknown: str | None = None) -> None:
        """Use a cost the provider reported instead of the pricing table.

        ``usd=None`` with ``unknown``: the cost is unknown for that reason; ``set_cost(None)``
        goes back to the pricing table.
        """
        if usd is not None and usage_amount(usd) is None:
            self._invalid("cost.usd", usd)
            usd, unknown = None, "invalid cost reported"
        self._cost_usd = None if usd is None else float(usd)
        self._cost_unknown = unknown if usd is None else None

    def set_queue_ms(self, ms: float | None) -> None:
        """Time the request waited in the provider's queue before running."""
        if ms is not None and -MAX_USAGE < ms < MAX_USAGE:  # not NaN, infinite, or absurd
            self.span.attrs["ai.queue_ms"] = round(max(float(ms), 0.0), 3)

    def set_run_ms(self, ms: float | None) -> None:
        """Time the request ran on the provider's hardware (``ai.run_ms``), as it reports it."""
        if ms is not None and -MAX_USAGE < ms < MAX_USAGE:
            self.span.attrs["ai.run_ms"] = round(max(float(ms), 0.0), 3)

    def _usage(
        self,
        field: str,
        value: Any,
        check: Callable[[Any], float | None],
        attr: str | None = None,
    ) -> None:
        # One usage quantity: kept on the usage and the span, or dropped from both.
        attr = attr or "ai." + field
        checked = check(value)
        if checked is None:
            setattr(self.usage, field, None)
            self.span.attrs.pop(attr, None)
            self._invalid(attr, value)
        else:
            setattr(self.usage, field, checked)
            self.span.attrs[attr] = checked

    def _invalid(self, attr: str, value: Any) -> None:
        attrs = self.span.attrs
        name = attr.removeprefix("ai.")
        seen = attrs.get("ai.usage.invalid")
        if not seen:
            attrs["ai.usage.invalid"] = name
        elif name not in seen.split(","):
            attrs["ai.usage.invalid"] = f"{seen},{name}"
        dropped.add((f"invalid_usage:{self.provider}",))
        where = f"usage:{self.provider}"
        if once(where):
            try:
                shown = repr(value)[:40]
            except Exception:  # an int too long for repr(), a hostile __repr__
                shown = type(value).__name__
            _log.warning(
                "obs-middleware: %s reported an invalid %s (%s): dropped, and the call is "
                "not priced (further invalid usage is counted in obs.dropped)",
                self.provider,
                name,
                shown,
            )
