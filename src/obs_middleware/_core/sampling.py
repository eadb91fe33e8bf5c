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

__all__ = ["head_threshold", "make_finisher"]

_MAX_BUFFERED = 1000  # spans held per unsampled trace before the tail decision


def head_threshold(ratio: float) -> int:
    """The ``span.sample_threshold`` for ``ratio``: a new trace is sampled when the low 64 bits
    of its (random) id are below it, so the decision is deterministic per trace id.
    """
    return 1 << 64 if ratio >= 1.0 else int(ratio * (1 << 64))


def _forget(item: Span | Event) -> None:
    """The finish hook when nothing exports."""


def make_finisher(
    submit: Callable[[Span | Event], None] | None, options: SamplingOptions
) -> Callable[[Span | Event], None]:
    """The hook every finished span and event goes through: export now, buffer, or forget.

    ``submit`` queues one item for export (the delivery side's fast path); ``None`` means nothing
    exports (``"none"``): the hook forgets everything and no export worker starts. Metrics are
    recorded before this hook, so they stay exact.
    """
    if submit is None:
        return _forget
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
                buffer.append(item)  # type: ignore[arg-type]
            else:
                dropped.add(("tail_buffer_full",))
        elif local.keep:  # ended after its root: export if the trace was kept
            submit(item)

    return on_finish
