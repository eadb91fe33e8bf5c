"""``obs.traced`` and ``@obs.span(...)``: a function whose every call is a span, for sync, async,
generator and async-generator functions. Part of ``span``, split out for size; a generator's span
is made current only while its own code runs, through ``span``'s context variable directly (a call
per step would cost every traced generator).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, TypeVar, cast, overload

from .span import Span, _current

__all__ = ["traced", "wrap"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def traced(fn: F, /) -> F: ...


@overload
def traced(fn: None = None, /, *, name: str | None = None, **attrs: Any) -> Callable[[F], F]: ...


def traced(
    fn: F | None = None, /, *, name: str | None = None, **attrs: Any
) -> F | Callable[[F], F]:
    """Decorate a sync, async, generator or async-generator function so each call is a span.

    ``@obs.traced`` names the span after the function's qualified name; ``@obs.traced(name=...,
    **attrs)`` sets the name and static attributes.
    """
    if fn is not None:
        return wrap(fn, name or fn.__qualname__, attrs, "internal")
    return lambda f: wrap(f, name or f.__qualname__, attrs, "internal")


def wrap(fn: F, name: str, attrs: dict[str, Any], kind: str) -> F:
    """``fn`` wrapped so that each call runs in a fresh span ``name`` with ``attrs``."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            span = Span(name, dict(attrs), kind).start()
            span.deactivate()
            gen = fn(*args, **kwargs)
            step: Callable[[Any], Awaitable[Any]] = gen.asend
            arg: Any = None
            while True:
                token = _current.set(span)  # current only while the generator's own code runs
                try:
                    item = await step(arg)
                except StopAsyncIteration:
                    span.end()
                    return
                except BaseException as exc:
                    span.record_exception(exc)
                    span.end()
                    raise
                finally:
                    _current.reset(token)
                try:
                    arg = yield item
                    step = gen.asend
                except GeneratorExit:
                    await gen.aclose()  # the consumer stopped early: cancelled, not failed
                    span.record_exception(GeneratorExit())
                    span.end()
                    raise
                except BaseException as exc:
                    step, arg = gen.athrow, exc

        return cast(F, agen_wrapper)
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            span = Span(name, dict(attrs), kind).start()
            span.deactivate()
            gen = fn(*args, **kwargs)
            step: Callable[[Any], Any] = gen.send
            arg: Any = None
            while True:
                token = _current.set(span)  # current only while the generator's own code runs
                try:
                    item = step(arg)
                except StopIteration as stop:
                    span.end()
                    return stop.value
                except BaseException as exc:
                    span.record_exception(exc)
                    span.end()
                    raise
                finally:
                    _current.reset(token)
                try:
                    arg = yield item
                    step = gen.send
                except GeneratorExit:
                    gen.close()  # the consumer stopped early: cancelled, not failed
                    span.record_exception(GeneratorExit())
                    span.end()
                    raise
                except BaseException as exc:
                    step, arg = gen.throw, exc

        return cast(F, gen_wrapper)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with Span(name, dict(attrs), kind):
                return await fn(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with Span(name, dict(attrs), kind):
            return fn(*args, **kwargs)

    return cast(F, wrapper)
