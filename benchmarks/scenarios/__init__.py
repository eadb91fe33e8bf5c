"""The suite's scenarios, one module each: asgi, span, real, sql, litestar, ai.

Each module has ``build(config, workdir) -> Bench``; ``_scenarios.build`` imports only the one
asked for, inside its worker process. This module holds what they share: ``Bench`` and the ASGI
configurations (the middleware of obs-middleware, OpenTelemetry or dd-trace-py around an app).
"""

# Peers are imported inside their configuration only (see ``_peers``).
# ruff: noqa: PLC0415

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _peers import DdtraceHandle, ObsHandle, OtelHandle
from workloads._asgi import Driver

import obs_middleware as obs


@dataclass
class Bench:
    """One built scenario x configuration, ready to iterate.

    ``run(n)`` does n iterations, ``flush()`` makes the instrumentation export everything
    finished so far (charged to the timed region), ``emitted()`` counts what reached the exporter.
    """

    run: Callable[[int], None]
    flush: Callable[[], None] = lambda: None
    emitted: Callable[[], int] = lambda: 0
    validate: Callable[[], str] | None = None  # default: one iteration
    notes: list[str] = field(default_factory=list)
    chunk: int = 0  # flush after every ``chunk`` iterations (0: only at the end)

    def iterate(self, n: int) -> None:
        """``run(n)``, flushing between chunks; the caller flushes after the last one."""
        step = self.chunk or n
        done = 0
        while done < n:
            if done:
                self.flush()
            k = min(step, n - done)
            self.run(k)
            done += k

    def check(self) -> str:
        """Run the scenario once and check its result."""
        if self.validate is None:
            self.run(1)
            return "ok"
        return self.validate()


def instrument(app: Any, config: str, workdir: Path) -> Any:
    """Add ``config``'s ASGI middleware to the Starlette ``app``; returns its handle (or None)."""
    if config == "bare":
        return None
    if config in ("obs", "obs-noexport", "obs-middleware-only"):
        handle = ObsHandle(workdir, export=config != "obs-noexport")
        app.add_middleware(obs.ObsMiddleware)
        return handle
    if config in ("otel", "otel-1span"):
        otel = OtelHandle()
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        exclude = ["receive", "send"] if config == "otel-1span" else None
        app.add_middleware(
            OpenTelemetryMiddleware, tracer_provider=otel.provider, exclude_spans=exclude
        )
        return otel
    if config == "ddtrace":
        dd = DdtraceHandle()
        from ddtrace.contrib.asgi import TraceMiddleware

        app.add_middleware(TraceMiddleware)
        return dd
    raise ValueError(f"unknown config {config!r}")


def asgi_bench(app: Any, handle: Any, path: str, check: Callable[[bytes], None]) -> Bench:
    """A ``Bench`` that calls ``app`` directly at ``path``, validated by ``check(body)``."""
    driver = Driver(app, path)

    def validate() -> str:
        driver.check(check)
        return "ok"

    bench = Bench(run=driver.run, validate=validate)
    if handle is not None:
        bench.flush = handle.flush
        bench.emitted = handle.emitted
    return bench


def obs_sqlalchemy() -> str:
    """Switch obs-middleware's SQLAlchemy integration on (``OBS_BENCH_SQLALCHEMY=0``: off).

    Returns a note saying what happened.
    """
    if os.environ.get("OBS_BENCH_SQLALCHEMY", "1") == "0":
        return "ObsMiddleware only (OBS_BENCH_SQLALCHEMY=0)"
    import sqlalchemy  # imported first, so instrument_all patches now rather than on import

    outcome = {o.name: o for o in obs.instrument_all(only=["sqlalchemy"])}.get("sqlalchemy")
    if outcome is not None and outcome.status in ("patched", "already"):
        return f"ObsMiddleware + SQLAlchemy integration (sqlalchemy {sqlalchemy.__version__})"
    return f"ObsMiddleware only (SQLAlchemy integration: {outcome})"
