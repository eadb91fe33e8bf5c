"""The SQLAlchemy integration against a real PostgreSQL 15 server: psycopg 3 (sync) and asyncpg.

The server is started by .ci/backends/postgres.sh (OBS_TEST_PG_URL); without it these tests skip,
and under CI=true they fail. Verified with PostgreSQL 15.18, psycopg 3.3, asyncpg 0.32,
SQLAlchemy 2.1.9.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import obs_middleware as obs
from obs_middleware.testing import Capture

from ._pool_checks import check_nullpool, check_overflow_and_wait, check_timeout
from .conftest import with_driver

Engines = Callable[..., Any]
ACTIVITY = sa.text("SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()")


def test_pg_sleep_is_a_slow_query_with_the_callers_location(
    live: Capture, engines: Engines, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engines(sa.create_engine, with_driver(pg_url, "psycopg"), pool_logging_name="pg")
    engine.connect().close()  # the dialect's first-connect queries: not part of this test
    live.clear()
    with (
        obs.span("request"),
        engine.connect() as conn,
        caplog.at_level(logging.WARNING, "obs_middleware.sqlalchemy"),
    ):
        line = sys._getframe().f_lineno + 1
        conn.execute(sa.text("SELECT pg_sleep(0.15)"))
    location = f"{__file__}:{line}"
    [event] = [e for e in live.events if e["db.statement"] == "SELECT pg_sleep(?)"]
    assert event["code.location"] == location
    assert event["db.statement"] == "SELECT pg_sleep(?)"
    assert event["db.system"] == "postgresql"
    assert event["duration_ms"] >= 150
    [span] = [s for s in live.spans if s.get("db.statement") == "SELECT pg_sleep(?)"]
    assert (span["code.filepath"], span["code.lineno"]) == (__file__, line)
    assert event["span_id"] == span["span_id"]
    assert "0.15" not in repr(live.records) + caplog.text
    assert f"at {location}: SELECT pg_sleep(?)" in caplog.text
    assert live.metrics["db.client.slow_queries"].points == {("SELECT", "pg"): 1}


async def test_asyncpg_slow_query_finds_the_awaiting_caller(
    live: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(create_async_engine, with_driver(pg_url, "asyncpg"))
    with obs.span("job"):
        async with engine.connect() as conn:
            line = sys._getframe().f_lineno + 1
            await conn.execute(sa.text("SELECT pg_sleep(0.15)"))
    await engine.dispose()
    [event] = [e for e in live.events if e["db.statement"] == "SELECT pg_sleep(?)"]
    assert event["code.location"] == f"{__file__}:{line}"
    [span] = [s for s in live.spans if s.get("db.statement") == "SELECT pg_sleep(?)"]
    assert (event["span_id"], span["code.lineno"]) == (span["span_id"], line)
    assert event["db.statement"] == "SELECT pg_sleep(?)"


def test_psycopg_statement_spans(obs_capture: Capture, engines: Engines, pg_url: str) -> None:
    engine = engines(sa.create_engine, with_driver(pg_url, "psycopg"), pool_logging_name="pg")
    table = f"items_{uuid.uuid4().hex[:8]}"
    with obs.span("request"), engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TEMPORARY TABLE {table} (id serial, name text)"))
        conn.execute(sa.text(f"INSERT INTO {table} (name) VALUES (:n)"), [{"n": "a"}, {"n": "b"}])
        conn.execute(sa.text(f"UPDATE {table} SET name = 'secret' WHERE name <> 'x'"))
    spans = [s for s in obs_capture.spans if table in (s.get("db.table") or "")]
    assert [(s["db.operation"], s.get("db.rows"), s.get("db.executemany")) for s in spans] == [
        ("CREATE", None, None),
        ("INSERT", 2, True),
        ("UPDATE", 2, None),
    ]
    assert spans[2]["db.statement"] == f"UPDATE {table} SET name = ? WHERE name <> ?"
    assert {(s["db.system"], s["db.driver"], s["db.name"], s["db.pool.name"]) for s in spans} == {
        ("postgresql", "psycopg", "postgres", "pg")
    }


def test_psycopg_error_type_without_values(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(sa.create_engine, with_driver(pg_url, "psycopg"), pool_logging_name="pg")
    with obs.span("request"), engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMPORARY TABLE users (email text UNIQUE)"))
        conn.execute(sa.text("INSERT INTO users VALUES ('ann@example.com')"))
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("INSERT INTO users VALUES (:e)"), {"e": "ann@example.com"})
    failed = obs_capture.spans[-2]  # then the request span
    assert (failed["status"], failed["error_type"]) == ("error", "UniqueViolation")
    assert failed["error_message"] == (
        "duplicate key value violates unique constraint ?\nDETAIL:  Key (email)=(?) already exists."
    )
    assert "ann@example.com" not in repr(obs_capture.records)
    assert obs_capture.metrics["db.client.errors"].points == {
        ("INSERT", "pg", "UniqueViolation"): 1
    }


def test_psycopg_errors_export_no_value_on_any_span_they_cross(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(sa.create_engine, with_driver(pg_url, "psycopg"))
    setup = "CREATE TEMPORARY TABLE users (email text UNIQUE, pw text NOT NULL, n int)"
    failing = [
        ("INSERT INTO users VALUES (:e, 'pw-SECRET', 2)", {"e": "ann@SECRET.example"}),
        ("INSERT INTO users VALUES ('bob@SECRET.example', NULL, 3)", {}),
        ("SELECT * FROM users WHERE email = 'carl@SECRET.example' AND n = 'n-SECRET'", {}),
    ]
    with engine.connect() as conn:
        conn.execute(sa.text(setup))
        conn.execute(sa.text("INSERT INTO users VALUES ('ann@SECRET.example', 'x', 1)"))
        conn.commit()
        for n, (statement, params) in enumerate(failing):
            with pytest.raises(sa.exc.DBAPIError), obs.span(f"request {n}"):
                conn.execute(sa.text(statement), params)
            conn.rollback()
    assert "SECRET" not in repr(obs_capture.records)
    unique, not_null, invalid = (obs_capture.span(f"request {n}") for n in range(3))
    assert unique["error_message"] == (
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint ?\n"
        "DETAIL:  Key (email)=(?) already exists.\n"
        "[SQL: INSERT INTO users VALUES (?, ?, ?)]\n"
        "[parameters: [REDACTED]]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    assert "DETAIL:  Failing row contains (?).\n" in not_null["error_message"]
    assert invalid["error_message"].startswith(
        "(psycopg.errors.InvalidTextRepresentation) invalid input syntax for type integer: ?\n"
        "[SQL: SELECT * FROM users WHERE email = ? AND n = ?]\n"
    )


async def test_asyncpg_errors_export_no_value_on_any_span_they_cross(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(create_async_engine, with_driver(pg_url, "asyncpg"))
    async with engine.connect() as conn:
        await conn.execute(sa.text("CREATE TEMPORARY TABLE users (email text UNIQUE)"))
        await conn.execute(sa.text("INSERT INTO users VALUES ('ann@SECRET.example')"))
        with pytest.raises(sa.exc.IntegrityError), obs.span("request"):
            insert = sa.text("INSERT INTO users VALUES (:e)")
            await conn.execute(insert, {"e": "ann@SECRET.example"})
    await engine.dispose()
    assert "SECRET" not in repr(obs_capture.records)
    assert "[parameters: [REDACTED]]" in obs_capture.span("request")["error_message"]


async def test_asyncpg_engine_yields_exactly_one_span_per_statement(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(create_async_engine, with_driver(pg_url, "asyncpg"))
    obs.instrument_sqlalchemy(engine, engine.sync_engine)  # again, both ways: still one
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))  # the first connect also runs dialect setup
        with obs.span("job"):
            for n in range(3):
                await conn.execute(sa.text("SELECT CAST(:n AS integer)"), {"n": n})
    await engine.dispose()
    queries = [s for s in obs_capture.spans if s["name"] == "db.query"]
    assert [(s["db.statement"], s["db.driver"]) for s in queries] == [
        ("SELECT CAST(? AS integer)", "asyncpg")
    ] * 3


def test_pool_of_two_overflow_and_wait(live: Capture, engines: Engines, pg_url: str) -> None:
    engine = engines(
        sa.create_engine,
        with_driver(pg_url, "psycopg"),
        pool_size=2,
        max_overflow=1,
        pool_timeout=10,
        pool_logging_name="pg-small",
    )
    check_overflow_and_wait(live, engine, "pg-small")


def test_checkout_timeout_is_counted(live: Capture, engines: Engines, pg_url: str) -> None:
    engine = engines(
        sa.create_engine,
        with_driver(pg_url, "psycopg"),
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.1,
        pool_logging_name="pg-tiny",
    )
    check_timeout(live, engine, "pg-tiny")


def test_nullpool_connections_are_counted(live: Capture, engines: Engines, pg_url: str) -> None:
    engine = engines(
        sa.create_engine,
        with_driver(pg_url, "psycopg"),
        poolclass=NullPool,
        pool_logging_name="pg-null",
    )
    check_nullpool(live, engine, "pg-null")


def test_sqlcommenter_reaches_the_server(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    # prepare_threshold=None: psycopg never prepares, so a per-query comment costs no cache.
    engine = engines(
        sa.create_engine,
        with_driver(pg_url, "psycopg"),
        connect_args={"prepare_threshold": None},
    )
    obs.instrument_sqlalchemy(engine, commenter=True)
    with obs.span("request"), engine.connect() as conn:
        seen = conn.execute(ACTIVITY).scalar_one()
    span = obs_capture.spans[-2]  # then the request span
    assert seen == (
        "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        f" /*traceparent='00-{span['trace_id']}-{span['span_id']}-01'*/"
    )
    assert span["db.statement"] == "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()"


def test_sqlcommenter_skips_prepared_statements(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(sa.create_engine, with_driver(pg_url, "psycopg"))  # auto-prepares
    obs.instrument_sqlalchemy(engine, commenter=True)
    with obs.span("request"), engine.connect() as conn:
        assert "traceparent" not in conn.execute(ACTIVITY).scalar_one()


async def test_sqlcommenter_skips_asyncpg(
    obs_capture: Capture, engines: Engines, pg_url: str
) -> None:
    engine = engines(create_async_engine, with_driver(pg_url, "asyncpg"))
    obs.instrument_sqlalchemy(engine, commenter=True)
    with obs.span("job"):
        async with engine.connect() as conn:
            seen = (await conn.execute(ACTIVITY)).scalar_one()
    await engine.dispose()
    assert "traceparent" not in seen
