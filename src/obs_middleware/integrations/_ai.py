"""What every AI-provider integration shares: one ``ai.request`` span per logical call.

API for integration modules (openai, replicate, fal, modal, comfyui)::

    from ._ai import ai_call, current_call, safe

    def _run_wrapper(wrapped, instance, args, kwargs):
        with ai_call("replicate", "run", model=ref) as call:
            safe(_record_inputs, call, kwargs)          # extractors never raise into the app
            result = wrapped(*args, **kwargs)
            safe(_record_result, call, result)
            return result

``ai_call(provider, operation, model=None, *, private=False, modality=None) -> AICall``
    Context manager (use plain ``with`` in async code too). The outermost one starts the span
    ``ai.request`` (kind ``client``; attributes ``ai.provider``, ``ai.operation``, ``ai.modality``
    (a constant of the entry point: text, image, audio, embedding), ``ai.model``: the model the
    request names) and makes the call *active* for ``provider`` in this context. While it
    is active, another ``ai_call`` of the same provider (an SDK entry point calling another:
    replicate ``run`` → ``predictions.create``, fal ``subscribe`` → ``submit``, openai ``.stream()``
    → ``create``) returns the same ``AICall``: its setters enrich the outer span and leaving its
    ``with`` does nothing, so one logical call is one span. An exception leaving the outermost
    ``with`` is recorded and re-raised: status ``error``, or the finer one the integration set on
    ``call.span.status`` before re-raising (``invalid_input``, ``content_violation``). The span ends
    there unless a stream is attached.

``current_call(provider=None) -> AICall | None``
    The active call (of ``provider``), for hooks that only enrich (headers, status polls). The
    active call follows contextvars: hooks in SDK worker threads that copy the caller's context
    (Modal) see it.

``safe(fn, *args) -> Any``: run an extractor; our exceptions are logged once per function.
``extractor_failed(fn)``: the same logging, for a ``try``/``except`` written inline on a hot path.

``AICall`` (each setter replaces, never sums; all values go to the span's attributes):
    set_model(model, *, version=None, app_id=None)     ai.model, ai.model_version, ai.app_id
        ``ai.model`` is the model the request names (OTel ``gen_ai.request.model``): the one
        name a call is grouped by in metrics and reports, whether it succeeds or fails.
    set_response_model(model)                         ai.response_model: the model the provider
        says answered (OTel ``gen_ai.response.model``: OpenAI's dated snapshot, the model behind
        a Replicate deployment); also ``ai.model`` when the request named none. Pricing uses
        the most specific of the two names that has a price.
    set_request_id(request_id)                        ai.request_id (prediction / request id)
    set_inputs(prompt=None, params=None)              ai.prompt, ai.input.<name> (scalars only):
        truncated to ``redaction.prompt_max_chars``, secrets scrubbed, base64/data: URIs
        replaced by ``[BASE64]``, secret-named keys skipped, ``[PRIVATE]`` when the call or its
        trace is private (``obs.mark_private()``), checked again at the end.
    set_tokens(input=, cached=, output=, reasoning=)  ai.input_tokens, ai.cached_tokens,
        ai.output_tokens, ai.reasoning_tokens; input includes cached, output includes reasoning.
        Usage values are checked where they enter (counts: non-negative ints up to 10**12,
        integral floats accepted, bools not; seconds and units: finite, non-negative, bounded).
        A value that is none of these is dropped: its name goes to ``ai.usage.invalid``, it is
        counted in ``obs.dropped`` (``invalid_usage:<provider>``), and the call is not priced.
    set_images(count, *, width=, height=, size=, quality=)  ai.image_count, ai.width, ai.height,
        ai.image_size, ai.image_quality ("1024x1024" sizes also fill width/height).
    set_compute(seconds, *, gpu=None, gpu_count=1)    ai.gpu_seconds, ai.gpu, ai.gpu_count
    set_units(units)                                  ai.billable_units (fal)
    set_cost(usd, *, unknown=None)                    a provider-reported cost (skips the
                                                      table), or None + the reason it is unknown;
                                                      a negative or non-finite one is dropped
    set_queue_ms(ms)                                  ai.queue_ms
    set_run_ms(ms)                                    ai.run_ms (time on the provider's hardware)
    set_status(status, *, error_type=None, message=None)  a failure reported, not raised
    fail(exc, *, status="error")                      an exception the SDK handled
    event(name, **fields)                             a span event (queue position, progress)
    attrs / span / provider / operation / usage       raw access; ``handle``: a free slot for
                                                      the SDK object (prediction, request handle)
    model / response_model                            read only (the setters keep them equal to
                                                      ``ai.model`` / ``ai.response_model``)
    set_modality, set_response_id, set_cache, set_content_safety, set_prompt_transformed,
    set_image_params                                  the optional image-service fields
                                                      (``_ai_fields``): no cost until called
    call(fn)                                          decorator: each call of ``fn`` (sync or
                                                      async) is a new call like this one
    wrap_stream(stream, on_item=None, *, on_end=None, reenter=False)
        Attach a (sync or async) iterator or SDK stream object: the call then ends when the
        stream ends (exhausted, error, ``close``/``aclose``/``__exit__``, or garbage
        collection; ``ai.stream_end`` = done|error|close|gc) instead of at the ``with`` exit.
        Returns a transparent proxy (iteration, attributes and ``isinstance`` unchanged).
        ``on_item(call, item)`` sees each item (take usage from the last chunk that has it);
        ``on_end(call)`` runs before the end. ``reenter=True`` makes the call active and its
        span current during each ``next()`` (lazy SDK generators that do their HTTP then).
        Only the first stream attached to a call is wrapped; later ones are returned as is.
    end_stream(how="close")                           end a stream-attached call from outside
                                                      (an SDK context manager's ``__exit__``)

At the end: ``cost.usd`` (or ``cost.unknown`` with the reason) and ``cost.pricing_version`` on
the span, the cost added to the local root span's ``cost.usd`` (pricing never keeps the span
from ending; a negative or non-finite cost is never used); metrics ``ai.duration`` (histogram;
``ai.requests`` is its count) and ``ai.errors`` (any status but ok/cancelled) by provider, model
(the requested ``ai.model``, never the snapshot), operation (+ error type), ``ai.user_errors``
instead of ``ai.errors`` for a user-caused status (``invalid_input``, ``content_violation``:
``_core/status.py``); histograms ``ai.time_to_first_token``, ``ai.output_tokens_per_s``
(streams), ``ai.queue_time`` and ``ai.run_time`` by the same labels, when the call has the
figure; ``ai.cost_usd`` by
provider, model, operation, route (the root's ``http.route``, or ``job.service_type``) and tier,
recorded when the root ends.

Beside this module: ``_ai_fields`` (the image-service setters, the decorator),
``_ai_values`` (prompts sanitized, usage numbers checked, ``safe``),
``_ai_stream`` (the stream proxies) and ``_ai_metrics`` (the AI metrics, the cost rollup).
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from .. import _setup
from .._core import cost
from .._core import span as _span
from .._core.internal import internal_error
from .._core.redact import MAX_MESSAGE, PRIVATE, scrub_error
from .._core.status import USER_ERRORS
from ._ai_fields import CallFields, decorate
from ._ai_metrics import (
    ai_duration,
    ai_errors,
    ai_user_errors,
    record_cost,
    record_latency,
    rollup,
)
from ._ai_stream import AsyncStream, SyncStream
from ._ai_usage import CallUsage
from ._ai_values import (
    MAX_PARAMS,
    SECRET_KEYS,
    clean_text,
    extractor_failed,
    privatize,
    safe,
)

__all__ = ["AICall", "ai_call", "clean_text", "current_call", "extractor_failed", "safe"]

_log = logging.getLogger("obs_middleware")

_active: contextvars.ContextVar[AICall | None] = contextvars.ContextVar("obs_ai_call", default=None)
# Calls ended by garbage collection while this thread was recording AI metrics: finished after
# that (taking the same metric lock again from a finalizer would deadlock).
_tls = threading.local()
_orphans: deque[AICall] = deque()


class AICall(CallUsage, CallFields):
    """One logical AI provider call: its span, usage and cost.

    Made by ``obs.ai_call(...)`` (or an integration); enter it with ``with`` (sync or async
    code), or decorate a function with it. Setters record usage (``set_tokens``,
    ``set_images``, ``set_units``, ``set_compute``), a cost (``set_cost``), ids, the
    image-service fields (``set_cache``, ``set_content_safety``, ``set_prompt_transformed``,
    ``set_image_params``) and failures (``set_status``, ``fail``); at the end the call is
    priced, its metrics recorded and its cost added to the trace's root.
    """

    __slots__ = (
        "_depth",
        "_stream",
        "_token",
        "finished",
        "handle",
        "model",
        "operation",
        "private",
        "provider",
        "response_model",
        "span",
        "usage",
    )

    def __init__(
        self,
        provider: str,
        operation: str,
        model: str | None,
        private: bool,
        modality: str | None = None,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.private = private
        # The metric label (``ai.model``) and the name pricing tries first: kept here as well as
        # on the span, so that the end reads them without a lookup.
        self.model = str(model) if model else ""
        self.response_model: str | None = None
        attrs: dict[str, Any] = {"ai.provider": provider, "ai.operation": operation}
        if modality:
            attrs["ai.modality"] = modality
        if model:
            attrs["ai.model"] = self.model
        self.span = _span.Span("ai.request", attrs, "client")
        self.usage = cost.Usage()
        self.handle: Any = None
        self.finished = False
        self._depth = 0
        self._stream = False
        self._cost_usd: float | None = None
        self._cost_unknown: str | None = None
        self._token: contextvars.Token[AICall | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> AICall:
        self._depth += 1
        if self._depth == 1 and self._token is None and not self._stream:
            self.span.start()
            self._token = _active.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth:
            return
        try:
            token, self._token = self._token, None
            if token is not None:
                _active.reset(token)
            if exc is not None:
                if self.private:  # every span the exception crosses hides its message too
                    _span.mark_private_exception(exc)
                status = self.span.status  # an integration may have set a finer one
                self.span.record_exception(exc, status="error" if status == "ok" else status)
                self._finish("error" if self._stream else None)
            elif self._stream:
                self.span.deactivate()
            else:
                self._finish(None)
        except Exception:
            internal_error("ai call end", "call")

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate ``fn`` (sync or async): each call of it is a new AI call like this one."""
        provider, operation, private = self.provider, self.operation, self.private
        model, modality = self.model or None, self.span.attrs.get("ai.modality")
        return decorate(
            fn, lambda: ai_call(provider, operation, model, private=private, modality=modality)
        )

    def wrap_stream(
        self,
        stream: Any,
        on_item: Callable[[AICall, Any], None] | None = None,
        *,
        on_end: Callable[[AICall], None] | None = None,
        reenter: bool = False,
    ) -> Any:
        """End this call with ``stream`` instead of at the ``with`` exit; returns a proxy."""
        if self._stream or self.finished:
            return stream
        try:
            if hasattr(stream, "__anext__") or hasattr(stream, "__aiter__"):
                proxy: Any = AsyncStream(stream, self, on_item, on_end, reenter)
            else:
                proxy = SyncStream(stream, self, on_item, on_end, reenter)
        except Exception:
            internal_error("ai wrap_stream", "call")
            return stream
        self._stream = True
        return proxy

    def end_stream(self, how: str = "close") -> None:
        """End a stream-attached call now (idempotent)."""
        if self._stream and not self.finished:
            self._finish(how)

    def _reenter(self) -> tuple[Any, Any]:
        # A lazy SDK generator does its HTTP inside next(): make the call active (entered once
        # more, so entry points called there join it) and its span current, so client spans nest.
        self._depth += 1
        return _active.set(self), _span.set_current(self.span)

    def _leave(self, tokens: tuple[Any, Any]) -> None:
        self._depth -= 1
        _span.reset_current(tokens[1])
        _active.reset(tokens[0])

    # -- setters ---------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The span's attributes (raw keys)."""
        return self.span.attrs

    def set_model(
        self, model: str | None, *, version: str | None = None, app_id: str | None = None
    ) -> None:
        """The model the request names (the metric label), its version id, app/endpoint id."""
        attrs = self.span.attrs
        if model:
            attrs["ai.model"] = self.model = str(model)
        if version:
            attrs["ai.model_version"] = version
        if app_id:
            attrs["ai.app_id"] = app_id

    def set_response_model(self, model: str | None) -> None:
        """The model the provider says answered (a dated snapshot): ``ai.response_model``.

        Calls stay grouped by the requested ``ai.model``; this name only refines the price. It
        becomes ``ai.model`` too when the request named no model.
        """
        if model:
            attrs = self.span.attrs
            name = model if type(model) is str else str(model)
            self.response_model = attrs["ai.response_model"] = name
            if not self.model:
                self.model = attrs["ai.model"] = name

    def set_request_id(self, request_id: str | None) -> None:
        """Set the provider's id for this call (request, prediction, function call)."""
        if request_id:
            self.span.attrs["ai.request_id"] = str(request_id)

    def set_inputs(self, prompt: Any = None, params: Mapping[str, Any] | None = None) -> None:
        """Sanitized prompt (``params["prompt"]`` when not given) and scalar parameters."""
        attrs = self.span.attrs
        private = self.private or self.span.local.private
        limit = _setup.current_config().redaction.prompt_max_chars
        if prompt is None and params is not None:
            prompt = params.get("prompt")
        if prompt is not None:
            attrs["ai.prompt"] = PRIVATE if private else clean_text(prompt, limit)
        if not params:
            return
        kept = 0
        for key, value in params.items():
            if kept >= MAX_PARAMS:
                break
            if not isinstance(key, str) or key == "prompt" or key.lower() in SECRET_KEYS:
                continue
            if isinstance(value, (bool, int, float)):
                attrs["ai.input." + key] = value
            elif isinstance(value, str):
                attrs["ai.input." + key] = PRIVATE if private else clean_text(value, limit)
            else:
                continue
            kept += 1

    def set_status(
        self, status: str, *, error_type: str | None = None, message: str | None = None
    ) -> None:
        """Mark the call failed (or another status) without an exception reaching us."""
        span = self.span
        span.status = status
        if error_type is not None:
            span.error_type = error_type
        if message is not None:
            span.error_message = scrub_error(message)[:MAX_MESSAGE]

    def fail(self, exc: BaseException, *, status: str = "error") -> None:
        """Record an exception the SDK handled (or reported) as this call's failure."""
        self.span.record_exception(exc, status=status)

    def event(self, name: str, **fields: Any) -> None:
        """Add a timestamped event to the span."""
        self.span.event(name, **fields)

    # -- end -------------------------------------------------------------------------------------
    def _finish(self, how: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        if getattr(_tls, "busy", False):  # a finalizer ran inside our own metric update
            _orphans.append(self)
            return
        _tls.busy = True
        try:
            self._end(how)
        except Exception:
            internal_error("ai call finish", "call")
        finally:
            _tls.busy = False
        while _orphans:
            orphan = _orphans.popleft()
            safe(orphan._end, "gc")

    def _end(self, how: str | None) -> None:
        span = self.span
        attrs = span.attrs
        local = span.local
        if how is not None:
            attrs["ai.stream_end"] = how
        if self.private or local.private:
            privatize(span)
        labels = (self.provider, self.model, self.operation)
        try:
            self._price(attrs, local, labels)
        except Exception:
            attrs.pop("cost.usd", None)
            attrs["cost.unknown"] = "pricing failed"
            internal_error("ai pricing", "call")
        finally:
            span.end()  # whatever pricing did: a span left open stays current for later spans
        ai_duration.record(labels, span.duration_ms)
        record_latency(labels, attrs)  # time to first token, tokens/s, queue and run time
        status = span.status
        if status not in ("ok", "cancelled"):
            if status in USER_ERRORS:
                ai_user_errors.add((*labels, status))
            else:
                ai_errors.add((*labels, span.error_type or status))

    def _price(
        self, attrs: dict[str, Any], local: _span.LocalTrace, labels: tuple[str, str, str]
    ) -> None:
        if self._cost_usd is not None:
            usd: float | None = self._cost_usd
            attrs["cost.pricing_version"] = "provider"
        elif self._cost_unknown is not None:
            usd = None
            attrs["cost.unknown"] = self._cost_unknown
        elif "ai.usage.invalid" in attrs:
            usd = None
            attrs["cost.unknown"] = "invalid usage reported: " + attrs["ai.usage.invalid"]
        else:
            prices = cost.table(_setup.current_config().pricing)
            usd, unknown = prices.quote(self.provider, self.model, self.usage, self.response_model)
            attrs["cost.pricing_version"] = prices.version
            if usd is not None and not 0 <= usd < math.inf:  # a negative price in the table
                usd, unknown = None, f"invalid cost computed: {usd}"
            if usd is None:
                attrs["cost.unknown"] = unknown
        root = local.root  # None once it ended
        own_root = local.root_id == self.span.span_id
        if usd is None:
            if not own_root and root is not None and not root.end_ns:
                root.attrs["cost.unknown"] = "some AI calls have no price"
            return
        attrs["cost.usd"] = usd
        if own_root or root is None or root.end_ns:  # its own trace, or its root has ended
            record_cost(labels, usd, local)
            return
        root.attrs["cost.usd"] = cost.round_usd(root.attrs.get("cost.usd", 0.0) + usd)
        rollup(local).add(labels, usd, local)

    def __repr__(self) -> str:
        return f"<AICall {self.provider}.{self.operation} depth={self._depth}>"


def ai_call(
    provider: str,
    operation: str,
    model: str | None = None,
    *,
    private: bool = False,
    modality: str | None = None,
) -> AICall:
    """Return the call to enter for one SDK entry point: new, or the active one of ``provider``."""
    active = _active.get()
    if active is not None and active.provider == provider and not active.finished:
        if model and not active.model:
            active.set_model(model)
        if private:
            active.private = True
        return active
    return AICall(provider, operation, model, private, modality)


def current_call(provider: str | None = None) -> AICall | None:
    """Return the active call (of ``provider``, if given) in this context, or None."""
    active = _active.get()
    if active is None or active.finished or (provider is not None and active.provider != provider):
        return None
    return active
