"""What the spans of one trace share inside this process, and a parent received over the wire."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .span import Span

__all__ = ["Held", "LocalTrace", "RemoteParent"]

# A span of an unsampled trace not built yet: ``(build, *args)``, ``build(*args)`` makes it if the
# trace is kept. Integrations hold the leaves they time (queries) this way: most such traces are
# forgotten, and a tuple costs a fraction of a span.
Held = tuple[Any, ...]


class RemoteParent:
    """A parent received over the wire (W3C ``traceparent``)."""

    __slots__ = ("sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: int, span_id: int, sampled: bool, tracestate: str | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.tracestate = tracestate


class LocalTrace:
    """What the spans of one trace share inside this process: user, request id, tail decision."""

    __slots__ = (
        "buffer",
        "deferred",
        "keep",
        "private",
        "request_id",
        "root",
        "root_attrs",
        "root_id",
        "tier",
        "trace_hex",
        "tracestate",
        "user_id",
    )

    def __init__(self, root: Span, tracestate: str | None) -> None:
        # The local root while it runs, None once it ended: the trace's spans then no longer
        # reach it, so the root and this object (which point at each other until then) are freed
        # by reference counting instead of waiting for a garbage collection.
        self.root: Span | None = root
        self.root_id: int = root.span_id  # is ``span`` the root: ``span.span_id == root_id``
        self.root_attrs = root.attrs  # the root's attributes, also after it ended
        self.tracestate = tracestate
        self.user_id: str | None = None
        self.tier: str | None = None
        self.request_id: str | None = None
        # The trace id as 32 hex digits, formatted once per trace (by whoever needs it first).
        self.trace_hex: str | None = None
        # True when the request is marked private: integrations export "[PRIVATE]" for prompts.
        self.private = False
        # Callbacks run when the local root ends, after it is named (per-route metrics of children).
        self.deferred: list[Callable[[Span], None]] | None = None
        self.keep = False
        # Unsampled spans waiting for the root to end (tail sampling), or what builds one if the
        # trace is kept (``Held``); None when head-sampled or once the root ended.
        self.buffer: list[Span | Held] | None = None
