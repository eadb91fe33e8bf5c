"""The benchmark scenarios and the instrumentation configurations they run under.

Imported only inside a worker subprocess (one scenario x configuration per process), so a peer's
patches never leak into another configuration. ``build(scenario, config, workdir)`` returns a
``Bench``: ``run(n)`` does n iterations, ``flush()`` makes the instrumentation export everything
finished so far (charged to the timed region), ``emitted()`` counts what reached the exporter.

Every worker imports obs_middleware and its scenario's libraries before building anything, so the
baseline carries the same import footprint (GC traversal work) as the instrumented runs; a scenario
imports only what it uses (the span scenario neither Starlette nor SQLAlchemy), which keeps the
valgrind start-up short.

``export_path(path, workdir)`` builds the export throughput stages instead (``test_throughput.py``):
finished spans, the pipeline's drain loop and one exporter, timed on the calling thread.
"""

# Peers are imported lazily, inside their configuration only: importing them is part of what a
# configuration costs and must not leak into the others.
# ruff: noqa: PLC0415

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gzip
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

import obs_middleware as obs

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

SCOPE_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"obs-bench/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]
SPAN_CHILDREN = 100  # child spans per root in the span scenario
# Roots between flushes in the span scenario: 5,050 spans, a quarter of obs-middleware's default
# queue, so "every span exported" holds however the export thread is scheduled (the flushes are
# timed like everything else, and every configuration gets the same ones).
SPAN_CHUNK = 50
CATEGORIES = ("books", "games", "music", "tools")
SQL_BATCH = 100  # queries per root span (one iteration) in the sql scenario
# Iterations between flushes in the sql scenario: 2,020 spans, far below the export queue.
SQL_CHUNK = 20

# scenario -> (description, unit of one measured item, items per iteration, configs in order)
SCENARIOS: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "asgi": (
        "Starlette GET /items/{item_id} -> small JSONResponse, app(scope, receive, send) direct",
        "us",
        1,
        ("bare", "obs", "otel", "otel-1span", "ddtrace"),
    ),
    "span": (
        f"nested child span + 3 attributes inside a root of {SPAN_CHILDREN} children",
        "ns",
        SPAN_CHILDREN,
        ("floor", "floor-export", "obs", "otel", "ddtrace"),
    ),
    "real": (
        "realistic request: 5 SQLAlchemy core queries (SQLite, StaticPool) + 50-item JSON list",
        "us",
        1,
        ("bare", "obs", "otel", "ddtrace"),
    ),
    "sql": (
        f'SQLAlchemy conn.execute(text("SELECT 1")).scalar(), in-memory SQLite, {SQL_BATCH} '
        "queries per root span (root charged to the queries)",
        "us",
        SQL_BATCH,
        ("bare", "obs", "otel", "ddtrace"),
    ),
    "litestar": (
        "Litestar GET /items/{item_id} -> small JSON, app(scope, receive, send) direct",
        "us",
        1,
        ("bare", "obs", "otel"),
    ),
    "ai": (
        "openai SDK chat.completions.create against the loopback emulator (other process, "
        "latency 0)",
        "us",
        1,
        ("bare", "obs", "ddtrace"),
    ),
}
# What one measured item is, for the report's column heads.
ITEM = {"span": "span", "sql": "query", "ai": "call"}
# Diagnostic configurations: not in the comparison tables, used by the instruction counts.
EXTRA_CONFIGS = {
    "asgi": ("obs-noexport",),
    "span": ("obs-noexport",),
    "real": ("obs-noexport", "obs-middleware-only"),
}
BASELINE = {
    "asgi": "bare",
    "span": "floor",
    "real": "bare",
    "sql": "bare",
    "litestar": "bare",
    "ai": "bare",
}

LABELS = {
    "bare": "bare (no instrumentation)",
    "floor": "floor: minimal pure-Python contextvar span",
    "floor-export": "floor + the least a jsonl record needs (15 keys, hex ids, RFC 3339, orjson)",
    "obs": "obs-middleware",
    "obs-noexport": "obs-middleware, export off (request-thread hot path only)",
    "obs-middleware-only": "obs-middleware, ObsMiddleware only (SQLAlchemy integration off)",
    "otel": "OpenTelemetry",
    "otel-1span": "OpenTelemetry, exclude_spans=[receive, send]",
    "ddtrace": "dd-trace-py",
}


@dataclass
class Bench:
    """One built scenario x configuration, ready to iterate."""

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


# -- instrumentation ---------------------------------------------------------------------------
class _Obs:
    """obs-middleware configured with the jsonl exporter writing to a file."""

    def __init__(self, workdir: Path, *, export: bool = True) -> None:
        self.path = workdir / "obs.jsonl"
        obs.configure(service="bench", exporters=[f"jsonl:{self.path}"])
        if not export:
            from obs_middleware._core import span as _span

            # Diagnostic only: stop at the finish hook, so what remains is the request-thread path.
            _span.on_finish = lambda item: None
        self.flush = obs.flush

    def emitted(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    def records(self) -> list[dict[str, Any]]:
        lines = self.path.read_bytes().splitlines() if self.path.exists() else []
        return [json.loads(line) for line in lines]


class _Otel:
    """An OpenTelemetry SDK TracerProvider + BatchSpanProcessor feeding a counting exporter."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        counter = self

        class CountingExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                counter.count += len(spans)
                return SpanExportResult.SUCCESS

        self.count = 0
        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(CountingExporter()))

    def flush(self) -> None:
        self.provider.force_flush()

    def emitted(self) -> int:
        return self.count


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Ddtrace:
    """dd-trace-py with its agent URL on an unused loopback port; counts finished spans."""

    def __init__(self) -> None:
        os.environ.update(
            DD_TRACE_AGENT_URL=f"http://127.0.0.1:{_free_port()}",
            DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
            DD_REMOTE_CONFIGURATION_ENABLED="false",
            DD_CRASHTRACKING_ENABLED="false",
            DD_TRACE_STARTUP_LOGS="false",
            DD_SERVICE="bench",
        )
        from ddtrace.trace import TraceFilter, tracer

        counter = self

        class CountingFilter(TraceFilter):
            def process_trace(self, trace: Any) -> Any:
                counter.count += len(trace)
                return trace

        self.count = 0
        self.tracer = tracer
        tracer.configure(trace_processors=[CountingFilter()])

    def emitted(self) -> int:
        return self.count


# -- ASGI driving ------------------------------------------------------------------------------
def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": SCOPE_HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class _Driver:
    """Calls an ASGI app directly in a tight loop on one event loop (no server, no sockets)."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.scope = _scope(path)
        self.loop = asyncio.new_event_loop()
        self.status = 0
        self.body = b""
        request = {"type": "http.request", "body": b"", "more_body": False}

        async def receive() -> dict[str, Any]:
            return request

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        async def send_keep(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        async def drive(n: int) -> None:
            app, scope = self.app, self.scope
            for _ in range(n):
                # Starlette writes route/path params into the scope: one fresh copy per request.
                await app(dict(scope), receive, send)

        async def once() -> None:
            self.body = b""
            await self.app(dict(self.scope), receive, send_keep)

        self.drive = drive
        self.once = once

    def run(self, n: int) -> None:
        self.loop.run_until_complete(self.drive(n))

    def call_once(self) -> tuple[int, bytes]:
        self.loop.run_until_complete(self.once())
        return self.status, self.body


def _instrument(app: Starlette, config: str, workdir: Path) -> tuple[Any, str]:
    """Add ``config``'s ASGI middleware to ``app``; returns (handle, note)."""
    if config == "bare":
        return None, ""
    if config in ("obs", "obs-noexport", "obs-middleware-only"):
        handle = _Obs(workdir, export=config != "obs-noexport")
        app.add_middleware(obs.ObsMiddleware)
        return handle, ""
    if config in ("otel", "otel-1span"):
        otel = _Otel()
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        exclude = ["receive", "send"] if config == "otel-1span" else None
        app.add_middleware(
            OpenTelemetryMiddleware, tracer_provider=otel.provider, exclude_spans=exclude
        )
        return otel, ""
    if config == "ddtrace":
        dd = _Ddtrace()
        from ddtrace.contrib.asgi import TraceMiddleware

        app.add_middleware(TraceMiddleware)
        return dd, ""
    raise ValueError(f"unknown config {config!r}")


def _asgi_bench(app: Starlette, handle: Any, path: str, check: Callable[[bytes], None]) -> Bench:
    driver = _Driver(app, path)

    def validate() -> str:
        status, body = driver.call_once()
        if status != 200:
            raise AssertionError(f"status {status}: {body[:200]!r}")
        check(body)
        return "ok"

    bench = Bench(run=driver.run, validate=validate)
    if handle is not None:
        bench.flush = getattr(handle, "flush", bench.flush)
        bench.emitted = handle.emitted
    return bench


# -- scenario 1: small Starlette request -------------------------------------------------------
def _asgi(config: str, workdir: Path) -> Bench:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def get_item(request: Request) -> JSONResponse:
        item_id = request.path_params["item_id"]
        return JSONResponse({"item_id": item_id, "name": "widget", "price": 9.5, "stock": 3})

    app = Starlette(routes=[Route("/items/{item_id}", get_item)])
    handle, _ = _instrument(app, config, workdir)

    def check(body: bytes) -> None:
        assert json.loads(body)["item_id"] == "42", body

    return _asgi_bench(app, handle, "/items/42", check)


# -- scenario 2: one nested span with 3 attributes ---------------------------------------------
_mini_current: contextvars.ContextVar[Any] = contextvars.ContextVar("mini_span", default=None)
_mini_sink: deque[Any] = deque(maxlen=10_000)


class MiniSpan:
    """The floor: contextvar set/reset, two clock reads, one deque append. Exports nothing."""

    __slots__ = ("attrs", "end", "name", "parent", "start", "token")

    def __init__(self, name: str, attrs: dict[str, Any]) -> None:
        self.name = name
        self.attrs = attrs

    def __enter__(self) -> MiniSpan:
        self.parent = _mini_current.get()
        self.token = _mini_current.set(self)
        self.start = time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.perf_counter_ns()
        _mini_current.reset(self.token)
        _mini_sink.append(self)


def _floor_exporter(workdir: Path) -> tuple[Callable[[], None], Callable[[], int]]:
    """Encode what MiniSpan queued as the least a §7 jsonl record can be; one write per flush.

    The lower bound of any exporting implementation: no sampling, metrics, events, attribute
    protection or batching thread; ids as hex, the start as RFC 3339, one orjson call per record.
    """
    path = workdir / "floor.jsonl"
    out = path.open("ab")
    count = [0]
    anchor = time.time_ns() - time.perf_counter_ns()
    ids = random.getrandbits
    opts = orjson.OPT_APPEND_NEWLINE

    def flush() -> None:
        data = bytearray()
        prefix_second, prefix = -1, ""
        while _mini_sink:
            span = _mini_sink.popleft()
            second, us = divmod((anchor + span.start) // 1000, 1_000_000)
            if second != prefix_second:
                prefix_second = second
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            parent = span.parent
            rec = {
                "type": "span",
                "name": span.name,
                "trace_id": ids(128).to_bytes(16, "big").hex(),
                "span_id": ids(64).to_bytes(8, "big").hex(),
                "parent_id": None if parent is None else "0" * 16,
                "service": "bench",
                "environment": "dev",
                "start": "%s.%06dZ" % (prefix, us),
                "duration_ms": (span.end - span.start) // 1000 / 1000,
                "status": "ok",
                "error_type": None,
                "error_message": None,
                "user_id": None,
                "tier": None,
                "request_id": None,
            }
            rec.update(span.attrs)
            data += orjson.dumps(rec, None, opts)
            count[0] += 1
        out.write(data)
        out.flush()

    return flush, lambda: count[0]


def _span(config: str, workdir: Path) -> Bench:
    children = range(SPAN_CHILDREN)
    if config in ("floor", "floor-export"):

        def run(n: int) -> None:
            for _ in range(n):
                with MiniSpan("root", {}):
                    for _ in children:
                        with MiniSpan("child", {"k1": 1, "k2": "two", "k3": 3.0}):
                            pass

        if config == "floor":
            return Bench(run=run)
        flush, emitted = _floor_exporter(workdir)
        return Bench(run=run, flush=flush, emitted=emitted)
    if config in ("obs", "obs-noexport"):
        handle = _Obs(workdir, export=config == "obs")
        span = obs.span

        def run(n: int) -> None:
            for _ in range(n):
                with span("root"):
                    for _ in children:
                        with span("child", k1=1, k2="two", k3=3.0):
                            pass

        def validate() -> str:
            before = handle.emitted()
            run(1)
            obs.flush()
            if config == "obs" and handle.emitted() - before != SPAN_CHILDREN + 1:
                raise AssertionError("obs did not export every span")
            return "ok"

        return Bench(run=run, flush=handle.flush, emitted=handle.emitted, validate=validate)
    if config == "otel":
        otel = _Otel()
        tracer = otel.provider.get_tracer("bench")
        attrs = {"k1": 1, "k2": "two", "k3": 3.0}

        def run(n: int) -> None:
            for _ in range(n):
                with tracer.start_as_current_span("root"):
                    for _ in children:
                        with tracer.start_as_current_span("child", attributes=attrs):
                            pass

        return Bench(run=run, flush=otel.flush, emitted=otel.emitted)
    if config == "ddtrace":
        dd = _Ddtrace()
        trace = dd.tracer.trace

        def run(n: int) -> None:
            for _ in range(n):
                with trace("root"):
                    for _ in children:
                        with trace("child") as s:
                            s.set_tag("k1", 1)
                            s.set_tag("k2", "two")
                            s.set_tag("k3", 3.0)

        return Bench(run=run, emitted=dd.emitted)
    raise ValueError(f"unknown config {config!r}")


# -- scenario 3: realistic request --------------------------------------------------------------
def _obs_sqlalchemy() -> str:
    """Switch obs-middleware's SQLAlchemy integration on when it exists; say what happened."""
    if os.environ.get("OBS_BENCH_SQLALCHEMY", "1") == "0":
        return "ObsMiddleware only (OBS_BENCH_SQLALCHEMY=0)"
    if importlib.util.find_spec("obs_middleware.integrations.sqlalchemy") is None:
        return "ObsMiddleware only (no obs SQLAlchemy integration yet)"
    import sqlalchemy  # imported first, so instrument_all patches now rather than on import

    outcomes = {o.name: o for o in obs.instrument_all(only=["sqlalchemy"])}
    outcome = outcomes.get("sqlalchemy")
    if outcome is None:
        return "ObsMiddleware only (SQLAlchemy integration not registered in INTEGRATIONS)"
    if outcome.status in ("patched", "already"):
        return f"ObsMiddleware + SQLAlchemy integration (sqlalchemy {sqlalchemy.__version__})"
    return f"ObsMiddleware only (SQLAlchemy integration {outcome.status}: {outcome.reason})"


def _real(config: str, workdir: Path) -> Bench:
    import sqlalchemy
    from sqlalchemy.pool import StaticPool
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    notes: list[str] = []
    # The instrumentation is set up before the engine exists: patches of create_engine (ddtrace)
    # and engine event listeners (obs) must see it.
    app_handle: Any = None
    if config == "ddtrace":
        app_handle = _Ddtrace()
        import ddtrace

        ddtrace.patch(sqlalchemy=True)
        notes.append("TraceMiddleware + patch(sqlalchemy=True)")
    if config in ("obs", "obs-noexport"):
        # >>> HOOK: obs SQLAlchemy integration. Switched on automatically once
        # obs_middleware.integrations.sqlalchemy exists (OBS_BENCH_SQLALCHEMY=0 turns it off), so
        # the realistic gate then charges the query spans too, like ddtrace's patch(sqlalchemy).
        notes.append(_obs_sqlalchemy())
        # <<< HOOK

    engine = sqlalchemy.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    meta = sqlalchemy.MetaData()
    items = sqlalchemy.Table(
        "items",
        meta,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("name", sqlalchemy.String(40)),
        sqlalchemy.Column("category", sqlalchemy.String(20)),
        sqlalchemy.Column("price", sqlalchemy.Float),
        sqlalchemy.Column("stock", sqlalchemy.Integer),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {
                    "id": i,
                    "name": f"item-{i}",
                    "category": CATEGORIES[i % len(CATEGORIES)],
                    "price": round(1 + (i * 7919 % 1000) / 10, 2),
                    "stock": i % 17,
                }
                for i in range(1, 241)
            ],
        )
    c = items.c
    cat = sqlalchemy.bindparam("cat")
    q_count = sqlalchemy.select(sqlalchemy.func.count()).where(c.category == cat)
    q_page = (
        sqlalchemy.select(c.id, c.name, c.price, c.stock)
        .where(c.category == cat)
        .order_by(c.id)
        .limit(50)
    )
    q_one = sqlalchemy.select(items).where(c.id == sqlalchemy.bindparam("id"))
    q_stats = sqlalchemy.select(
        sqlalchemy.func.min(c.price), sqlalchemy.func.max(c.price), sqlalchemy.func.avg(c.price)
    ).where(c.category == cat)
    q_related = (
        sqlalchemy.select(c.id, c.name)
        .where(c.category == cat, c.id != sqlalchemy.bindparam("id"))
        .order_by(c.stock.desc())
        .limit(3)
    )

    async def list_items(request: Request) -> JSONResponse:
        category = request.path_params["category"]
        with engine.connect() as conn:
            total = conn.execute(q_count, {"cat": category}).scalar_one()
            rows = conn.execute(q_page, {"cat": category}).all()
            featured = conn.execute(q_one, {"id": rows[0].id}).one()
            low, high, _avg = conn.execute(q_stats, {"cat": category}).one()
            related = conn.execute(q_related, {"cat": category, "id": featured.id}).all()
        return JSONResponse(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "price": r.price,
                    "stock": r.stock,
                    "category": category,
                    "featured": r.id == featured.id,
                    "cheapest": r.price == low,
                }
                for r in rows
            ],
            headers={"x-total": str(total), "x-related": str(len(related)), "x-max": str(high)},
        )

    app = Starlette(routes=[Route("/categories/{category}/items", list_items)])
    if config == "ddtrace":
        from ddtrace.contrib.asgi import TraceMiddleware

        app.add_middleware(TraceMiddleware)
        handle = app_handle
    else:
        handle, _ = _instrument(app, config, workdir)
    if config.startswith("otel"):
        try:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        except ImportError:
            notes.append(
                "ASGI middleware only: opentelemetry-instrumentation-sqlalchemy is not installed"
            )
        else:
            # It declares sqlalchemy<2.1 and would instrument nothing here without the override.
            SQLAlchemyInstrumentor().instrument(
                engine=engine, tracer_provider=handle.provider, skip_dep_check=True
            )
            notes.append("ASGI middleware + SQLAlchemyInstrumentor(skip_dep_check=True)")

    def check(body: bytes) -> None:
        data = json.loads(body)
        assert isinstance(data, list) and len(data) == 50, body[:200]

    bench = _asgi_bench(app, handle, "/categories/books/items", check)
    bench.notes = notes
    return bench


# -- scenario 4: one SQLAlchemy query ----------------------------------------------------------
def _sql(config: str, workdir: Path) -> Bench:
    import sqlalchemy
    from sqlalchemy.pool import StaticPool

    notes: list[str] = []
    handle: Any = None
    root: Callable[[], Any]
    # Instrumentation before the engine exists, as in the realistic request.
    if config == "obs":
        handle = _Obs(workdir)
        notes.append(_obs_sqlalchemy())
        root = lambda: obs.span("root")  # noqa: E731
    elif config == "ddtrace":
        handle = _Ddtrace()
        import ddtrace

        ddtrace.patch(sqlalchemy=True)
        notes.append("patch(sqlalchemy=True)")
        trace = handle.tracer.trace
        root = lambda: trace("root")  # noqa: E731
    elif config == "otel":
        handle = _Otel()
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
        flush = getattr(handle, "flush", lambda: None)
        flush()
        before = handle.emitted()
        run(1)
        flush()
        if handle.emitted() - before != SQL_BATCH + 1:
            raise AssertionError(f"{config}: {handle.emitted() - before} spans for one root")
        return "ok"

    bench = Bench(run=run, validate=validate, notes=notes, chunk=SQL_CHUNK)
    if handle is not None:
        bench.flush = getattr(handle, "flush", bench.flush)
        bench.emitted = handle.emitted
    return bench


# -- scenario 5: small Litestar request --------------------------------------------------------
def _litestar(config: str, workdir: Path) -> Bench:
    from litestar import Litestar, get

    @get("/items/{item_id:str}")
    async def get_item(item_id: str) -> dict[str, Any]:
        return {"item_id": item_id, "name": "widget", "price": 9.5, "stock": 3}

    handle: Any = None
    plugins: list[Any] = []
    if config == "obs":
        from obs_middleware.middleware.litestar import ObsPlugin

        handle = _Obs(workdir)
        plugins.append(ObsPlugin())
    elif config == "otel":
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

        handle = _Otel()
        plugins.append(OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=handle.provider)))
    elif config != "bare":
        raise ValueError(f"unknown config {config!r}")
    app = Litestar(route_handlers=[get_item], plugins=plugins, logging_config=None)

    def check(body: bytes) -> None:
        assert json.loads(body)["item_id"] == "42", body

    return _asgi_bench(app, handle, "/items/42", check)  # type: ignore[arg-type]


# -- scenario 6: one OpenAI chat completion ----------------------------------------------------
# The emulator runs in its own process, so neither CPU time nor callgrind charges its work to the
# measured one. It exits when its stdin closes, i.e. when the worker exits however it does.
_EMULATOR = """
import sys
from obs_middleware.testing.emulators.openai import OpenAIEmulator
with OpenAIEmulator(latency_s=0.0) as emu:
    print(emu.url, flush=True)
    sys.stdin.read()
"""
_children: list[subprocess.Popen[str]] = []


def _emulator_url() -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "DD_"))},
    )
    _children.append(proc)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"emulator did not start: {url!r}")
    return url


def _ai(config: str, workdir: Path) -> Bench:
    notes: list[str] = []
    handle: Any = None
    if config == "ddtrace":
        handle = _Ddtrace()
        import ddtrace

        ddtrace.patch(openai=True)
        notes.append("patch(openai=True)")
    import openai

    if config == "obs":
        handle = _Obs(workdir)
        outcome = {o.name: o for o in obs.instrument_all(only=["openai"])}.get("openai")
        if outcome is None or outcome.status not in ("patched", "already"):
            raise RuntimeError(f"obs openai integration not active: {outcome}")
    elif config not in ("bare", "ddtrace"):
        raise ValueError(f"unknown config {config!r}")
    client = openai.OpenAI(api_key="sk-test", base_url=_emulator_url() + "/v1", max_retries=0)
    messages = [{"role": "user", "content": "Say hello."}]
    create = client.chat.completions.create

    def run(n: int) -> None:
        for _ in range(n):
            create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]

    def validate() -> str:
        reply = create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert reply.choices[0].message.content, reply
        return "ok"

    bench = Bench(run=run, validate=validate, notes=notes)
    if handle is not None:
        bench.flush = getattr(handle, "flush", bench.flush)
        bench.emitted = handle.emitted
    return bench


# -- export throughput: finished spans -> records -> encoded bytes, one core --------------------
# A round exports this many batches of the pipeline's default size (20,480 spans); OTLP, ~10x
# slower, a quarter of that.
EXPORT_BATCHES = 40
EXPORT_STAGES = {
    "full": "finished spans -> the export worker's loop -> exporter (jsonl: to_records, export; "
    "tinybird: export_spans)",
    "encode": "records prebuilt -> exporter.export",
    "ndjson": "finished spans -> span_rows -> encode_rows (NDJSON bytes, no gzip)",
    "convert": "records prebuilt -> to_otel_spans",
    "protobuf": "records prebuilt -> to_otel_spans -> protobuf bytes",
}
# path -> (what it is, its stages in the order they run each round)
EXPORT_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "jsonl": ("jsonl exporter writing to a file", ("full", "encode")),
    "tinybird": (
        "Tinybird exporter: NDJSON rows, gzip, delivery; the Events API answered in-process",
        ("full", "encode", "ndjson"),
    ),
    "otlp": ("OTLP exporter's conversion, with and without protobuf", ("convert", "protobuf")),
}


def export_mix(n: int) -> list[Any]:
    """``n`` finished spans in finish order: per request an AI client span, then its HTTP root.

    The root carries 3 HTTP attributes, user, tier and request id; the AI span 7 attributes, one
    of them uncatalogued (Tinybird's ``attributes`` column).
    """
    from obs_middleware._core import span as _span

    finished: list[Any] = []
    _span.on_finish = finished.append  # exporting is what the stages time, not this
    for i in range(n // 2):
        with _span.Span(
            "POST /v1/images",
            {"http.method": "POST", "http.route": "/v1/images", "http.status_code": 200},
            "server",
        ) as root:
            root.local.user_id = f"user-{i % 100}"
            root.local.tier = "pro"
            root.local.request_id = f"req-{i}"
            with _span.Span(
                "ai.request",
                {
                    "ai.provider": "replicate",
                    "ai.model": "black-forest-labs/flux-schnell",
                    "ai.operation": "run",
                    "ai.queue_ms": 120.5,
                    "ai.image_count": 1,
                    "cost.usd": 0.003,
                    "cost.pricing_version": "2026-11",
                },
                "client",
            ):
                pass
    return finished


class _File:
    """The jsonl exporter's output file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def clear(self) -> None:
        os.truncate(self.path, 0)

    def lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines()


class _EventsApi:
    """Stands in for Tinybird's connection: every POST is answered 200 in-process, bodies kept."""

    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, Mapping[str, str]]] = []

    def clear(self) -> None:
        self.bodies.clear()

    def post(self, path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Any:
        from obs_middleware.exporters.http import Response

        self.bodies.append((body, headers))
        return Response(200, {}, b'{"successful_rows":512,"quarantined_rows":0}')

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def lines(self) -> list[bytes]:
        return [
            line
            for body, headers in self.bodies
            for line in (
                gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
            ).splitlines()
        ]


@dataclass
class ExportPath:
    """One export path: its stages (``EXPORT_STAGES`` keys), each exporting ``spans`` spans.

    ``reset()`` runs before every stage, untimed: it requeues the spans, forgets the trace ids'
    hex (``to_records`` caches it per trace, so every round formats it again) and empties the
    exporter's output.
    """

    stages: dict[str, Callable[[], None]]
    reset: Callable[[], None]
    spans: int
    check: Callable[[], None]
    notes: list[str] = field(default_factory=list)


def export_path(path: str, workdir: Path) -> ExportPath:
    """Build an export path of ``EXPORT_PATHS`` (``ImportError`` if OTLP's extra is absent)."""
    from obs_middleware._core.config import PipelineOptions
    from obs_middleware._pipeline import Pipeline
    from obs_middleware._record import Resource, to_records

    if path not in EXPORT_PATHS:
        raise ValueError(f"unknown export path {path!r} (known: {tuple(EXPORT_PATHS)})")
    size = PipelineOptions().batch_size
    n = size * (EXPORT_BATCHES // 4 if path == "otlp" else EXPORT_BATCHES)
    spans = export_mix(n)
    resource = Resource("bench", "production", "1.0.0")
    batches = [to_records(spans[i : i + size], resource) for i in range(0, n, size)]
    if path == "otlp":
        return _otlp_path(batches, n)
    stages: dict[str, Callable[[], None]] = {}
    notes: list[str] = []
    if path == "jsonl":
        from obs_middleware.exporters.jsonl import JsonlExporter

        out: Any = _File(workdir / "throughput.jsonl")
        exporter: Any = JsonlExporter(out.path)
        expected = batches[0][0]
    else:
        from obs_middleware.exporters._rows import encode_rows, span_rows
        from obs_middleware.exporters.tinybird import TinybirdExporter, row

        out = _EventsApi()
        exporter = TinybirdExporter(token="bench")
        exporter.transport = out
        expected = row(batches[0][0])
        notes.append(f"exporter gzip {'on' if exporter.compress else 'off'}")

        def ndjson() -> None:
            for i in range(0, n, size):
                encode_rows(span_rows(spans[i : i + size], resource))

        stages["ndjson"] = ndjson
    pipeline = Pipeline([exporter], resource, queue_size=n, batch_size=size, interval_s=3600)

    def reset() -> None:
        for s in spans:
            s.local.trace_hex = None
        pipeline.queue.clear()  # the stages with prebuilt records leave it full
        pipeline.queue.extend(spans)
        out.clear()

    def full() -> None:
        pipeline._drain()  # the export worker's loop: batches, records or rows, every exporter
        exporter.flush()

    def encode() -> None:
        for records in batches:
            exporter.export(records)
        exporter.flush()

    def check() -> None:
        reset()
        full()
        lines = out.lines()
        assert len(lines) == n and json.loads(lines[0]) == expected, (len(lines), lines[:1])

    stages = {"full": full, "encode": encode, **stages}
    return ExportPath(stages, reset, n, check, notes)


def _otlp_path(batches: list[list[dict[str, Any]]], n: int) -> ExportPath:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from obs_middleware.exporters.otlp import OTLPExporter, _Times, to_otel_spans

    otlp = OTLPExporter("http://127.0.0.1:9", metrics=False)
    times = _Times()

    def convert() -> None:
        for records in batches:
            to_otel_spans(records, otlp.resource, times)

    def protobuf() -> None:
        for records in batches:
            encode_spans(to_otel_spans(records, otlp.resource, times)).SerializeToString()

    def check() -> None:
        converted = to_otel_spans(batches[0], otlp.resource, times)
        assert len(converted) == len(batches[0]) and converted[0].name == batches[0][0]["name"]

    return ExportPath({"convert": convert, "protobuf": protobuf}, lambda: None, n, check)


def cleanup() -> None:
    """Stop the helper processes this worker started."""
    for proc in _children:
        proc.kill()
        proc.wait(5)


BUILDERS: dict[str, Callable[[str, Path], Bench]] = {
    "asgi": _asgi,
    "span": _span,
    "real": _real,
    "sql": _sql,
    "litestar": _litestar,
    "ai": _ai,
}


def build(scenario: str, config: str, workdir: Path) -> Bench:
    """Build ``scenario`` under ``config`` (a key of ``SCENARIOS``/``EXTRA_CONFIGS``)."""
    known = SCENARIOS[scenario][3] + EXTRA_CONFIGS.get(scenario, ())
    if config not in known:
        raise ValueError(f"unknown config {config!r} for {scenario!r} (known: {known})")
    bench = BUILDERS[scenario](config, workdir)
    if scenario == "span":
        bench.chunk = SPAN_CHUNK
    return bench


def dropped() -> float:
    """Records obs-middleware dropped so far in this process (all reasons)."""
    from obs_middleware._core.metrics import registry

    snap = registry.snapshot().get("obs.dropped")
    return float(sum(snap.points.values())) if snap else 0.0  # type: ignore[arg-type]
