"""The SQLAlchemy integration against real SQLAlchemy 2.x engines on SQLite (pysqlite, aiosqlite).

Verified with SQLAlchemy 2.1.9 (the integration supports >=2.0,<2.2), aiosqlite 0.20+.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, StaticPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware._core import internal
from obs_middleware._core.config import SamplingOptions
from obs_middleware.integrations import sqlalchemy as integration
from obs_middleware.testing import Capture, capture

from ._pool_checks import (
    check_nullpool,
    check_overflow_and_wait,
    check_timeout,
    gauge,
    histogram,
)

Engines = Callable[..., Any]
KEPT = ("name", "span.kind", "trace_id", "span_id", "parent_id", "status", "error_type")
KEPT += ("error_message",)


def view(record: dict[str, Any]) -> dict[str, Any]:
    """What a test compares: identity, status and every ``db.*``/``code.*`` attribute."""
    return {k: v for k, v in record.items() if k in KEPT or k.startswith(("db.", "code."))}


def with_sleep(engine: sa.Engine) -> None:
    """``sleep_ms(n)`` in SQL, on every connection the pool opens."""

    @sa.event.listens_for(engine, "connect")
    def add_sleep(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000) or ms)


def test_statement_spans_snapshot(obs_capture: Capture, engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with obs.span("request"), engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)"))
        conn.execute(
            sa.text("INSERT INTO users (email) VALUES (:email)"),
            [{"email": "ann@example.com"}, {"email": "bob@example.com"}],
        )
        conn.execute(sa.text("SELECT id FROM users WHERE email = 'ann@example.com'")).all()
    common = {
        "name": "db.query",
        "span.kind": "client",
        "trace_id": f"{1:032x}",
        "parent_id": f"{1:016x}",
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "db.system": "sqlite",
        "db.driver": "pysqlite",
        "db.pool.name": "main",
    }
    assert [view(s) for s in obs_capture.spans if s["name"] == "db.query"] == [
        {
            **common,
            "span_id": f"{2:016x}",
            "db.operation": "CREATE",
            "db.table": "users",
            "db.statement": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE)",
        },
        {
            **common,
            "span_id": f"{3:016x}",
            "db.operation": "INSERT",
            "db.table": "users",
            "db.statement": "INSERT INTO users (email) VALUES (?)",
            "db.executemany": True,
            "db.rows": 2,
        },
        {
            **common,
            "span_id": f"{4:016x}",
            "db.operation": "SELECT",
            "db.table": "users",
            "db.statement": "SELECT id FROM users WHERE email = ?",
        },
    ]
    queries = obs_capture.metrics["db.client.queries"].points
    assert queries == {("CREATE", "main"): 1, ("INSERT", "main"): 1, ("SELECT", "main"): 1}


def test_no_literal_or_parameter_is_exported(obs_capture: Capture, engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://")
    with obs.span("request"), engine.connect() as conn:
        conn.execute(sa.text("SELECT 'ann-SECRET' AS a, :p AS b"), {"p": "param-SECRET"})
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT * FROM nope WHERE x = 'where-SECRET'"))
    assert "SECRET" not in repr(obs_capture.records)


def test_spans_a_failed_statement_crosses_export_no_literal_or_parameter(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (email TEXT UNIQUE, pw TEXT)"))
        conn.execute(sa.text("INSERT INTO users VALUES ('bob@x', 'a')"))
    with pytest.raises(sa.exc.IntegrityError), obs.span("req"), engine.begin() as conn:
        insert = sa.text("INSERT INTO users VALUES (:e, :p)")
        conn.execute(insert, {"e": "bob@x", "p": "hunter2"})
    with pytest.raises(sa.exc.OperationalError), obs.span("req2"), engine.begin() as conn:
        conn.execute(sa.text("SELECT * FROM nope WHERE email = 'alice@example.com'"))
    exported = repr(obs_capture.records)
    assert "bob@x" not in exported
    assert "hunter2" not in exported
    assert "alice@" not in exported
    assert obs_capture.span("req")["error_message"] == (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
        "[SQL: INSERT INTO users VALUES (?, ?)]\n"
        "[parameters: [REDACTED]]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    assert obs_capture.span("req2")["error_message"].startswith(
        "(sqlite3.OperationalError) no such table: nope\n[SQL: SELECT * FROM nope WHERE email = ?]"
    )


def test_failed_statement_has_error_type_and_the_app_gets_its_exception(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with obs.span("request"), engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (email TEXT UNIQUE)"))
        conn.execute(sa.text("INSERT INTO users VALUES ('ann@example.com')"))
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("INSERT INTO users VALUES (:e)"), {"e": "ann@example.com"})
    failed = obs_capture.spans[-2]  # then the request span
    assert view(failed) == {
        "name": "db.query",
        "span.kind": "client",
        "trace_id": f"{1:032x}",
        "span_id": f"{4:016x}",
        "parent_id": f"{1:016x}",
        "status": "error",
        "error_type": "IntegrityError",
        "error_message": "UNIQUE constraint failed: users.email",
        "db.system": "sqlite",
        "db.driver": "pysqlite",
        "db.pool.name": "main",
        "db.operation": "INSERT",
        "db.table": "users",
        "db.statement": "INSERT INTO users VALUES (?)",
    }
    errors = obs_capture.metrics["db.client.errors"].points
    assert errors == {("INSERT", "main", "IntegrityError"): 1}


def test_executemany_is_one_span(obs_capture: Capture, engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://")
    with obs.span("request"), engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (:n)"), [{"n": i} for i in range(500)])
    inserts = [s for s in obs_capture.spans if s.get("db.operation") == "INSERT"]
    assert len(inserts) == 1
    assert inserts[0]["db.executemany"] is True
    assert inserts[0]["db.rows"] == 500


def test_metrics_count_every_statement_whatever_the_sample_rate(engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("request"), engine.connect() as conn:
            for _ in range(10):
                conn.execute(sa.text("SELECT 1"))
        assert cap.spans == []
        assert cap.metrics["db.client.queries"].points == {("SELECT", "main"): 10}
        duration = histogram(cap, "db.client.duration", ("SELECT", "main"))
        assert duration.count == 10


def test_outside_a_trace_statements_are_counted_not_traced(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with engine.connect() as conn:  # startup work, a script: no request or job span around it
        conn.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT * FROM nope"))
    assert obs_capture.records == []
    metrics = obs_capture.metrics
    assert metrics["db.client.queries"].points == {("SELECT", "main"): 2}
    assert metrics["db.client.errors"].points == {("SELECT", "main", "OperationalError"): 1}


def test_several_engines_each_instrumented_with_its_own_pool_name(
    obs_capture: Capture, engines: Engines
) -> None:
    first = engines(sa.create_engine, "sqlite://")
    second = engines(sa.create_engine, "sqlite://")
    for engine in (first, second):
        with obs.span("request"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    pools = [s["db.pool.name"] for s in obs_capture.spans if s["name"] == "db.query"]
    assert pools == ["sqlite:///", "sqlite:///#2"]


def test_instrumenting_twice_and_option_engines_give_one_span(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://")
    obs.instrument_sqlalchemy(engine, engine)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    obs.instrument_sqlalchemy(autocommit)
    for target in (engine, autocommit):
        with obs.span("request"), target.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    assert obs_capture.names == ["db.query", "request", "db.query", "request"]


async def test_async_engine_yields_exactly_one_span_per_statement(
    obs_capture: Capture, engines: Engines, tmp_path: Path
) -> None:
    engine = engines(create_async_engine, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    obs.instrument_sqlalchemy(engine, engine.sync_engine)  # again, both ways: still one wrapper
    with obs.span("job"):
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (:n)"), [{"n": 1}, {"n": 2}])
            rows = (await conn.execute(sa.text("SELECT n FROM t WHERE n > 0"))).all()
    await engine.dispose()
    assert len(rows) == 2
    queries = [s for s in obs_capture.spans if s["name"] == "db.query"]
    assert [(s["db.operation"], s["db.driver"]) for s in queries] == [
        ("CREATE", "aiosqlite"),
        ("INSERT", "aiosqlite"),
        ("SELECT", "aiosqlite"),
    ]


async def test_query_spans_nest_under_the_asgi_request_span(
    obs_capture: Capture, engines: Engines, tmp_path: Path
) -> None:
    engine = engines(create_async_engine, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")

    async def item(request: Request) -> JSONResponse:
        async with engine.connect() as conn:
            n = int(request.path_params["n"])
            for _ in range(n):
                await conn.execute(sa.text("SELECT :n"), {"n": n})
        return JSONResponse({"n": n})

    app = Starlette(routes=[Route("/items/{n}", item)])
    app.add_middleware(obs.ObsMiddleware)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*(client.get(f"/items/{n}") for n in range(1, 5)))
    await engine.dispose()
    assert [r.status_code for r in responses] == [200] * 4
    requests = {s["trace_id"]: s for s in obs_capture.spans if s["name"] == "GET /items/{n}"}
    queries = [s for s in obs_capture.spans if s["name"] == "db.query"]
    assert len(requests) == 4
    assert len(queries) == 1 + 2 + 3 + 4
    for query in queries:  # concurrent requests: each query in its own request's trace
        assert query["parent_id"] == requests[query["trace_id"]]["span_id"]
    per_trace = sorted(sum(q["trace_id"] == t for q in queries) for t in requests)
    assert per_trace == [1, 2, 3, 4]


def test_slow_query_event_log_and_counter(
    live: Capture, engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    obs.instrument_sqlalchemy(engine, slow_query_ms=50)
    with_sleep(engine)
    with (
        obs.span("request"),
        engine.connect() as conn,
        caplog.at_level(logging.WARNING, "obs_middleware.sqlalchemy"),
    ):
        conn.execute(sa.text("SELECT sleep_ms(5)"))  # fast: no event
        line = sys._getframe().f_lineno + 1
        conn.execute(sa.text("SELECT sleep_ms(80) AS 'label-SECRET'"))
    location = f"{__file__}:{line}"
    [event] = live.events
    assert event["name"] == "db.slow_query"
    assert event["code.location"] == location
    assert event["code.function"] == "test_slow_query_event_log_and_counter"
    assert event["db.statement"] == "SELECT sleep_ms(?) AS ?"
    assert event["duration_ms"] >= 80
    slow_span = live.spans[-2]  # then the request span
    assert event["span_id"] == slow_span["span_id"]
    assert (slow_span["code.filepath"], slow_span["code.lineno"]) == (__file__, line)
    exported = repr(event) + repr(slow_span) + caplog.text
    assert "SECRET" not in exported and "sleep_ms(80)" not in exported
    assert location in caplog.text and "SELECT sleep_ms(?) AS ?" in caplog.text
    assert live.metrics["db.client.slow_queries"].points == {("SELECT", "main"): 1}


async def test_slow_async_query_outside_a_trace_finds_the_awaiting_caller(
    live: Capture, engines: Engines, tmp_path: Path
) -> None:
    engine = engines(create_async_engine, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    obs.instrument_sqlalchemy(engine, slow_query_ms=0.000_001)  # every statement is slow
    async with engine.connect() as conn:
        line = sys._getframe().f_lineno + 1
        await conn.execute(sa.text("SELECT 1"))
    await engine.dispose()
    [event] = live.events
    assert event["code.location"] == f"{__file__}:{line}"
    assert (event["trace_id"], live.spans) == (None, [])


def test_queuepool_overflow_wait_and_utilization(
    live: Capture, engines: Engines, tmp_path: Path
) -> None:
    engine = engines(
        sa.create_engine,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        pool_size=2,
        max_overflow=1,
        pool_timeout=10,
        pool_logging_name="small",
    )
    check_overflow_and_wait(live, engine, "small")


def test_checkout_timeout_is_counted(live: Capture, engines: Engines, tmp_path: Path) -> None:
    engine = engines(
        sa.create_engine,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.1,
        pool_logging_name="tiny",
    )
    check_timeout(live, engine, "tiny")


def test_nullpool_connections_are_counted(live: Capture, engines: Engines, tmp_path: Path) -> None:
    engine = engines(
        sa.create_engine,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        poolclass=NullPool,
        pool_logging_name="null",
    )
    check_nullpool(live, engine, "null")


def test_staticpool_reuses_its_one_connection(live: Capture, engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://", poolclass=StaticPool, pool_logging_name="st")
    for _ in range(3):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            assert gauge(live, "checked_out", "st") == 1
            assert gauge(live, "open", "st") == 1
            assert gauge(live, "size", "st") == 1
    assert live.metrics["db.client.pool.connections.created"].points == {("st",): 1}
    assert live.metrics["db.client.pool.checkouts"].points == {("st",): 3}
    assert (gauge(live, "checked_out", "st"), gauge(live, "idle", "st")) == (0, 1)


def test_invalidated_connections_are_counted(live: Capture, engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with engine.connect() as conn:
        conn.invalidate()
    metrics = live.metrics
    assert metrics["db.client.pool.connections.invalidated"].points == {("main",): 1}
    assert metrics["db.client.pool.connections.closed"].points == {("main",): 1}


def test_dispose_keeps_instrumenting_and_uninstrument_undoes_everything(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    engine.dispose()  # a new pool: still timed, still counted
    with obs.span("request"), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert obs_capture.names == ["db.query", "request"]
    assert obs_capture.metrics["db.client.pool.checkouts"].points == {("main",): 1}
    integration.uninstrument_sqlalchemy(engine)
    assert "connect" not in vars(engine.pool)
    assert not {"do_execute", "do_execute_no_params", "do_executemany"} & set(vars(engine.dialect))
    obs_capture.clear()
    with obs.span("request"), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    assert obs_capture.names == ["request"]
    assert "db.client.pool.connections.created" not in {
        name for name, snap in obs_capture.metrics.items() if snap.points
    }


def test_sqlcommenter_appends_traceparent_when_enabled(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://")
    obs.instrument_sqlalchemy(engine, commenter=True)
    seen: list[str] = []
    with obs.span("request"), engine.connect() as conn:
        conn.connection.driver_connection.set_trace_callback(seen.append)  # type: ignore[union-attr]
        conn.execute(sa.text("SELECT 1"))
        conn.execute(sa.text("SELECT 2 /* mine */"))
        conn.connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]
    first = obs_capture.spans[0]
    assert seen == [
        f"SELECT 1 /*traceparent='00-{first['trace_id']}-{first['span_id']}-01'*/",
        "SELECT 2 /* mine */",  # a statement with a comment of its own is left alone
    ]
    assert first["db.statement"] == "SELECT ?"


def test_sqlcommenter_is_off_by_default(obs_capture: Capture, engines: Engines) -> None:
    engine = engines(sa.create_engine, "sqlite://")
    seen: list[str] = []
    with obs.span("request"), engine.connect() as conn:
        conn.connection.driver_connection.set_trace_callback(seen.append)  # type: ignore[union-attr]
        conn.execute(sa.text("SELECT 1"))
        conn.connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]
    assert seen == ["SELECT 1"]


def test_queries_of_an_unsampled_trace_are_exported_whole_only_if_it_is_kept(
    engines: Engines,
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("forgotten"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).all()
        assert cap.names == []
        with pytest.raises(RuntimeError), obs.span("kept") as root, engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t (x) VALUES (:x)"), [{"x": 1}, {"x": 2}])
            conn.execute(sa.text("SELECT x FROM t WHERE x > 0")).all()
            raise RuntimeError("after the queries")
        queries = [s for s in cap.spans if s["name"] == "db.query"]
        assert [
            (q["db.statement"], q.get("db.rows"), q.get("db.executemany")) for q in queries
        ] == [
            ("CREATE TABLE t (x INTEGER)", None, None),
            ("INSERT INTO t (x) VALUES (?)", 2, True),
            ("SELECT x FROM t WHERE x > ?", None, None),
        ]
        assert {(q["trace_id"], q["parent_id"], q["status"]) for q in queries} == {
            (root.trace_hex, root.span_hex, "ok")
        }
        assert len({q["span_id"] for q in queries}) == 3
        assert cap.span("kept")["status"] == "error"
        counted = cap.metrics["db.client.queries"].points
        assert sum(counted.values()) == 4  # every statement, whichever traces were kept


def test_a_failed_or_slow_query_of_an_unsampled_trace_is_a_span_that_keeps_it(
    engines: Engines,
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    obs.instrument_sqlalchemy(engine, slow_query_ms=50)
    with_sleep(engine)
    with capture(sampling=SamplingOptions(ratio=0.0), fixed=False) as cap:
        with obs.span("failing"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).all()
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("SELECT * FROM missing WHERE x = 'v-SECRET'"))
        with obs.span("slow"), engine.connect() as conn:
            conn.execute(sa.text("SELECT sleep_ms(80)")).all()
        assert [s["name"] for s in cap.spans] == ["db.query"] * 2 + ["failing", "db.query", "slow"]
        ok, failed, _, slow, _ = cap.spans
        assert (ok["status"], failed["status"], failed["error_type"]) == (
            "ok",
            "error",
            "OperationalError",
        )
        assert "SECRET" not in repr(failed)
        assert slow["db.statement"] == "SELECT sleep_ms(?)" and slow["code.filepath"] == __file__
        assert [e["name"] for e in cap.events] == ["db.slow_query"]


def test_statements_without_parameters_and_keyword_calls_are_timed(
    obs_capture: Capture, engines: Engines
) -> None:
    engine = engines(sa.create_engine, "sqlite://", pool_logging_name="main")
    with obs.span("request"), engine.connect() as conn:
        conn.execution_options(no_parameters=True).exec_driver_sql("SELECT 1").all()
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        engine.dialect.do_execute(cursor, "SELECT 2", (), context=None)
        assert cursor.fetchall() == [(2,)]
        engine.dialect.do_execute_no_params(cursor, "SELECT 3", context=None)
        assert cursor.fetchall() == [(3,)]
    statements = [s["db.statement"] for s in obs_capture.spans if s["name"] == "db.query"]
    assert statements == ["SELECT ?", "SELECT ?", "SELECT ?"]
    assert obs_capture.metrics["db.client.queries"].points == {("SELECT", "main"): 3}


def test_uninstrument_skips_what_is_not_an_engine_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(internal, "_warned", set())  # whatever warned before this test
    with caplog.at_level(logging.WARNING, "obs_middleware.sqlalchemy"):
        integration.uninstrument_sqlalchemy(None, None)
    assert [r.getMessage() for r in caplog.records] == [
        "obs-middleware: uninstrument_sqlalchemy: NoneType is not an engine: skipped"
    ]
