"""Application logs in ClickHouse: a ``logging.warning`` inside a real Starlette request lands as
a row of the shipped table with the request's trace id; level, logger and message queryable
from ``attributes`` (``visitParamExtractString`` runs on 18.16 and later; the shipped pipes,
which read spans only, are unchanged)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware._core.config import SamplingOptions
from obs_middleware.exporters.clickhouse import ClickHouseExporter, ddl, pipe_queries

from .conftest import exporting_to

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"


@pytest.fixture
def table(clickhouse_url: str) -> Iterator[str]:
    name = f"obs_logs_{secrets.token_hex(4)}"
    exporter = ClickHouseExporter(clickhouse_url, table=name)
    exporter.query(ddl(name))
    yield name
    exporter.query(f"DROP TABLE IF EXISTS {name}")


async def render(request: Request) -> PlainTextResponse:
    logging.getLogger("app.render").warning(
        "provider slow, retrying with Authorization: Bearer abcdefgh12345678"
    )
    try:
        raise TimeoutError("upstream timed out")
    except TimeoutError:
        logging.getLogger("app.render").exception("giving up")
    return PlainTextResponse("ok")


async def get(path: str, headers: dict[str, str] | None = None) -> None:
    application = Starlette(routes=[Route("/render", render)])
    application.add_middleware(obs.ObsMiddleware)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get(path, headers=headers)).status_code == 200


def rows(exporter: ClickHouseExporter, sql: str) -> list[dict[str, str]]:
    body = exporter.query(sql + " FORMAT JSONEachRow").decode()
    return [orjson.loads(line) for line in body.splitlines() if line]


LOG_ROWS = """
SELECT trace_id, span_id,
       visitParamExtractString(attributes, 'log.level') AS level,
       visitParamExtractString(attributes, 'log.logger') AS logger,
       visitParamExtractString(attributes, 'log.message') AS message,
       visitParamExtractString(attributes, 'exception.type') AS exception_type,
       exception_stacktrace != '' AS has_stack
FROM {table} WHERE type = 'event' AND name = 'log' ORDER BY start
"""


async def test_a_warning_in_a_request_lands_with_its_trace_id(
    clickhouse_url: str, table: str
) -> None:
    exporter = ClickHouseExporter(clickhouse_url, table=table)
    root = logging.getLogger()
    with exporting_to(exporter, logs="warning", sampling=SamplingOptions(traces_per_s=0)):
        await get("/render")
        assert obs.flush(10)
    assert not any(isinstance(h, obs.LogHandler) for h in root.handlers)
    (server,) = rows(exporter, f"SELECT trace_id, span_id FROM {table} WHERE type = 'span'")
    warning, error = rows(exporter, LOG_ROWS.format(table=table))
    assert warning == {
        **server,
        "level": "WARNING",
        "logger": "app.render",
        "message": "provider slow, retrying with [REDACTED]",
        "exception_type": "",
        "has_stack": 0,
    }
    assert error == {
        **server,
        "level": "ERROR",
        "logger": "app.render",
        "message": "giving up",
        "exception_type": "TimeoutError",
        "has_stack": 1,
    }
    # The shipped pipes still run beside log rows (a server error raises), counting spans only.
    results = {n: rows(exporter, q.replace("obs_events", table)) for n, q in pipe_queries().items()}
    (volume,) = results["request_volume"]
    assert (volume["requests"], volume["errors"]) == ("1", "0")


async def test_an_unsampled_requests_logs_land_without_its_spans(
    clickhouse_url: str, table: str
) -> None:
    exporter = ClickHouseExporter(clickhouse_url, table=table)
    with exporting_to(exporter, logs="warning"):
        await get("/render", headers={"traceparent": UNSAMPLED})
        assert obs.flush(10)
    assert rows(exporter, f"SELECT name, trace_id FROM {table} ORDER BY start") == [
        {"name": "log", "trace_id": TRACE_ID},
        {"name": "log", "trace_id": TRACE_ID},
    ]
