"""Scenario ``real``: the CRUD request (workload W2) under each configuration.

The instrumentation is set up before the engine exists: patches of engine creation (obs's
``instrument_all``, ddtrace's ``patch(sqlalchemy=True)``) must see it.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import Any

from _peers import DdtraceHandle
from workloads import w2_crud

from . import Bench, asgi_bench, instrument, obs_sqlalchemy


def build(config: str, workdir: Path) -> Bench:
    """W2's app under ``config``."""
    notes: list[str] = []
    dd: Any = None
    if config == "ddtrace":
        dd = DdtraceHandle()
        import ddtrace

        ddtrace.patch(sqlalchemy=True)
        notes.append("TraceMiddleware + patch(sqlalchemy=True)")
    if config in ("obs", "obs-noexport"):
        notes.append(obs_sqlalchemy())
    engine = w2_crud.make_engine()
    app = w2_crud.build_app(engine)
    if config == "ddtrace":
        from ddtrace.contrib.asgi import TraceMiddleware

        app.add_middleware(TraceMiddleware)
        handle = dd
    else:
        handle = instrument(app, config, workdir)
    if config.startswith("otel"):
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # It declares sqlalchemy<2.1 and would instrument nothing here without the override.
        SQLAlchemyInstrumentor().instrument(
            engine=engine, tracer_provider=handle.provider, skip_dep_check=True
        )
        notes.append("ASGI middleware + SQLAlchemyInstrumentor(skip_dep_check=True)")
    bench = asgi_bench(app, handle, w2_crud.PATH, w2_crud.check)
    bench.notes = notes
    return bench
