"""The SQLAlchemy metrics, registered on first use (nothing appears for apps without it), and
the pool gauges, read from every instrumented engine's pool when metrics are collected."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..._core.metrics import Counter, registry
from . import _state
from ._state import EngineState, library, states

__all__ = ["Metrics"]


class Metrics:
    """Statement and pool metrics of every instrumented engine."""

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
    out = max(state.checked_out.value, 0)
    if isinstance(pool, library().pool.NullPool):
        size = 0
    else:  # SingletonThreadPool keeps ``size`` connections (one per thread); StaticPool one
        size = getattr(pool, "size", 1)
        size = size if isinstance(size, int) else 1
    return (size, out, 0, max(opened - out, 0), opened, -1.0)


def _gauge_reader(index: int) -> Callable[[], Mapping[tuple[str, ...], float]]:
    def read() -> dict[tuple[str, ...], float]:
        with _state.lock:
            engines = list(states.values())
        out: dict[tuple[str, ...], float] = {}
        for state in engines:
            values = _pool_values(state)
            if values is not None and values[index] >= 0:
                out[state.labels] = float(values[index])
        return out

    return read
