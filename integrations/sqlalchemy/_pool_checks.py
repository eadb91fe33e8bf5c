"""Pool checks shared by the SQLite and PostgreSQL suites, and metric readers."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from obs_middleware._core.metrics import HistogramPoint
from obs_middleware.testing import Capture


def gauge(cap: Capture, name: str, pool: str) -> float | None:
    value = cap.metrics[f"db.client.pool.{name}"].points.get((pool,))
    assert not isinstance(value, HistogramPoint)
    return value


def histogram(cap: Capture, name: str, labels: tuple[str, ...]) -> HistogramPoint:
    value = cap.metrics[name].points[labels]
    assert isinstance(value, HistogramPoint)
    return value


def slowest_ms(point: HistogramPoint) -> float:
    """Lower bound of the highest non-empty bucket."""
    top = max(i for i, n in enumerate(point.counts) if n)
    return point.bounds[top - 1] if top else 0.0


def check_overflow_and_wait(cap: Capture, engine: sa.Engine, pool: str) -> None:
    """Pool of 2 (+1 overflow): 3 concurrent checkouts fill it, a 4th waits ~0.2 s."""
    holding = threading.Barrier(4)
    release = threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            holding.wait()
            release.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    holding.wait()
    assert gauge(cap, "size", pool) == 2
    assert gauge(cap, "checked_out", pool) == 3
    assert gauge(cap, "overflow", pool) == 1
    assert gauge(cap, "idle", pool) == 0
    assert gauge(cap, "utilization", pool) == 1.0
    threading.Timer(0.2, release.set).start()
    with engine.connect() as conn:  # waits for one of the three
        conn.execute(sa.text("SELECT 1"))
    for t in threads:
        t.join()
    wait = histogram(cap, "db.client.pool.wait_time", (pool,))
    assert wait.count == 4
    assert slowest_ms(wait) >= 100
    assert cap.metrics["db.client.pool.checkouts"].points == {(pool,): 4}
    assert gauge(cap, "checked_out", pool) == 0
    assert gauge(cap, "open", pool) == 2  # the overflow connection was closed on return
    assert cap.metrics["db.client.pool.connections.created"].points == {(pool,): 3}
    assert cap.metrics["db.client.pool.connections.closed"].points == {(pool,): 1}


def check_timeout(cap: Capture, engine: sa.Engine, pool: str) -> None:
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    assert cap.metrics["db.client.pool.timeouts"].points == {(pool,): 1}
    assert slowest_ms(histogram(cap, "db.client.pool.wait_time", (pool,))) >= 50


def check_nullpool(cap: Capture, engine: sa.Engine, pool: str) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        assert gauge(cap, "checked_out", pool) == 1
        assert gauge(cap, "open", pool) == 1
        assert gauge(cap, "size", pool) == 0
    for _ in range(2):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    metrics = cap.metrics
    assert metrics["db.client.pool.connections.created"].points == {(pool,): 3}
    assert metrics["db.client.pool.connections.closed"].points == {(pool,): 3}
    assert metrics["db.client.pool.checkouts"].points == {(pool,): 3}
    assert (gauge(cap, "checked_out", pool), gauge(cap, "open", pool)) == (0, 0)
    assert gauge(cap, "utilization", pool) is None  # no capacity to be a share of
