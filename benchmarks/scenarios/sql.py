"""Scenario ``sql``: ``conn.execute(text("SELECT 1")).scalar()`` on in-memory SQLite/StaticPool.

``SQL_BATCH`` queries per root span (one iteration), the root charged to them; peers: OTel's
``SQLAlchemyInstrumentor(skip_dep_check=True)`` + BatchSpanProcessor, ``ddtrace.patch(sqlalchemy=
True)``, each with its own root span.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _peers import DdtraceHandle, ObsHandle, OtelHandle
from _scenarios import SQL_BATCH

import obs_middleware as obs

from . import Bench, obs_sqlalchemy

# Iterations between flushes: 2,020 spans, far below the export queue.
SQL_CHUNK = 20


def build(config: str, workdir: Path) -> Bench:
    """The sql scenario under ``config``."""
    import sqlalchemy
    from sqlalchemy.pool import StaticPool

    notes: list[str] = []
    handle: Any = None
    root: Callable[[], Any]
    # Instrumentation before the engine exists, as in the realistic request.
    if config == "obs":
        handle = ObsHandle(workdir)
        notes.append(obs_sqlalchemy())
        root = lambda: obs.span("root")  # noqa: E731
    elif config == "ddtrace":
        handle = DdtraceHandle()
        import ddtrace

        ddtrace.patch(sqlalchemy=True)
        notes.append("patch(sqlalchemy=True)")
        trace = handle.tracer.trace
        root = lambda: trace("root")  # noqa: E731
    elif config == "otel":
        handle = OtelHandle()
        tracer = handle.provider.get_tracer("bench")
        root = lambda: tracer.start_as_current_span("root")  # noqa: E731
    elif config == "bare":
        root = contextlib.nullcontext
    else:
        raise ValueError(f"unknown config {config!r}")
    engine = sqlalchemy.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    if config == "otel":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # It declares sqlalchemy<2.1 and would instrument nothing here without the override.
        SQLAlchemyInstrumentor().instrument(
            engine=engine, tracer_provider=handle.provider, skip_dep_check=True
        )
        notes.append("SQLAlchemyInstrumentor(skip_dep_check=True)")
    conn = engine.connect()
    stmt = sqlalchemy.text("SELECT 1")
    batch = range(SQL_BATCH)

    def run(n: int) -> None:
        execute = conn.execute
        for _ in range(n):
            with root():
                for _ in batch:
                    execute(stmt).scalar()

    def validate() -> str:
        assert conn.execute(stmt).scalar() == 1
        if handle is None:
            return "ok"
        flush = handle.flush
        flush()
        before = handle.emitted()
        run(1)
        flush()
        if handle.emitted() - before != SQL_BATCH + 1:
            raise AssertionError(f"{config}: {handle.emitted() - before} spans for one root")
        return "ok"

    bench = Bench(run=run, validate=validate, notes=notes, chunk=SQL_CHUNK)
    if handle is not None:
        bench.flush = handle.flush
        bench.emitted = handle.emitted
    return bench
