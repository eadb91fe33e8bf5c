"""Pools: connection counts from pool events, checkout timing on the pool object, gauges.

Pool events cost nothing per statement; the checkout timing is an instance attribute of each
instrumented pool, so other pools are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from ._state import EngineState, internal_error, library, lock, states

if TYPE_CHECKING:
    from sqlalchemy.pool import Pool

    from ._metrics import Metrics

__all__ = ["gauge_reader", "observe_pool"]


def observe_pool(state: EngineState, pool: Pool, metrics: Metrics) -> None:
    """Pool events for connection counts, and checkout timing on the pool object itself.

    Checkout/checkin events only for pools without counters of their own (NullPool, StaticPool…):
    QueuePool reports its own, and a checkout listener would cost it a slower checkout path.
    """
    event = library().event
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


def _time_checkouts(state: EngineState, pool: Pool, metrics: Metrics) -> None:
    """Wrap this pool's ``connect`` (checkout time, timeouts) and ``recreate``.

    ``recreate`` is how ``engine.dispose()`` makes a new pool: that one is timed too. Instance
    attributes, so other pools are untouched.
    """
    pool_timeout = library().exc.TimeoutError
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
            internal_error("pool recreate")
        return new

    for name, fn in (("connect", connect), ("recreate", recreated)):
        fn._obs_state = state  # type: ignore[attr-defined]
        setattr(pool, name, fn)


def _pool_values(state: EngineState) -> tuple[float, ...] | None:
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
    if isinstance(pool, library().pool.NullPool):
        size = 0
    else:  # SingletonThreadPool keeps ``size`` connections (one per thread); StaticPool one
        size = getattr(pool, "size", 1)
        size = size if isinstance(size, int) else 1
    return (size, out, 0, max(opened - out, 0), opened, -1.0)


def gauge_reader(index: int) -> Callable[[], Mapping[tuple[str, ...], float]]:
    def read() -> dict[tuple[str, ...], float]:
        with lock:
            engines = list(states.values())
        out: dict[tuple[str, ...], float] = {}
        for state in engines:
            values = _pool_values(state)
            if values is not None and values[index] >= 0:
                out[state.labels] = float(values[index])
        return out

    return read
