"""Excluded requests (``HttpOptions.exclude_paths``): no span, no metrics, and nothing they start
is exported.

A health check that runs a query would otherwise export that query, or an ``obs.span`` made
inside it, as a root trace of its own. The handler runs under a silent root instead: a span
with a trace id like any other, head-unsampled, that is made current for the request and never
ended, so it is never exported, and nothing is recorded for it. The spans, held queries and events
made under it go to its trace's buffer, which drops what it is handed and counts each as
``obs.dropped{reason="excluded_path"}``: they go with their parent, whatever their status or
duration. Outbound calls made under it carry an unsampled ``traceparent``.

Cost: only excluded requests pay (a span object, two ids, a contextvar set and reset).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from .._core import span as _span
from .._core.internal import internal_error
from .._core.metrics import dropped

__all__ = ["DROP_REASON", "end_silence", "run_excluded", "silence"]

DROP_REASON = "excluded_path"

Token = contextvars.Token[_span.Span | None]


class _Discard(list[Any]):
    """The buffer of an excluded request's trace: holds nothing, counts what it is handed."""

    __slots__ = ()

    def __len__(self) -> int:
        return 0  # never full: every item comes to append() to be counted

    def append(self, item: Any) -> None:
        """Drop ``item`` (a span, an event or a held query), counted."""
        dropped.add((DROP_REASON,))


def silence() -> Token | None:
    """Make a silent root current for an excluded request; undo with ``end_silence``."""
    try:
        root = _span.Span("excluded", {}, "server")
        root.trace_id = _span.randbits(128) or 1
        root.span_id = _span.randbits(64) or 1
        root.parent_id = 0
        root.sampled = False
        root.local = local = _span.LocalTrace(root, None)
        # Never ended: as if it had (no cycle left behind, children record their cost at once).
        local.root = None
        local.buffer = _Discard()
        root.start_ns = _span.clock_ns()
        return _span.set_current(root)
    except Exception:
        internal_error("excluded request start")
        return None


def end_silence(token: Token | None) -> None:
    """Undo ``silence`` (the silent root is dropped, never ended)."""
    if token is not None:
        try:
            _span.reset_current(token)
        except Exception:
            internal_error("excluded request end")


async def run_excluded(
    app: Callable[..., Awaitable[None]], scope: Any, receive: Any, send: Any
) -> None:
    """Run an ASGI app for an excluded request under a silent root."""
    token = silence()
    try:
        await app(scope, receive, send)
    finally:
        end_silence(token)
