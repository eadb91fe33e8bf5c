"""Engines that are instrumented for one test and fully undone after it; the PostgreSQL URL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from obs_middleware.integrations import sqlalchemy as integration
from obs_middleware.testing import Capture, capture


def backend_url(variable: str, what: str) -> str:
    """The server URL from ``variable``: skip without it, fail under ``CI=true``."""
    url = os.environ.get(variable)
    if not url:
        reason = (
            f"{variable} is not set: no {what} (run .ci/run, or source .ci/backends/postgres.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def pg_url() -> str:
    """``postgresql://user@127.0.0.1:port/db`` of the server .ci/backends/postgres.sh started."""
    return backend_url("OBS_TEST_PG_URL", "PostgreSQL server")


def with_driver(url: str, driver: str) -> str:
    """``url`` with the SQLAlchemy driver ``driver`` (``psycopg``, ``asyncpg``)."""
    return str(sa.make_url(url).set(drivername=f"postgresql+{driver}"))


@pytest.fixture
def live() -> Iterator[Capture]:
    """Capture with the real clock (durations matter: slow queries, pool waits)."""
    with capture(fixed=False) as cap:
        yield cap


@pytest.fixture
def engines() -> Iterator[Callable[..., Any]]:
    """``engines(make, *args, **kw)``: ``make(*args, **kw)``, instrumented; uninstrumented after the
    test, and disposed if sync (a test disposes its async engines on its own event loop)."""
    made: list[Any] = []

    def make(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        engine = factory(*args, **kwargs)
        integration.instrument_sqlalchemy(engine)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        integration.uninstrument_sqlalchemy(engine)
        if not hasattr(engine, "sync_engine"):
            engine.dispose()
