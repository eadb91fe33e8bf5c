"""SQLAlchemy 2.x: a ``db.query`` span per statement, query and pool metrics, slow-query events.

``instrument_all()`` instruments the engines that exist already (the usual ``db.py`` makes one at
import, before ``main.py`` calls it: found once through the garbage collector, see ``_existing``)
and wraps ``Engine.__init__``, so every engine made afterwards is instrumented once, however it was
made (``create_engine`` imported before the patch, ``create_async_engine`` — whose engine is
instrumented through its ``sync_engine`` — or ``engine_from_config``). ``uninstrument_all()``
undoes both. ``obs.instrument_sqlalchemy(*engines)`` instruments given engines, sync or async, any
number of them, with or without ``instrument_all()``; they stay instrumented through
``uninstrument_all()``, and a second call on the same engine only updates its options.

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
per-statement budget (BENCHMARKS.md, "SQLAlchemy query"): any ``ConnectionEvents`` listener
switches SQLAlchemy to its event-dispatch path for every statement. Pools are observed through
pool events, which cost nothing per statement.

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

Cost per statement, exporting its span included: BENCHMARKS.md ("SQLAlchemy query").

This package: ``patch``/``unpatch`` and ``instrument_sqlalchemy`` here; ``_statements`` (the
per-statement hot path), ``_pools`` (pool events, checkout timing, gauges), ``_state`` (what each
instrumented engine keeps), ``_existing`` (engines made before the patch), ``_metrics``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._core.internal import warn_once
from ..._core.patches import Patches
from .._registry import lookup, version_in_range
from . import _state
from ._existing import existing_engines
from ._metrics import Metrics
from ._pools import observe_pool
from ._state import (
    DEFAULT_SLOW_MS,
    DIALECT_METHODS,
    EngineState,
    internal_error,
    library,
    log,
    states,
)
from ._statements import wrap_dialect

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["instrument_sqlalchemy", "patch", "supported", "uninstrument_sqlalchemy", "unpatch"]

_ROW = lookup("sqlalchemy")
supported = _ROW.requirement

_patches = Patches("sqlalchemy")
_metrics: Metrics | None = None


# -- public ----------------------------------------------------------------------------------------


def instrument_sqlalchemy(
    *engines: Any, slow_query_ms: float | None = None, commenter: bool | None = None
) -> None:
    """Instrument existing engines (``Engine`` or ``AsyncEngine``), each exactly once.

    ``obs.instrument_all()`` instruments every engine alive when it runs and every engine made
    afterwards: this is for apps that do not call it (``instrument_sqlalchemy(engine)`` right
    after ``create_engine``), for options per engine, and for an engine hidden by ``gc.freeze()``.
    Calling it for an engine already instrumented changes only the options given; an engine
    named here stays instrumented through ``obs.uninstrument_all()``. ``slow_query_ms``:
    slow-query threshold (default 100, env ``OBS_DB_SLOW_QUERY_MS``). ``commenter``: append
    ``/*traceparent='…'*/`` to statements (default off, env ``OBS_DB_COMMENTER``). Never raises:
    an engine it cannot instrument, or a SQLAlchemy version outside ``supported``, gets one
    warning and is left alone.
    """
    version = library().__version__
    if not version_in_range(version, _ROW.supported):
        warn_once(
            "sqlalchemy:version",
            "sqlalchemy %s is outside %s: not instrumenting",
            version,
            supported,
            logger=log,
        )
        return
    for engine in engines:
        try:
            _instrument(engine, auto=False, slow_query_ms=slow_query_ms, commenter=commenter)
        except Exception:
            internal_error(f"instrumenting {type(engine).__name__}")


def uninstrument_sqlalchemy(*engines: Any) -> None:
    """Undo ``instrument_sqlalchemy`` for the given engines. Never raises: what is not an engine
    gets one warning and is skipped."""
    for engine in engines:
        try:
            state = states.get(_base_engine(engine))
        except TypeError:  # not weak-referenceable: None, a number, a string...
            kind = type(engine).__name__
            warn_once(
                f"sqlalchemy:not-an-engine:{kind}",
                "uninstrument_sqlalchemy: %s is not an engine: skipped",
                kind,
                logger=log,
            )
            continue
        if state is not None:
            _uninstrument(state)


def patch() -> None:
    """Instrument every engine alive now and every engine created from now on (idempotent)."""
    with _state.lock:
        if not _patches:
            _patches.wrap("sqlalchemy.engine", "Engine.__init__", _on_engine_init)
            _instrument_existing()


def unpatch() -> None:
    """Stop instrumenting new engines; engines the patch instrumented are uninstrumented."""
    with _state.lock:
        if not _patches:
            return
        _patches.undo()
        for state in [s for s in list(states.values()) if s.auto]:
            _uninstrument(state)


# -- instrumentation -----------------------------------------------------------------------------


def _instrument_existing() -> None:
    """Engines made before the patch (``db.py`` imported before ``instrument_all()``)."""
    try:
        engines = existing_engines()
    except Exception:
        internal_error("finding engines made before instrument_all()")
        return
    for engine in engines:
        try:
            _instrument(engine, auto=True, slow_query_ms=None, commenter=None)
        except Exception:
            internal_error("instrumenting an engine made before instrument_all()")


def _on_engine_init(
    wrapped: Callable[..., None], instance: Engine, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    wrapped(*args, **kwargs)
    try:
        _instrument(instance, auto=True, slow_query_ms=None, commenter=None)
    except Exception:
        internal_error("instrumenting a new engine")


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
    if not isinstance(engine, library().engine.Engine):
        warn_once(
            "sqlalchemy:type",
            "not a SQLAlchemy engine: %s; not instrumented",
            type(engine).__name__,
            logger=log,
        )
        return
    with _state.lock:
        if _metrics is None:
            _metrics = Metrics()
        state = states.get(engine)
        if state is not None:
            state.auto = state.auto and auto
            _set_options(state, slow_query_ms, commenter)
            return
        state = EngineState(engine, _pool_name(engine), auto)
        _set_options(state, slow_query_ms, commenter)
        if not wrap_dialect(state, engine.dialect, _metrics):
            warn_once(
                "sqlalchemy:dialect",
                "an engine shares its dialect with another: not instrumented",
                logger=log,
            )
            return
        states[engine] = state
        observe_pool(state, engine.pool, _metrics)


def _set_options(state: EngineState, slow_query_ms: float | None, commenter: bool | None) -> None:
    first = not state.slow_ns  # first call for this engine: unset options come from the env
    if first and slow_query_ms is None:
        slow_query_ms = _env_float("OBS_DB_SLOW_QUERY_MS", DEFAULT_SLOW_MS)
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
        logger=log,
    )
    return default


def _pool_name(engine: Engine) -> str:
    """``pool_logging_name`` if set, else ``backend://host:port/database``; unique among engines."""
    url = engine.url
    name = getattr(engine.pool, "_orig_logging_name", None)
    if not name:
        port = f":{url.port}" if url.port else ""
        name = f"{url.get_backend_name()}://{url.host or ''}{port}/{url.database or ''}"
    taken = {s.pool_name for s in states.values() if s.engine() is not None}
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}#{n}"
    return unique


def _uninstrument(state: EngineState) -> None:
    event = library().event
    with _state.lock:
        engine = state.engine()
        if engine is None:
            return
        states.pop(engine, None)
        dialect = engine.dialect
        for name in DIALECT_METHODS:
            if getattr(dialect.__dict__.get(name), "_obs_state", None) is state:
                del dialect.__dict__[name]
        pool = engine.pool
        for identifier, fn in state.listeners:
            try:
                event.remove(pool, identifier, fn)  # dispose() copied them to the current pool
            except Exception:
                log.debug("pool listener %s was already removed", identifier)
        state.listeners = []
        for name in ("connect", "recreate"):
            if getattr(pool.__dict__.get(name), "_obs_state", None) is state:
                del pool.__dict__[name]
