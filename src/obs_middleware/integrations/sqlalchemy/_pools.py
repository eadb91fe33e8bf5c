"""Pools: connection counts from pool events, and checkout timing on the pool object.

Pool events cost nothing per statement; the checkout timing is an instance attribute of each
instrumented pool, so other pools are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from ..._core.metrics import FOLD_AT
from ._state import EngineState, internal_error, library

if TYPE_CHECKING:
    from sqlalchemy.pool import Pool

    from ._metrics import Metrics

__all__ = ["observe_pool"]


def observe_pool(state: EngineState, pool: Pool, metrics: Metrics) -> None:
    """Pool events for connection counts, and checkout timing on the pool object itself.

    Checkout/checkin events only for pools without counters of their own (NullPool, StaticPool…):
    QueuePool reports its own, and a checkout listener would cost it a slower checkout path.
    """
    event = library().event
    labels = state.labels

    def connect(dbapi_connection: Any, record: Any) -> None:
        metrics.created.add(labels)
        with state.lock:
            state.opened += 1

    def close(dbapi_connection: Any, record: Any) -> None:
        metrics.closed.add(labels)
        with state.lock:
            state.opened -= 1

    def close_detached(dbapi_connection: Any) -> None:
        close(dbapi_connection, None)

    def invalidate(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        metrics.invalidated.add(labels)

    out, back = state.checked_out.up, state.checked_out.down

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        next(out)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        next(back)

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
    series = metrics.wait.series(labels)
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
            series.append((perf_counter_ns() - start) / 1e6)
            if len(series) >= FOLD_AT:
                series.fold()

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
