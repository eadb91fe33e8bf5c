"""Sampling: head ratio by trace id, plus a tail rule that keeps errors and slow spans.

Decided at span end, after metrics were updated, so sampling only changes what is exported. A trace
not head-sampled buffers its spans on its ``LocalTrace`` until its local root ends; the root then
exports the whole buffer if any span failed or was slow, and forgets it otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import SamplingOptions
from .metrics import dropped
from .span import Event, Span

__all__ = ["head_sampler", "make_finisher"]

_MASK = (1 << 64) - 1
_MAX_BUFFERED = 1000  # spans held per unsampled trace before the tail decision


def head_sampler(ratio: float) -> Callable[[int], bool]:
    """trace id -> sampled, deterministic in the low 64 bits of the id (as in W3C random ids)."""
    if ratio >= 1.0:
        return lambda _trace_id: True
    threshold = int(ratio * (1 << 64))
    return lambda trace_id: (trace_id & _MASK) < threshold


def make_finisher(
    submit: Callable[[Span | Event], None], options: SamplingOptions
) -> Callable[[Span | Event], None]:
    """The hook every finished span and event goes through: export now, buffer, or forget."""
    slow_ns = int(options.slow_ms * 1_000_000)
    keep_errors = options.keep_errors

    def on_finish(item: Span | Event) -> None:
        if item.sampled:
            submit(item)
            return
        local = item.local
        assert local is not None  # only spans and in-trace events can be unsampled
        is_span = type(item) is Span
        if (keep_errors and item.status == "error") or (
            is_span and item.end_ns - item.start_ns >= slow_ns  # type: ignore[union-attr]
        ):
            local.keep = True
        buffer = local.buffer
        if is_span and local.root is item:
            local.buffer = None
            if local.keep and buffer is not None:
                for held in buffer:
                    submit(held)
                submit(item)
        elif buffer is not None:
            if len(buffer) < _MAX_BUFFERED:
                buffer.append(item)
            else:
                dropped.add(("tail_buffer_full",))
        elif local.keep:  # ended after its root: export if the trace was kept
            submit(item)

    return on_finish
