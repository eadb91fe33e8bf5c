"""SQLAlchemy 2.x: a ``db.query`` span per statement, query and pool metrics, slow-query events.

``instrument_all()`` wraps ``Engine.__init__``, so every engine made afterwards is instrumented
once, however it was made (``create_engine`` imported before the patch, ``create_async_engine`` —
whose engine is instrumented through its ``sync_engine`` — or ``engine_from_config``).
``obs.instrument_sqlalchemy(*engines)`` instruments engines that already exist, sync or async, any
number of them; a second call on the same engine only updates its options.

Per statement inside a trace (a request, a job, any ``obs.span``): a child span ``db.query`` with
``db.operation``, ``db.table`` (when cheaply known), ``db.statement`` with every literal replaced by
``?`` (parameters are never read), ``db.system``, ``db.driver``, ``db.name``, ``db.pool.name``,
``db.rows`` when the DBAPI reports it, and the error type on failure (the message keeps its first
line, values blanked). ``executemany`` is one span. Outside any trace (start-up, scripts) a
statement is counted but not traced: one-span traces per query would be noise. Metrics, for every
statement whatever the sample rate: ``db.client.duration`` (histogram) and ``db.client.queries``
by ``db.operation`` and ``pool.name``, ``db.client.errors``.

How: the engine's dialect hands every statement to the DBAPI through ``do_execute``,
``do_execute_no_params`` or ``do_executemany``; this engine's dialect gets thin wrappers around
those three, so the span lives on the wrapper's own stack (async-safe, no "current span" lookup
after the fact) and covers exactly the driver call. Engine events would cost more than the whole
per-statement budget: any ``ConnectionEvents`` listener switches SQLAlchemy to its event-dispatch
path for every statement (+45k instructions, ~3 µs, measured with three empty listeners). Pools
are observed through pool events, which cost nothing per statement.

Slow queries (``slow_query_ms``, default 100, env ``OBS_DB_SLOW_QUERY_MS``), traced or not, get
the code location that issued them (first frame outside SQLAlchemy and obs-middleware), a
``db.slow_query`` event, a WARNING on the ``obs_middleware.sqlalchemy`` logger and a count in
``db.client.slow_queries``; their trace is kept through tail sampling.

Pool metrics per engine (``pool.name``: ``create_engine(pool_logging_name=...)``, else
``backend://host:port/database``), for every pool class including ``NullPool`` and ``StaticPool``:
gauges ``db.client.pool.size``, ``.checked_out``, ``.overflow``, ``.idle``, ``.open``,
``.utilization`` (checked out / (size + max_overflow), bounded ``QueuePool`` only); histogram
``db.client.pool.wait_time`` (time to obtain a connection, creation included) with its count
``db.client.pool.checkouts``; counters ``db.client.pool.timeouts``, ``.connections.created``,
``.connections.invalidated`` (hard and soft), ``.connections.closed``.

``commenter=True`` (env ``OBS_DB_COMMENTER=1``; off by default) appends a sqlcommenter comment with
one fixed key, ``/*traceparent='…'*/``, except to statements that already carry a comment and on
connections that use server-side prepared statements (asyncpg; psycopg unless
``prepare_threshold=None``), where a per-query comment would defeat the statement cache.

Cost: ~6 µs per statement on the benchmark machine, about half of it exporting the span
(BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from time import perf_counter_ns
from types import FrameType
from typing import TYPE_CHECKING, Any

import wrapt

from .._core import span as _span
from .._core.context import format_traceparent
from .._core.internal import internal_error, warn_once
from .._core.metrics import Counter, dropped, registry
from .._core.redact import PRIVATE, error_message
from ._registry import version_in_range
from ._sql import analyze

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect, Engine
    from sqlalchemy.pool import Pool

__all__ = ["instrument_sqlalchemy", "patch", "supported", "uninstrument_sqlalchemy", "unpatch"]

supported = "sqlalchemy>=2.0,<2.2"

_log = logging.getLogger("obs_middleware.sqlalchemy")
_SPAN = "db.query"
_MAX_STATEMENTS = 1024  # distinct statement texts remembered per engine
_DEFAULT_SLOW_MS = 100.0
_PREPARING_DRIVERS = frozenset({"asyncpg"})  # every statement is a server-side prepared one
_DIALECT_METHODS = ("do_execute", "do_execute_no_params", "do_executemany")

_lock = threading.RLock()
_states: weakref.WeakKeyDictionary[Engine, _EngineState] = weakref.WeakKeyDictionary()
_patched = False
_skip_prefixes: tuple[str, ...] = ()
_metrics: _Metrics | None = None

# Per distinct statement text: (span attributes to copy, metric labels, may take a comment).
_Entry = tuple[dict[str, Any], tuple[str, str], bool]


class _Metrics:
    """The integration's metrics, registered on first use (nothing appears for apps without it)."""

    def __init__(self) -> None:
        self.duration = registry.histogram(
            "db.client.duration",
            ("db.operation", "pool.name"),
            "ms",
            "Duration of SQL statements, from cursor execute to its return.",
        )
        registry.count_view("db.client.queries", self.duration, "SQL statements executed.")
        self.slow = registry.counter(
            "db.client.slow_queries",
            ("db.operation", "pool.name"),
            "1",
            "SQL statements slower than the slow-query threshold.",
        )
        self.errors = registry.counter(
            "db.client.errors",
            ("db.operation", "pool.name", "error.type"),
            "1",
            "SQL statements that failed, by exception type.",
        )
        self.wait = registry.histogram(
            "db.client.pool.wait_time",
            ("pool.name",),
            "ms",
            "Time to obtain a pooled connection (waiting and connecting included).",
        )
        registry.count_view("db.client.pool.checkouts", self.wait, "Pool checkouts.")
        self.timeouts = _pool_counter("timeouts", "Pool checkouts that timed out.")
        self.created = _pool_counter("connections.created", "DBAPI connections opened.")
        self.invalidated = _pool_counter(
            "connections.invalidated", "Connections invalidated (hard or soft)."
        )
        self.closed = _pool_counter("connections.closed", "DBAPI connections closed.")
        for index, (name, description) in enumerate(
            (
                ("size", "Connections the pool keeps (0 for NullPool)."),
                ("checked_out", "Connections checked out of the pool."),
                ("overflow", "Connections open beyond the pool size."),
                ("idle", "Connections open and checked in."),
                ("open", "DBAPI connections open."),
                ("utilization", "Checked out / (size + max_overflow), bounded QueuePool."),
            )
        ):
            registry.gauge(
                f"db.client.pool.{name}",
                ("pool.name",),
                _gauge_reader(index),
                "1",
                description,
            )


def _pool_counter(name: str, description: str) -> Counter:
    return registry.counter(f"db.client.pool.{name}", ("pool.name",), "1", description)


class _EngineState:
    """What one instrumented engine needs on the hot path and at snapshot time."""

    __slots__ = (
        "__weakref__",
        "attrs",
        "auto",
        "backslash",
        "checked_out",
        "commenter",
        "engine",
        "labels",
        "listeners",
        "lock",
        "opened",
        "pool_name",
        "slow_ms",
        "slow_ns",
        "statements",
    )

    def __init__(self, engine: Engine, pool_name: str, auto: bool) -> None:
        self.engine = weakref.ref(engine)
        self.pool_name = pool_name
        self.labels = (pool_name,)
        self.auto = auto
        dialect = engine.dialect
        self.attrs: dict[str, Any] = {
            "db.system": dialect.name,
            "db.driver": dialect.driver,
            "db.pool.name": pool_name,
        }
        if engine.url.database:
            self.attrs["db.name"] = engine.url.database
        self.backslash = dialect.name in ("mysql", "mariadb")
        self.statements: dict[str, _Entry] = {}
        self.lock = threading.Lock()
        self.opened = 0  # connect events minus close events
        self.checked_out = 0  # checkout events minus checkin events (pools without counters)
        self.slow_ms = _DEFAULT_SLOW_MS
        self.slow_ns = 0
        self.commenter = False
        self.listeners: list[tuple[str, Callable[..., Any]]] = []  # pool events we listen to

    def entry(self, statement: str) -> _Entry:
        """Analyze a statement seen for the first time (then served from ``statements``)."""
        found = analyze(statement, backslash_escapes=self.backslash)
        attrs = dict(self.attrs)
        attrs["db.operation"] = found.operation
        if found.tables is not None:
            attrs["db.table"] = found.tables
        attrs["db.statement"] = found.statement
        entry = (attrs, (found.operation, self.pool_name), not found.has_comment)
        with self.lock:
            statements = self.statements
            if len(statements) >= _MAX_STATEMENTS:
                del statements[next(iter(statements))]  # oldest first
            statements[statement] = entry
        return entry


# -- public ----------------------------------------------------------------------------------------


def instrument_sqlalchemy(
    *engines: Any, slow_query_ms: float | None = None, commenter: bool | None = None
) -> None:
    """Instrument existing engines (``Engine`` or ``AsyncEngine``), each exactly once.

    Engines made after ``obs.instrument_all()`` are instrumented already; calling this for one of
    them changes only the options given. ``slow_query_ms``: slow-query threshold (default 100, env
    ``OBS_DB_SLOW_QUERY_MS``). ``commenter``: append ``/*traceparent='…'*/`` to statements (default
    off, env ``OBS_DB_COMMENTER``). Never raises: an engine it cannot instrument, or a SQLAlchemy
    version outside ``supported``, gets one warning and is left alone.
    """
    version = _sqlalchemy().__version__
    if not version_in_range(version, supported.removeprefix("sqlalchemy")):
        warn_once(
            "sqlalchemy:version",
            "sqlalchemy %s is outside %s: not instrumenting",
            version,
            supported,
            logger=_log,
        )
        return
    for engine in engines:
        try:
            _instrument(engine, auto=False, slow_query_ms=slow_query_ms, commenter=commenter)
        except Exception:
            _internal_error(f"instrumenting {type(engine).__name__}")


def uninstrument_sqlalchemy(*engines: Any) -> None:
    """Undo ``instrument_sqlalchemy`` for the given engines."""
    for engine in engines:
        state = _states.get(_base_engine(engine))
        if state is not None:
            _uninstrument(state)


def patch() -> None:
    """Instrument every engine created from now on (idempotent)."""
    global _patched
    with _lock:
        if _patched:
            return
        engine_class = getattr(_sqlalchemy().engine, "Engine", None)
        if engine_class is None:
            warn_once(
                "sqlalchemy:patch",
                "sqlalchemy.engine.Engine not found: not instrumenting",
                logger=_log,
            )
            return
        wrapt.wrap_function_wrapper(engine_class, "__init__", _on_engine_init)
        _patched = True


def unpatch() -> None:
    """Stop instrumenting new engines; engines the patch instrumented are uninstrumented."""
    global _patched
    with _lock:
        if not _patched:
            return
        engine_class = _sqlalchemy().engine.Engine
        init = engine_class.__dict__.get("__init__")
        if isinstance(init, wrapt.FunctionWrapper) and init._self_wrapper is _on_engine_init:
            engine_class.__init__ = init.__wrapped__
        _patched = False
        for state in [s for s in list(_states.values()) if s.auto]:
            _uninstrument(state)


# -- instrumentation -----------------------------------------------------------------------------


def _sqlalchemy() -> Any:
    """Import ``sqlalchemy`` once the app uses it (``import obs_middleware`` never does)."""
    import sqlalchemy  # noqa: PLC0415

    return sqlalchemy


def _on_engine_init(
    wrapped: Callable[..., None], instance: Engine, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    wrapped(*args, **kwargs)
    try:
        _instrument(instance, auto=True, slow_query_ms=None, commenter=None)
    except Exception:
        _internal_error("instrumenting a new engine")


def _base_engine(engine: Any) -> Any:
    """Resolve to the engine that owns dialect and pool (``AsyncEngine.sync_engine``, …)."""
    engine = getattr(engine, "sync_engine", engine)
    while hasattr(engine, "_proxied"):  # Engine.execution_options(): shares dialect and pool
        engine = engine._proxied
    return engine


def _instrument(
    engine: Any, *, auto: bool, slow_query_ms: float | None, commenter: bool | None
) -> None:
    global _metrics
    engine = _base_engine(engine)
    if not isinstance(engine, _sqlalchemy().engine.Engine):
        warn_once(
            "sqlalchemy:type",
            "not a SQLAlchemy engine: %s; not instrumented",
            type(engine).__name__,
            logger=_log,
        )
        return
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()
        state = _states.get(engine)
        if state is not None:
            state.auto = state.auto and auto
            _set_options(state, slow_query_ms, commenter)
            return
        state = _EngineState(engine, _pool_name(engine), auto)
        _set_options(state, slow_query_ms, commenter)
        if not _wrap_dialect(state, engine.dialect, _metrics):
            warn_once(
                "sqlalchemy:dialect",
                "an engine shares its dialect with another: not instrumented",
                logger=_log,
            )
            return
        _states[engine] = state
        _observe_pool(state, engine.pool, _metrics)


def _set_options(state: _EngineState, slow_query_ms: float | None, commenter: bool | None) -> None:
    first = not state.slow_ns  # first call for this engine: unset options come from the env
    if first and slow_query_ms is None:
        slow_query_ms = _env_float("OBS_DB_SLOW_QUERY_MS", _DEFAULT_SLOW_MS)
    if first and commenter is None:
        commenter = os.environ.get("OBS_DB_COMMENTER", "").lower() in ("1", "true", "yes", "on")
    if slow_query_ms is not None:
        state.slow_ms = float(slow_query_ms)
        state.slow_ns = max(int(slow_query_ms * 1_000_000), 1)
    if commenter is not None:
        state.commenter = commenter


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    warn_once(
        f"sqlalchemy:{name}",
        "%s=%r is not a positive number; using %s",
        name,
        raw,
        default,
        logger=_log,
    )
    return default


def _pool_name(engine: Engine) -> str:
    """``pool_logging_name`` if set, else ``backend://host:port/database``; unique among engines."""
    url = engine.url
    name = getattr(engine.pool, "_orig_logging_name", None)
    if not name:
        port = f":{url.port}" if url.port else ""
        name = f"{url.get_backend_name()}://{url.host or ''}{port}/{url.database or ''}"
    taken = {s.pool_name for s in _states.values() if s.engine() is not None}
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}#{n}"
    return unique


def _uninstrument(state: _EngineState) -> None:
    event = _sqlalchemy().event
    with _lock:
        engine = state.engine()
        if engine is None:
            return
        _states.pop(engine, None)
        dialect = engine.dialect
        for name in _DIALECT_METHODS:
            if getattr(dialect.__dict__.get(name), "_obs_state", None) is state:
                del dialect.__dict__[name]
        pool = engine.pool
        for identifier, fn in state.listeners:
            try:
                event.remove(pool, identifier, fn)  # dispose() copied them to the current pool
            except Exception:
                _log.debug("pool listener %s was already removed", identifier)
        state.listeners = []
        for name in ("connect", "recreate"):
            if getattr(pool.__dict__.get(name), "_obs_state", None) is state:
                del pool.__dict__[name]


# -- the statement hot path ----------------------------------------------------------------------


def _wrap_dialect(state: _EngineState, dialect: Dialect, metrics: _Metrics) -> bool:
    """Wrap the dialect's three DBAPI entry points (instance attributes: other engines untouched).

    Plain closures, not ``wrapt``: this runs per statement and a closure costs ~0.07 µs where a
    ``FunctionWrapper`` costs ~0.7 µs.
    """
    if any(name in dialect.__dict__ for name in _DIALECT_METHODS):
        return False
    for name in _DIALECT_METHODS:
        timed = _timed(state, getattr(dialect, name), metrics, many=name == "do_executemany")
        timed._obs_state = state  # type: ignore[attr-defined]
        setattr(dialect, name, timed)
    return True


def _timed(
    state: _EngineState, call: Callable[..., Any], metrics: _Metrics, *, many: bool
) -> Callable[..., Any]:
    statements = state.statements
    new_span = _span.Span
    current = _span.current_span
    record = metrics.duration.record

    def timed(cursor: Any, statement: str, *args: Any, **kwargs: Any) -> Any:
        try:
            entry = statements.get(statement) or state.entry(statement)
            sent = statement
            if current() is None:  # outside any trace: metrics (and slow-query events) only
                span = None
                start = _span.clock_ns()
            else:
                # nothing runs inside it but the driver: it never becomes current
                span = new_span(_SPAN, entry[0].copy(), "client").start(activate=False)
                start = span.start_ns
                if state.commenter and entry[2]:
                    sent = _commented(statement, span, cursor, state)
        except Exception:
            _internal_error("statement start")
            return call(cursor, statement, *args, **kwargs)
        try:
            result = call(cursor, sent, *args, **kwargs)
        except BaseException as exc:
            _failed(span, start, entry, exc, metrics)
            raise
        try:
            end = _span.clock_ns()
            elapsed = end - start
            if span is not None:
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
            record(entry[1], elapsed / 1e6)
        except Exception:
            _internal_error("statement end")
        return result

    return timed


def _commented(statement: str, span: _span.Span, cursor: Any, state: _EngineState) -> str:
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


def _failed(
    span: _span.Span | None, start: int, entry: _Entry, exc: BaseException, metrics: _Metrics
) -> None:
    """Record a statement that raised (never raises itself: the app's exception goes on)."""
    try:
        end = _span.clock_ns()
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
        _internal_error("statement error")


def _slow(  # noqa: PLR0917 - one call site, on the rare slow path
    state: _EngineState,
    span: _span.Span | None,
    entry: _Entry,
    start: int,
    end: int,
    metrics: _Metrics,
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
    _log.warning(
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
        here = os.path.dirname(os.path.abspath(__file__))
        _skip_prefixes = (
            os.path.dirname(os.path.abspath(_sqlalchemy().__file__)) + os.sep,
            here + os.sep,
            os.path.join(os.path.dirname(here), "_core") + os.sep,
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


# -- pools ---------------------------------------------------------------------------------------


def _observe_pool(state: _EngineState, pool: Pool, metrics: _Metrics) -> None:
    """Pool events for connection counts, and checkout timing on the pool object itself.

    Checkout/checkin events only for pools without counters of their own (NullPool, StaticPool…):
    QueuePool reports its own, and a checkout listener would cost it a slower checkout path.
    """
    event = _sqlalchemy().event
    labels = state.labels
    lock = state.lock

    def connect(dbapi_connection: Any, record: Any) -> None:
        metrics.created.add(labels)
        with lock:
            state.opened += 1

    def close(dbapi_connection: Any, record: Any) -> None:
        metrics.closed.add(labels)
        with lock:
            state.opened -= 1

    def close_detached(dbapi_connection: Any) -> None:
        close(dbapi_connection, None)

    def invalidate(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        metrics.invalidated.add(labels)

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        with lock:
            state.checked_out += 1

    def checkin(dbapi_connection: Any, record: Any) -> None:
        with lock:
            state.checked_out -= 1

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("connect", connect),
        ("close", close),
        ("close_detached", close_detached),
        ("invalidate", invalidate),
        ("soft_invalidate", invalidate),
    ]
    if not hasattr(pool, "checkedout"):
        listeners += [("checkout", checkout), ("checkin", checkin)]
    for identifier, fn in listeners:
        event.listen(pool, identifier, fn)
    state.listeners = listeners
    _time_checkouts(state, pool, metrics)


def _time_checkouts(state: _EngineState, pool: Pool, metrics: _Metrics) -> None:
    """Wrap this pool's ``connect`` (checkout time, timeouts) and ``recreate``.

    ``recreate`` is how ``engine.dispose()`` makes a new pool: that one is timed too. Instance
    attributes, so other pools are untouched.
    """
    pool_timeout = _sqlalchemy().exc.TimeoutError
    labels = state.labels
    record = metrics.wait.record
    timeouts = metrics.timeouts
    checkout = pool.connect
    recreate = pool.recreate

    def connect() -> Any:
        start = perf_counter_ns()
        try:
            return checkout()
        except pool_timeout:
            timeouts.add(labels)
            raise
        finally:
            record(labels, (perf_counter_ns() - start) / 1e6)

    def recreated() -> Any:
        new = recreate()
        try:
            _time_checkouts(state, new, metrics)
        except Exception:
            _internal_error("pool recreate")
        return new

    for name, fn in (("connect", connect), ("recreate", recreated)):
        fn._obs_state = state  # type: ignore[attr-defined]
        setattr(pool, name, fn)


def _pool_values(state: _EngineState) -> tuple[float, ...] | None:
    """size, checked out, overflow, idle, open, utilization (-1: not applicable) of one engine."""
    engine = state.engine()
    if engine is None:
        return None
    pool: Any = engine.pool
    if hasattr(pool, "checkedout"):  # QueuePool and subclasses count for themselves
        size = pool.size()
        out = pool.checkedout()
        idle = pool.checkedin()
        max_overflow = getattr(pool, "_max_overflow", -1)
        capacity = size + max_overflow if max_overflow >= 0 else 0
        return (
            size,
            out,
            max(pool.overflow(), 0),
            idle,
            out + idle,
            out / capacity if capacity > 0 else -1.0,
        )
    with state.lock:
        opened = max(state.opened, 0)
        out = max(state.checked_out, 0)
    if isinstance(pool, _sqlalchemy().pool.NullPool):
        size = 0
    else:  # SingletonThreadPool keeps ``size`` connections (one per thread); StaticPool one
        size = getattr(pool, "size", 1)
        size = size if isinstance(size, int) else 1
    return (size, out, 0, max(opened - out, 0), opened, -1.0)


def _gauge_reader(index: int) -> Callable[[], Mapping[tuple[str, ...], float]]:
    def read() -> dict[tuple[str, ...], float]:
        with _lock:
            states = list(_states.values())
        out: dict[tuple[str, ...], float] = {}
        for state in states:
            values = _pool_values(state)
            if values is not None and values[index] >= 0:
                out[state.labels] = float(values[index])
        return out

    return read


# -- failures --------------------------------------------------------------------------------------


def _internal_error(where: str) -> None:
    """Our own failure: counted as a drop, logged once per place; the query goes on untouched."""
    dropped.add(("internal_error",))
    internal_error(where, "query", logger=_log)
