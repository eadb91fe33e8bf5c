"""Spans: the unit of timing, nested through a contextvar.

The hot path (``Span.__enter__``/``__exit__``) does only what must happen on the request thread:
ids as ints, two clock reads, a contextvar set/reset, handler dispatch when any is attached, and one
call to the finish hook (metrics + sampling + enqueue). Hex ids, timestamps and encoding happen on
the export worker.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from . import events
from .redact import PRIVATE, error_message
from .trace import Held, LocalTrace, RemoteParent

__all__ = [
    "Event",
    "Held",
    "LocalTrace",
    "RemoteParent",
    "Span",
    "any_may",
    "child_span",
    "current_span",
    "emit",
    "get_current",
    "reset_current",
    "set_current",
    "span",
]

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("obs_middleware")
_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("obs_span", default=None)

# Swappable by ``obs_middleware.testing`` for deterministic ids and clock.
randbits: Callable[[int], int] = random.getrandbits
clock_ns: Callable[[], int] = time.perf_counter_ns
# Wall-clock anchor: wall time (ns) = wall_anchor_ns + clock_ns() value.
wall_anchor_ns: int = time.time_ns() - time.perf_counter_ns()


_PRIVATE_MARK = "__obs_private__"


def mark_private_exception(exc: BaseException) -> None:
    """Mark an exception raised by a private call: spans recording it export ``[PRIVATE]``."""
    # An exception type with __slots__ refuses the mark: its call span is still covered.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _PRIVATE_MARK, True)


def _drop_finished(item: Span | Event) -> None:
    """Default finish hook before ``configure`` wires the real one (replaced at first use)."""


# Called with every finished span and emitted event: sampling and export. Set by ``configure``.
on_finish: Callable[[Span | Event], None] = _drop_finished


def any_may(span: Span, end_ns: int) -> bool:
    """``may_export`` before ``configure``: anything may be exported."""
    return True


# Whether ``span``, ending at ``end_ns`` with its status as it is, could be exported (set by
# ``configure`` with the finisher): False lets the caller skip attributes nothing would read.
may_export: Callable[[Span, int], bool] = any_may
# Head sampling: a new trace is sampled when its id's low 64 bits are below this (set by
# ``configure`` from the ratio; 2**64 samples everything).
_MASK64 = (1 << 64) - 1
sample_threshold = 1 << 64
# New local traces started so far (read by the adaptive sampler). Incremented without a lock: a
# rare lost increment between threads only nudges a rate estimate.
new_traces = 0
# A context bridge to another tracer (the OpenTelemetry integration sets it): called as each span
# starts, with its obs parent (or None), it notes what it needs on ``span.foreign`` and returns
# the other tracer's current span when that is more recent than the parent, else None. None
# when no bridge is installed: one global read per span. It never raises.
bridge: Callable[[Span, Span | None], RemoteParent | None] | None = None


class Span:
    """One timed operation. Use as a context manager, a decorator, or start/end by hand.

    Attributes are a plain dict (``span.attrs``); set them with ``span.set(key=value)``. A span
    records an exception that escapes it (status ``error``) and re-raises it.
    """

    # Set by start(): declared here for type checkers (slots hold the values).
    trace_id: int
    span_id: int
    parent_id: int
    sampled: bool
    local: LocalTrace
    start_ns: int
    foreign: Any  # the context bridge's note, set at start only while one is installed

    __slots__ = (
        "_remote",
        "_token",
        "attrs",
        "end_ns",
        "error_message",
        "error_type",
        "events",
        "foreign",
        "kind",
        "local",
        "name",
        "parent_id",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        attrs: dict[str, Any],
        kind: str = "internal",
        remote: RemoteParent | None = None,
    ) -> None:
        self.name = name
        self.attrs = attrs
        self.kind = kind
        self.status = "ok"
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None
        self.end_ns = 0
        self._remote = remote
        self._token: contextvars.Token[Span | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, activate: bool = True) -> Span:
        """Start the span and make it current (unless ``activate`` is False); returns ``self``.

        A leaf span that will have no children (a query) may skip becoming current: it saves a
        context-variable set and reset.
        """
        global new_traces
        self.span_id = randbits(64) or 1  # first: a local root's LocalTrace keeps it
        parent = _current.get()
        if bridge is not None and self._bridged(parent):
            pass
        elif parent is not None:
            self.trace_id = parent.trace_id
            self.parent_id = parent.span_id
            self.sampled = parent.sampled
            self.local = parent.local
        else:
            remote = self._remote
            if remote is not None:
                self.trace_id = remote.trace_id
                self.parent_id = remote.span_id
                self.sampled = remote.sampled
                self.local = LocalTrace(self, remote.tracestate)
            else:
                self.trace_id = trace_id = randbits(128) or 1
                self.parent_id = 0
                new_traces += 1
                # Head sampling inline: the low 64 bits against the configured threshold.
                self.sampled = (trace_id & _MASK64) < sample_threshold
                self.local = LocalTrace(self, None)
            if not self.sampled:
                self.local.buffer = []
        if activate:
            self._token = _current.set(self)
        if events.active:
            try:
                events.dispatch(self.name + ".start", {"span": self})
            except BaseException:
                # A handler interrupted (KeyboardInterrupt, SystemExit, cancellation; handlers
                # raising an Exception are detached by dispatch): the caller's ``with`` never
                # entered, so the span must not stay current for what runs next.
                self.deactivate()
                raise
        self.start_ns = clock_ns()
        return self

    __enter__ = start

    def _bridged(self, parent: Span | None) -> bool:
        """Take the bridge's foreign span as parent if it is the innermost; False if not."""
        outer = bridge(self, parent) if bridge is not None else None
        if outer is None:
            return False
        self.trace_id = outer.trace_id
        self.parent_id = outer.span_id
        if parent is not None and parent.trace_id == outer.trace_id:
            # A foreign span between two of ours: one trace, one LocalTrace (user, tail buffer).
            self.sampled = parent.sampled
            self.local = parent.local
        else:  # a local root, continuing the foreign span as it would a remote parent
            self.sampled = outer.sampled
            self.local = LocalTrace(self, outer.tracestate)
            if not self.sampled:
                self.local.buffer = []
        return True

    def end(self, end_ns: int = 0) -> None:
        """End the span (at ``end_ns`` if given), restore the parent, and hand it to export."""
        self.end_ns = end_ns or clock_ns()
        token = self._token
        if token is not None:
            self._token = None
            try:
                _current.reset(token)
            except ValueError:  # ended in another context (generator, callback)
                self._restore(token)
        local = self.local
        try:
            if local.root is self:
                local.root = None
                if local.deferred is not None:
                    _run_deferred(self, local.deferred)
            if events.active:
                events.dispatch(
                    self.name + (".exception" if self.status == "error" else ".stop"),
                    {"span": self, "duration_ms": (self.end_ns - self.start_ns) / 1e6},
                )
        finally:  # a handler's KeyboardInterrupt or SystemExit goes on once the span is handed over
            on_finish(self)

    def reactivate(self) -> None:
        """Make a started, deactivated span current again (until ``deactivate`` or ``end``)."""
        if self._token is None and not self.end_ns:
            self._token = _current.set(self)

    def deactivate(self) -> None:
        """Stop being the current span without ending (work continues outside this context)."""
        token = self._token
        if token is not None:
            self._token = None
            try:
                _current.reset(token)
            except ValueError:
                self._restore(token)

    @staticmethod
    def _restore(token: contextvars.Token[Span | None]) -> None:
        previous = token.old_value
        _current.set(None if previous is contextvars.Token.MISSING else previous)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.record_exception(exc)
        self.end()

    async def __aenter__(self) -> Span:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- data ------------------------------------------------------------------------------------
    def set(self, **attrs: Any) -> Span:
        """Set attributes; returns ``self``."""
        self.attrs.update(attrs)
        return self

    def snapshot(self) -> Span:
        """A copy of the span as it is now, for code that reads it later (event handlers that run
        on their own thread): its own ``attrs`` dict and ``events`` list, the rest as of this call;
        ``local`` (what the trace's spans share: user, tier, request id) is shared, not copied.
        The copy is not current and is never exported."""
        copy = Span.__new__(Span)
        for name in Span.__slots__:
            value = getattr(self, name, _UNSET)  # the ids and times: absent before start()
            if value is not _UNSET:
                setattr(copy, name, value)
        copy.attrs = dict(self.attrs)
        if self.events is not None:
            copy.events = list(self.events)
        copy._token = None
        return copy

    def keep(self) -> None:
        """Export this span's trace even if head sampling left it out (the tail rule's override)."""
        if self.local is not None:
            self.local.keep = True

    def event(self, name: str, **fields: Any) -> None:
        """Record a timestamped event inside this span."""
        if self.events is None:
            self.events = []
        self.events.append((name, clock_ns(), fields))

    def record_exception(self, exc: BaseException, *, status: str = "error") -> None:
        """Mark the span failed with ``exc``: its type, its message cleaned of secrets and of
        the values it echoes (``redact.error_message``), and ``exception.stacktrace``: the frames
        it passed through, bounded, without source lines (``redact.stack_trace``).

        ``GeneratorExit`` and ``asyncio.CancelledError`` are recorded as ``cancelled``, not errors.
        Only the error path pays for the trace (a walk of its frames); the ok path is untouched.
        """
        if isinstance(exc, GeneratorExit) or type(exc).__name__ == "CancelledError":
            self.status = "cancelled"
            return
        self.status = status
        self.error_type = type(exc).__qualname__
        local = getattr(self, "local", None)
        if (local is not None and local.private) or getattr(exc, _PRIVATE_MARK, False):
            # SDK errors often echo the prompt: a private request never exports the message
            self.error_message = PRIVATE
        else:
            self.error_message = error_message(exc)
        # Imported here, not at the top: this module's import block belongs to the hot path's
        # owner, and errors are rare (a sys.modules lookup each).
        from .redact import stack_trace  # noqa: PLC0415

        trace = stack_trace(exc)
        if trace is not None:
            self.attrs["exception.stacktrace"] = trace

    @property
    def duration_ms(self) -> float:
        """Duration in milliseconds (0 while running)."""
        return (self.end_ns - self.start_ns) / 1e6 if self.end_ns else 0.0

    @property
    def trace_hex(self) -> str:
        """The trace id as 32 hex digits, formatted once per trace (cached on its LocalTrace)."""
        local = self.local
        hexed = local.trace_hex
        if hexed is None:
            hexed = local.trace_hex = self.trace_id.to_bytes(16, "big").hex()
        return hexed

    @property
    def span_hex(self) -> str:
        """The span id as 16 hex digits."""
        return self.span_id.to_bytes(8, "big").hex()

    @property
    def is_root(self) -> bool:
        """True for the first span of the trace in this process."""
        return self.local.root_id == self.span_id

    # -- decorator -------------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        """Use a span as a decorator: each call runs in a fresh span with the same name/attrs."""
        from .traced import wrap  # noqa: PLC0415 - it imports this module; once per decoration

        return wrap(fn, self.name, self.attrs, self.kind)

    def __repr__(self) -> str:
        return f"<Span {self.name!r} status={self.status} {self.duration_ms:.3f}ms>"


class Event:
    """A point event made by ``emit()``: a name, fields, and the span it happened in."""

    __slots__ = ("fields", "local", "name", "sampled", "span_id", "status", "time_ns", "trace_id")

    def __init__(self, name: str, fields: dict[str, Any], parent: Span | None) -> None:
        self.name = name
        self.fields = fields
        self.time_ns = clock_ns()
        self.status = fields.get("status", "ok")
        if parent is None:
            self.trace_id = self.span_id = 0
            self.sampled = True
            self.local: LocalTrace | None = None
        else:
            self.trace_id = parent.trace_id
            self.span_id = parent.span_id
            self.sampled = parent.sampled
            self.local = parent.local


_CURRENT: Any = object()
_UNSET: Any = object()


def emit(event: str, /, *, _parent: Any = _CURRENT, **fields: Any) -> None:
    """Emit a point event (``job.completed``, ``db.slow_query``…) in the current span's trace.

    Handlers attached to a matching prefix receive ``(event, fields)``; exporters receive one
    ``type="event"`` record with ``fields`` as attributes. ``_parent`` ties the event to another
    span than the current one (None: an event outside any trace).
    """
    try:
        if events.active:
            events.dispatch(event, fields)
    finally:  # as in Span.end: an interrupted handler does not lose the event
        on_finish(Event(event, fields, _current.get() if _parent is _CURRENT else _parent))


def _run_deferred(root: Span, callbacks: list[Callable[[Span], None]]) -> None:
    for callback in callbacks:
        try:
            callback(root)
        except Exception:
            _log.warning("obs-middleware: root-span callback failed", exc_info=True)


def span(name: str, /, *, _kind: str = "internal", **attrs: Any) -> Span:
    """Create a span named ``name`` (a low-cardinality template, not a formatted string).

    ``with obs.span("render", model="sdxl") as s: ...`` times the block as a child of the current
    span; ``@obs.span("render")`` times each call of a function. Its cost on the calling thread
    and on the export worker: BENCHMARKS.md (*Small costs*).
    """
    return Span(name, attrs, _kind)


def child_span(  # noqa: PLR0917 - called like Span(name, attrs, kind), with its times
    parent: Span, name: str, attrs: dict[str, Any], kind: str, start_ns: int, end_ns: int = 0
) -> Span:
    """A started span of ``parent``'s trace, timed by the caller from ``start_ns`` (to
    ``end_ns``, if given: then hand it over with ``end(end_ns)``); never current.

    For integrations that time a leaf without a span and build one only when it must be exported
    (a failed or slow query, or a ``Held`` query of a trace kept at its end).
    """
    span = Span(name, attrs, kind)
    span.trace_id = parent.trace_id
    span.parent_id = parent.span_id
    span.sampled = parent.sampled
    span.local = parent.local
    span.span_id = randbits(64) or 1
    span.start_ns = start_ns
    span.end_ns = end_ns
    return span


def current_span() -> Span | None:
    """The span current in this context, or None."""
    return _current.get()


# ``current_span`` without its Python frame, for integrations' per-call paths.
get_current: Callable[[], Span | None] = _current.get


def set_current(span: Span | None) -> contextvars.Token[Span | None]:
    """Make an already started ``span`` current in this context; undo with ``reset_current``.

    For integrations running SDK code on a span's behalf after it was entered (a lazy stream's
    ``next()``), so the spans that code starts nest under it.
    """
    return _current.set(span)


def reset_current(token: contextvars.Token[Span | None]) -> None:
    """Undo ``set_current``."""
    _current.reset(token)
