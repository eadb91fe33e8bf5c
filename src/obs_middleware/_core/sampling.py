"""Sampling: adaptive head sampling by trace id, plus a tail rule that keeps errors and slow spans.

The head decision is one comparison when a trace starts (``span.sample_threshold``). By default
``RateLimiter`` moves that threshold: it reads how many traces this process started since its last
tick (ticked by the export worker, a few times a second) and sets the share that keeps the export
at ``traces_per_s``; at a lower rate every trace is exported.

Export is decided at span end, after metrics were updated, so sampling only changes what is
exported. A trace not head-sampled buffers its spans on its ``LocalTrace`` until its local root
ends; the root then exports the whole buffer if any span failed or was slow, and forgets it
otherwise (counted in ``obs.traces.sampled_out``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import span as _span
from .config import SamplingOptions
from .internal import internal_error
from .metrics import dropped, registry
from .span import Event, Held, Span

__all__ = ["MAX_BUFFERED", "RateLimiter", "head_threshold", "make_export_test", "make_finisher"]

sampled_out = registry.tally(
    "obs.traces.sampled_out",
    "{trace}",
    "Traces head sampling left out of export (their metrics are recorded all the same).",
)

MAX_BUFFERED = 1000  # spans held per unsampled trace before the tail decision


def head_threshold(ratio: float) -> int:
    """The ``span.sample_threshold`` for ``ratio``: a new trace is sampled when the low 64 bits
    of its (random) id are below it, so the decision is deterministic per trace id.
    """
    return 1 << 64 if ratio >= 1.0 else int(ratio * (1 << 64))


class RateLimiter:
    """Adaptive export: keeps the share of new traces sampled at ``limit`` traces per second.

    ``tick()`` (from the export worker) estimates the rate of new traces since the last tick and
    sets ``span.sample_threshold`` to ``ratio`` times the share that meets the limit (all of them
    below it). ``in_force`` is that share, recorded on exported roots for re-weighting.
    """

    MIN_WINDOW_S = 0.2  # shorter windows are too noisy to act on: wait for more

    def __init__(
        self, limit: float, ratio: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.ratio = ratio
        self.in_force = ratio
        self._clock = clock
        self._count = _span.new_traces
        self._since = clock()

    def tick(self) -> None:
        """Re-estimate the rate of new traces and set the head-sampling threshold."""
        now = self._clock()
        elapsed = now - self._since
        if elapsed < self.MIN_WINDOW_S:
            return
        count = _span.new_traces
        rate = (count - self._count) / elapsed
        self._count, self._since = count, now
        share = 1.0 if rate <= self.limit else self.limit / rate
        self.in_force = self.ratio * share
        _span.sample_threshold = head_threshold(self.in_force)


def _build(held: Held) -> Span | None:
    """The span a ``Held`` tuple stands for; None (counted) if its builder fails."""
    try:
        built: Span = held[0](*held[1:])
    except Exception:
        dropped.add(("internal_error",))
        internal_error("held span", "trace")
        return None
    return built


def _forget(item: Span | Event) -> None:
    """The finish hook when nothing exports."""


def _never(span: Span, end_ns: int) -> bool:
    return False


def make_export_test(
    submit: Callable[[Span | Event], None] | None, options: SamplingOptions
) -> Callable[[Span, int], bool]:
    """The ``span.may_export`` of the finisher ``make_finisher(submit, options)`` makes: whether a
    span ending at ``end_ns`` with its current status could be exported (its trace sampled or
    kept, or the span itself failed or slow). A local root that may not is forgotten at its end.
    """
    if submit is None:
        return _never
    slow_ns = int(options.slow_ms * 1_000_000)
    keep_errors = options.keep_errors

    def may_export(span: Span, end_ns: int) -> bool:
        return (
            span.sampled
            or span.local.keep
            or end_ns - span.start_ns >= slow_ns
            or (keep_errors and span.status == "error")
        )

    return may_export


def make_finisher(
    submit: Callable[[Span | Event], None] | None,
    options: SamplingOptions,
    limiter: RateLimiter | None = None,
) -> Callable[[Span | Event], None]:
    """The hook every finished span and event goes through: export now, buffer, or forget.

    ``submit`` queues one item for export (the delivery side's fast path); ``None`` means nothing
    exports (``"none"``): the hook forgets everything and no export worker starts. Metrics are
    recorded before this hook, so they stay exact. With a ``limiter`` (or a fixed ratio below 1),
    an exported local root records the share in force as ``sampling.ratio``.
    """
    if submit is None:
        return _forget
    slow_ns = int(options.slow_ms * 1_000_000)
    keep_errors = options.keep_errors
    fixed = options.ratio

    def on_finish(item: Span | Event) -> None:
        if item.sampled:
            share = limiter.in_force if limiter is not None else fixed
            if share < 1.0 and type(item) is Span and item.local.root_id == item.span_id:
                item.attrs["sampling.ratio"] = share
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
        if is_span and local.root_id == item.span_id:
            local.buffer = None
            if local.keep and buffer is not None:
                for held in buffer:
                    built = _build(held) if isinstance(held, tuple) else held
                    if built is not None:
                        submit(built)
                submit(item)
            else:
                sampled_out.inc()
        elif buffer is not None:
            if len(buffer) < MAX_BUFFERED:
                buffer.append(item)  # type: ignore[arg-type]
            else:
                dropped.add(("tail_buffer_full",))
        elif local.keep:  # ended after its root: export if the trace was kept
            submit(item)

    return on_finish
