"""OpenTelemetry: obs spans and OpenTelemetry spans continue each other's traces in one process.

An obs span (``obs.span``, the middleware's server span, an integration's span) started while an
OpenTelemetry span is the innermost current span takes it as parent: its trace id, its span id as
``parent_id``, its sampled flag and ``tracestate``, as an incoming ``traceparent`` would (and over
one: the OpenTelemetry span, which continued the caller, is the nearer parent). The other way, while
an obs span is the innermost, OpenTelemetry's current span is a ``NonRecordingSpan`` of our ids, so
a span any OpenTelemetry tracer starts there is its child (sampled as our trace is), and
OpenTelemetry's propagators and log correlation carry our ids. Nested either way (obs → OTel → obs,
OTel → obs → OTel), each span continues the innermost.

How: as each obs span starts, the core's ``span.bridge`` hook notes the OpenTelemetry span
current then (on ``Span.foreign``); OpenTelemetry's current span is the more recent one exactly
when it is no longer that one. OpenTelemetry's runtime context
(``opentelemetry.context._RUNTIME_CONTEXT``, read by every ``get_current()`` whichever module
imported that function) is wrapped: while an obs span is innermost, ``get_current()`` returns the
context with our span in it (built once per span and context, then cached on the span). An
OpenTelemetry span that records nothing (sampled out) between two obs spans of one trace is
skipped, so an exported obs span never names an unexported parent.

Stacked with OpenTelemetry's ASGI middleware, whichever is outside makes the server span and the
inner one's span is its child (OpenTelemetry's then an ``INTERNAL`` span, as it makes under any
current span). An obs trace head-sampled out gives its OpenTelemetry children an unsampled parent:
OpenTelemetry's parent-based sampler drops them, even when the tail rule later keeps ours.

Cost with the integration on: each obs span start reads OpenTelemetry's context once, and one
started right under an OpenTelemetry span also copies that span's ids; each OpenTelemetry
``get_current()`` reads the obs context once more (its answer inside an obs span is cached).
With it off (the default until ``instrument_all()``): one global read per span start.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace.propagation import _SPAN_KEY

from .._core import span as _span
from .._core.context import parse_tracestate
from .._core.internal import internal_error, warn_once
from .._core.patches import Patches
from ._registry import lookup

__all__ = ["ObsSpan", "patch", "supported", "unpatch"]

supported = lookup("opentelemetry").requirement

_patches = Patches("opentelemetry")
_get_obs = _span.get_current


class ObsSpan(NonRecordingSpan):
    """An obs span as OpenTelemetry sees it while it is the innermost: our trace and span ids,
    our sampled flag and ``tracestate``; it records nothing itself."""

    def __init__(self, obs_span: _span.Span) -> None:
        # No reference back to the obs span: the span caches contexts holding this object, and a
        # cycle would leave every such span to the cycle collector.
        tracestate = obs_span.local.tracestate
        super().__init__(
            SpanContext(
                obs_span.trace_id,
                obs_span.span_id,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if obs_span.sampled else 0),
                trace_state=TraceState.from_header([tracestate]) if tracestate else None,
            )
        )


def _valid(current: Any) -> bool:
    """Whether ``current`` (a context's span value) is a span with a valid context: an invalid
    one (a no-op tracer's, with no SDK installed) hides nothing."""
    return isinstance(current, OtelSpan) and current.get_span_context().is_valid


class _Bridged(_RuntimeContext):
    """OpenTelemetry's runtime context, with the innermost obs span as its current span."""

    def __init__(self, inner: _RuntimeContext) -> None:
        self.inner = inner

    def attach(self, context: Context) -> Token[Context]:
        """Attach ``context`` to the wrapped runtime context."""
        return self.inner.attach(context)

    def detach(self, token: Token[Context]) -> None:
        """Detach through the wrapped runtime context."""
        self.inner.detach(token)

    def get_current(self) -> Context:
        """The current context, holding the obs span if it is more recent than OpenTelemetry's.

        The answer depends only on the obs span and OpenTelemetry's context object (immutable):
        it is cached on the span, as ``(outer, context, answer, ObsSpan)`` in one tuple, so
        threads sharing a span never see a torn pair.
        """
        context = self.inner.get_current()
        obs_span = _get_obs()
        if obs_span is None:
            return context
        try:
            note = getattr(obs_span, "foreign", None)  # unset: started before the bridge
            if type(note) is tuple:
                if note[1] is context:
                    return note[2]  # type: ignore[no-any-return]
                outer, seen = note[0], note[3]
            else:
                outer, seen = note, None
            current = context.get(_SPAN_KEY)
            if current is not outer and _valid(current):
                answer = context  # an OpenTelemetry span started since ours: it is innermost
            else:
                if seen is None:
                    seen = ObsSpan(obs_span)
                answer = Context({**context, _SPAN_KEY: seen})
            obs_span.foreign = (outer, context, answer, seen)
        except Exception:
            internal_error("opentelemetry get_current", "context")
            return context
        return answer

    def note(self, obs_span: _span.Span, parent: _span.Span | None) -> _span.RemoteParent | None:
        """``span.bridge``: note OpenTelemetry's current span on ``obs_span``; return it as the
        parent if it is more recent than ``parent`` (the obs span current), else None."""
        try:
            current: Any = self.inner.get_current().get(_SPAN_KEY)
            obs_span.foreign = current
            if current is None:
                return None
            if parent is not None:
                note = getattr(parent, "foreign", None)
                if current is (note[0] if type(note) is tuple else note):
                    return None  # the obs parent started inside it: ours is the innermost
            found = (
                current.get_span_context()
                if isinstance(current, OtelSpan)
                else INVALID_SPAN_CONTEXT  # not a span: OpenTelemetry ignores it too
            )
            if not found.is_valid or (
                parent is not None
                and found.trace_id == parent.trace_id
                and not found.is_remote
                and not current.is_recording()
            ):
                return None  # sampled out (or ours): the obs parent is the nearest exported one
            state = found.trace_state
            return _span.RemoteParent(
                found.trace_id,
                found.span_id,
                found.trace_flags.sampled,
                parse_tracestate(state.to_header().encode("ascii")) if state else None,
            )
        except Exception:
            internal_error("opentelemetry span start", "span")
            return None


def patch() -> None:
    """Wrap OpenTelemetry's runtime context and install the core's bridge hook (idempotent)."""
    if _patches:
        return
    inner = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if not isinstance(inner, _RuntimeContext):
        warn_once(
            "opentelemetry runtime context",
            "opentelemetry: no runtime context found, traces not bridged",
        )
        return
    bridged = _Bridged(inner)
    _patches.set(otel_context, "_RUNTIME_CONTEXT", bridged)
    _patches.set(_span, "bridge", bridged.note)


def unpatch() -> None:
    """Restore OpenTelemetry's runtime context and remove the bridge hook (idempotent)."""
    _patches.undo()
