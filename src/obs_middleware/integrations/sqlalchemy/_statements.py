"""The statement hot path: thin wrappers around the dialect's three DBAPI entry points.

One ``db.query`` span per statement inside a trace, metrics for every statement, slow queries
with the code location that issued them, the optional sqlcommenter ``traceparent``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..._core import events
from ..._core import span as _span
from ..._core.context import format_traceparent
from ..._core.metrics import FOLD_AT
from ..._core.redact import PRIVATE, error_message
from ..._core.sampling import MAX_BUFFERED
from ._state import DIALECT_METHODS, EngineState, Entry, internal_error, library, log

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

    from ._metrics import Metrics

__all__ = ["wrap_dialect"]

_SPAN = "db.query"
_PREPARING_DRIVERS = frozenset({"asyncpg"})  # every statement is a server-side prepared one
_skip_prefixes: tuple[str, ...] = ()


def wrap_dialect(state: EngineState, dialect: Dialect, metrics: Metrics) -> bool:
    """Wrap the dialect's three DBAPI entry points (instance attributes: other engines untouched).

    Plain closures with the entry points' own signatures, not ``wrapt`` nor ``*args, **kwargs``:
    this runs per statement, and either costs several times a plain call (BENCHMARKS.md).
    ``do_execute_no_params`` (only under the ``no_parameters`` execution option) goes through
    ``do_execute``'s shape.
    """
    if any(name in dialect.__dict__ for name in DIALECT_METHODS):
        return False
    no_params = dialect.do_execute_no_params

    def without_params(cursor: Any, statement: str, parameters: Any, context: Any) -> Any:
        return no_params(cursor, statement, context)

    timed_no_params = _timed(state, without_params, metrics, many=False)

    def timed_execute_no_params(cursor: Any, statement: str, context: Any = None) -> Any:
        return timed_no_params(cursor, statement, None, context)

    wrappers = {
        "do_execute": _timed(state, dialect.do_execute, metrics, many=False),
        "do_execute_no_params": timed_execute_no_params,
        "do_executemany": _timed(state, dialect.do_executemany, metrics, many=True),
    }
    for name, timed in wrappers.items():
        timed._obs_state = state  # type: ignore[attr-defined]
        setattr(dialect, name, timed)
    return True


def _timed(
    state: EngineState, call: Callable[..., Any], metrics: Metrics, *, many: bool
) -> Callable[..., Any]:
    statements = state.statements
    new_span = _span.Span
    current = _span.get_current
    duration = metrics.duration

    def timed(cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
        try:
            entry = statements.get(statement) or state.entry(statement, duration)
            sent = statement
            span = None
            parent = current()
            # The parent of a query held as a tuple: in an unsampled trace, a span is built only
            # if the trace is kept (most are forgotten); span handlers get real ones.
            held = (
                parent
                if parent is not None
                and not parent.sampled
                and parent.local.buffer is not None
                and not state.commenter
                and not events.active
                else None
            )
            if parent is None or held is not None:  # outside any trace: metrics only
                start = _span.clock_ns()
            else:
                # nothing runs inside it but the driver: it never becomes current
                span = new_span(_SPAN, entry[0].copy(), "client").start(activate=False)
                start = span.start_ns
                if state.commenter and entry[2]:
                    sent = _commented(statement, span, cursor, state)
        except Exception:
            internal_error("statement start")
            return call(cursor, statement, parameters, context)
        try:
            result = call(cursor, sent, parameters, context)
        except BaseException as exc:
            _failed(span, start, entry, exc, metrics, held, many=many)
            raise
        try:
            end = _span.clock_ns()
            elapsed = end - start
            if held is not None:
                buffer = held.local.buffer
                if elapsed >= state.slow_ns:
                    span = _held_span(held, entry, start, 0, many, cursor.rowcount)
                elif buffer is not None and len(buffer) < MAX_BUFFERED:
                    buffer.append((_held_span, held, entry, start, end, many, cursor.rowcount))
                else:  # its root has ended, or the buffer is full: the sampler decides
                    _held_span(held, entry, start, 0, many, cursor.rowcount).end(end)
            elif span is not None:
                attrs = span.attrs
                if many:
                    attrs["db.executemany"] = True
                rows = cursor.rowcount
                if type(rows) is int and rows >= 0:
                    attrs["db.rows"] = rows
                if elapsed < state.slow_ns:
                    span.end(end)
            if elapsed >= state.slow_ns:
                _slow(state, span, entry, start, end, metrics)
            series = entry[3]
            series.append(elapsed / 1e6)
            if len(series) >= FOLD_AT:
                series.fold()
        except Exception:
            internal_error("statement end")
        return result

    return timed


def _held_span(  # noqa: PLR0917 - the fields of a held tuple, in order
    parent: _span.Span, entry: Entry, start: int, end: int, many: bool, rows: Any
) -> _span.Span:
    """The ``db.query`` span of a statement timed without one (``end`` 0: not ended yet;
    ``rows`` the cursor's ``rowcount``)."""
    attrs = entry[0].copy()
    if many:
        attrs["db.executemany"] = True
    if type(rows) is int and rows >= 0:
        attrs["db.rows"] = rows
    return _span.child_span(parent, _SPAN, attrs, "client", start, end)


def _commented(statement: str, span: _span.Span, cursor: Any, state: EngineState) -> str:
    """Append a sqlcommenter ``traceparent`` unless it would defeat a statement cache.

    Skipped when the driver prepares statements server-side: a unique comment per query would
    prepare every query anew.
    """
    if state.attrs["db.driver"] in _PREPARING_DRIVERS or _prepares(cursor):
        return statement
    traceparent = format_traceparent(span.trace_id, span.span_id, span.sampled)
    return f"{statement} /*traceparent='{traceparent}'*/"


def _prepares(cursor: Any) -> bool:
    """Tell whether the DBAPI connection behind ``cursor`` uses server-side prepared statements."""
    raw = getattr(cursor, "_cursor", cursor)  # SQLAlchemy's asyncio cursor adapters
    if "Prepared" in type(raw).__name__:  # mysql-connector's prepared cursors
        return True
    dbapi_conn = getattr(raw, "connection", None)
    return getattr(dbapi_conn, "prepare_threshold", None) is not None  # psycopg 3


def _failed(  # noqa: PLR0917 - one call site, on the error path
    span: _span.Span | None,
    start: int,
    entry: Entry,
    exc: BaseException,
    metrics: Metrics,
    held: _span.Span | None,
    *,
    many: bool,
) -> None:
    """Record a statement that raised (never raises itself: the app's exception goes on). A
    statement timed without a span (``held``: its parent) gets one now: errors are exported."""
    try:
        end = _span.clock_ns()
        if held is not None:
            span = _held_span(held, entry, start, 0, many, None)
        labels = entry[1]
        metrics.duration.record(labels, (end - start) / 1e6)
        if isinstance(exc, GeneratorExit) or type(exc).__name__ == "CancelledError":
            error_type = None
        else:
            error_type = type(exc).__qualname__
            metrics.errors.add((*labels, error_type))
        if span is not None:
            span.record_exception(exc)
            if error_type is not None and span.error_message != PRIVATE:
                # whatever the driver: its messages echo values
                span.error_message = error_message(exc, database=True)
            span.end(end)
    except Exception:
        internal_error("statement error")


def _slow(  # noqa: PLR0917 - one call site, on the rare slow path
    state: EngineState,
    span: _span.Span | None,
    entry: Entry,
    start: int,
    end: int,
    metrics: Metrics,
) -> None:
    """Record a slow statement: code location, keep the trace, event, log line, counter."""
    attrs, labels = entry[0], entry[1]
    where = _caller()
    if span is not None:
        if where is not None:
            span.attrs["code.filepath"], span.attrs["code.lineno"] = where[0], where[1]
            span.attrs["code.function"] = where[2]
        span.keep()  # tail sampling exports the trace of a slow query
        span.end(end)
    duration_ms = (end - start) / 1e6
    metrics.slow.add(labels)
    location = f"{where[0]}:{where[1]}" if where else "unknown"
    fields = {
        "db.operation": labels[0],
        "db.statement": attrs["db.statement"],
        "db.system": attrs["db.system"],
        "db.pool.name": state.pool_name,
        "duration_ms": duration_ms,
        "threshold_ms": state.slow_ms,
        "code.location": location,
    }
    if where is not None:
        fields["code.function"] = where[2]
    # Tied to the query span when there is one (outside a trace: a trace-less event).
    _span.emit("db.slow_query", _parent=span, **fields)
    log.warning(
        "slow query: %.1f ms (threshold %g ms) at %s: %s",
        duration_ms,
        state.slow_ms,
        location,
        attrs["db.statement"],
    )


def _caller() -> tuple[str, int, str] | None:
    """Find the first frame outside SQLAlchemy and obs-middleware: the code that ran the query.

    Under asyncio SQLAlchemy runs the statement in a greenlet whose stack ends inside SQLAlchemy;
    the awaiting coroutine is on the parent greenlet's stack, so the walk continues there.
    """
    global _skip_prefixes
    if not _skip_prefixes:
        # SQLAlchemy's package and our instrumentation layers (not the rest of obs_middleware:
        # the demo app and users' code built on obs_middleware.testing are callers too)
        integrations = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        _skip_prefixes = (
            os.path.dirname(os.path.abspath(library().__file__)) + os.sep,
            integrations + os.sep,
            os.path.join(os.path.dirname(integrations), "_core") + os.sep,
            "<",  # code SQLAlchemy generates at run time
        )
    frame: FrameType | None = sys._getframe(1)
    greenlet_mod = sys.modules.get("greenlet")
    glet = greenlet_mod.getcurrent() if greenlet_mod is not None else None
    while True:
        while frame is not None:
            code = frame.f_code
            if not code.co_filename.startswith(_skip_prefixes):
                return code.co_filename, frame.f_lineno, code.co_name
            frame = frame.f_back
        glet = getattr(glet, "parent", None)
        if glet is None:
            return None
        frame = glet.gr_frame
