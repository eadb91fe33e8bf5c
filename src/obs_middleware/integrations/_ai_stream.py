"""Streams attached to an AI call (``AICall.wrap_stream``): transparent proxies that end the call
when the stream ends. Part of ``_ai``, split out for size: it drives the call's own lifecycle
(``StreamCall``: ``_finish``, ``_reenter``/``_leave``), which nothing outside the ``_ai`` modules
calls.

Latency as LLM teams read it: the proxy reads the clock once, on the first item only, and at the
end sets ``ai.time_to_first_token_ms`` (call start to the first chunk or event arriving) and,
when the call reported output tokens, ``ai.output_tokens_per_s`` (output tokens over the time
from the first item to the end: the generation rate, time to first token left out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import wrapt

from .._core import span as _span
from .._core.internal import internal_error
from .._core.span import Span
from ._ai_values import safe

__all__ = ["AsyncStream", "StreamCall", "SyncStream"]


class StreamCall(Protocol):
    """What a stream proxy needs of its call (``AICall``)."""

    finished: bool
    span: Span

    def _reenter(self) -> tuple[Any, Any]: ...

    def _leave(self, tokens: tuple[Any, Any]) -> None: ...

    def _finish(self, how: str | None) -> None: ...


class _StreamProxy(wrapt.ObjectProxy[Any]):
    """A transparent proxy over a stream that ends its call with the stream."""

    _next_method = "__next__"

    def __init__(
        self,
        wrapped: Any,
        call: StreamCall,
        on_item: Callable[[Any, Any], None] | None,
        on_end: Callable[[Any], None] | None,
        reenter: bool,
    ) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_on_item = on_item
        self._self_on_end = on_end
        self._self_reenter = reenter
        self._self_first_ns = 0  # when the first item arrived (0: none yet)
        # Iterate the object itself when it is an iterator; else ask it for one on first use.
        self._self_it = wrapped if hasattr(type(wrapped), self._next_method) else None

    def _got(self, call: StreamCall, item: Any) -> Any:
        """Note an item the stream gave (the first one's time, the integration's callback)."""
        if not self._self_first_ns:
            self._self_first_ns = _span.clock_ns()
        on_item = self._self_on_item
        if on_item is not None:
            safe(on_item, call, item)
        return item


class SyncStream(_StreamProxy):
    """A sync stream proxy."""

    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> Any:
        call = self._self_call
        tokens = call._reenter() if self._self_reenter and not call.finished else None
        try:
            it = self._self_it
            if it is None:
                it = self._self_it = iter(self.__wrapped__)
            item = next(it)
        except StopIteration:
            _stream_done(self, call, None)
            raise
        except BaseException as exc:
            _stream_done(self, call, exc)
            raise
        finally:
            if tokens is not None:
                call._leave(tokens)
        return self._got(call, item)

    def close(self) -> Any:
        """Close the underlying stream and end the call."""
        try:
            closer = getattr(self.__wrapped__, "close", None)
            return closer() if closer is not None else None
        finally:
            _stream_done(self, self._self_call, None, "close")

    def __enter__(self) -> SyncStream:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__exit__", None)
            return exit_(*exc_info) if exit_ is not None else None
        finally:
            _stream_done(self, self._self_call, None, "close")

    def __del__(self) -> None:
        call = self._self_call
        if not call.finished:
            _stream_done(self, call, None, "gc")


class AsyncStream(_StreamProxy):
    """An async stream proxy."""

    _next_method = "__anext__"

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        call = self._self_call
        tokens = call._reenter() if self._self_reenter and not call.finished else None
        try:
            it = self._self_it
            if it is None:
                it = self._self_it = self.__wrapped__.__aiter__()
            item = await it.__anext__()
        except StopAsyncIteration:
            _stream_done(self, call, None)
            raise
        except BaseException as exc:
            _stream_done(self, call, exc)
            raise
        finally:
            if tokens is not None:
                call._leave(tokens)
        return self._got(call, item)

    async def aclose(self) -> None:
        """Close the underlying stream (``aclose`` or async ``close``) and end the call."""
        await self.close()

    async def close(self) -> None:
        """Close the underlying stream and end the call."""
        try:
            wrapped = self.__wrapped__
            closer = getattr(wrapped, "aclose", None) or getattr(wrapped, "close", None)
            if closer is not None:
                result = closer()
                if hasattr(result, "__await__"):
                    await result
        finally:
            _stream_done(self, self._self_call, None, "close")

    async def __aenter__(self) -> AsyncStream:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__aexit__", None)
            return (await exit_(*exc_info)) if exit_ is not None else None
        finally:
            _stream_done(self, self._self_call, None, "close")

    def __del__(self) -> None:
        call = self._self_call
        if not call.finished:
            _stream_done(self, call, None, "gc")


def _stream_done(
    proxy: SyncStream | AsyncStream,
    call: StreamCall,
    exc: BaseException | None,
    how: str | None = None,
) -> None:
    if call.finished:
        return
    try:
        if exc is not None:
            call.span.record_exception(exc)
            how = how or ("close" if call.span.status == "cancelled" else "error")
        on_end = proxy._self_on_end
        if on_end is not None:
            safe(on_end, call)
        if proxy._self_first_ns:
            _first_token(call.span, proxy._self_first_ns)
    except Exception:
        internal_error("ai stream end", "call")
    call._finish(how or "done")


def _first_token(span: Span, first_ns: int) -> None:
    """Time to first token and output tokens per second, from the first item's clock read."""
    attrs = span.attrs
    if span.start_ns:
        attrs["ai.time_to_first_token_ms"] = round((first_ns - span.start_ns) / 1e6, 3)
    tokens = attrs.get("ai.output_tokens")
    if type(tokens) is int and tokens > 0:
        generating_s = (_span.clock_ns() - first_ns) / 1e9
        if generating_s > 0:
            attrs["ai.output_tokens_per_s"] = round(tokens / generating_s, 3)
