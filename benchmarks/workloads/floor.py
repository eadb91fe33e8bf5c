"""The floor: the least instrumentation that still times every request, query and AI call.

``_ab.py W… --mode floor`` measures it in place of obs-middleware: a pure ASGI middleware that
sets a context variable for the request (so that children could nest), reads the clock twice
and appends one tuple; the engine's ``do_execute`` timed the same way; for W1 the SDK's
``AsyncCompletions.create`` wrapped with ``wrapt`` (as obs-middleware patches it) appending the
model and its two token counts. No ids, names, metrics, sampling, cost nor export. A budget
below what this costs cannot be met by any tracer doing more (BENCHMARKS.md, *The floor*).
"""

from __future__ import annotations

import collections
import contextvars
import time
from typing import Any

import wrapt

NOTE = (
    "floor: a context variable and one tuple per request, one tuple per query and AI call; "
    "no ids, names, metrics, sampling nor export"
)

records: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=100_000)
_current: contextvars.ContextVar[Any] = contextvars.ContextVar("floor", default=None)
_clock = time.perf_counter_ns


def middleware(app: Any) -> Any:
    """``app`` timed per HTTP request."""

    async def timed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        token = _current.set(scope)
        start = _clock()
        try:
            await app(scope, receive, send)
        finally:
            _current.reset(token)
            records.append((scope["path"], start, _clock()))

    return timed


def time_queries(engine: Any) -> None:
    """Time every statement ``engine`` executes (its dialect's ``do_execute``)."""
    dialect = engine.dialect
    execute = dialect.do_execute

    def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        start = _clock()
        execute(cursor, statement, parameters, context)
        records.append((statement, start, _clock()))

    dialect.do_execute = do_execute


async def _create(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    start = _clock()
    reply = await wrapped(*args, **kwargs)
    usage = reply.usage
    records.append(
        (kwargs.get("model"), start, _clock(), usage.prompt_tokens, usage.completion_tokens)
    )
    return reply


def new_app(module: Any, url: str) -> Any:
    """``module``'s app with the floor's instrumentation. W1's app binds the SDK method when it
    is built: the class is patched for that moment only, so the bare apps stay bare."""
    from openai.resources.chat.completions import completions  # noqa: PLC0415

    cls = completions.AsyncCompletions
    original = cls.__dict__["create"]
    wrapt.wrap_function_wrapper(completions, "AsyncCompletions.create", _create)
    try:
        app, engine = module.new_app(url)
    finally:
        cls.create = original
    if engine is not None:
        time_queries(engine)
    return middleware(app)
