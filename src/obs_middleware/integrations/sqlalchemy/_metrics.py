"""The SQLAlchemy metrics, registered on first use (nothing appears for apps without it)."""

from __future__ import annotations

from ..._core.metrics import Counter, registry
from ._pools import gauge_reader

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
                gauge_reader(index),
                "1",
                description,
            )


def _pool_counter(name: str, description: str) -> Counter:
    return registry.counter(f"db.client.pool.{name}", ("pool.name",), "1", description)
