"""Excluded paths on a real Starlette app with a real SQLAlchemy engine (SQLite): the request and
everything it starts stay unexported, counted; other requests are traced as ever."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import obs_middleware as obs
from obs_middleware._core.config import from_env
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.testing import Capture, capture


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    made = sa.create_engine("sqlite://")
    obs.instrument_sqlalchemy(made)
    yield made
    obs.uninstrument_sqlalchemy(made)
    made.dispose()


def make_app(engine: sa.Engine, calls: list[str]) -> Starlette:
    def probe(request: Request) -> PlainTextResponse:
        calls.append(request.url.path)
        with obs.span("probe.check"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if request.query_params.get("fail"):
            raise RuntimeError("database down")
        return PlainTextResponse("ok")

    routes = [Route(path, probe) for path in ("/health", "/chat", "/items")]
    return Starlette(routes=routes)


def dropped(cap: Capture) -> int:
    points = cap.metrics["obs.dropped"].points
    return int(points.get(("excluded_path",), 0))


def test_an_excluded_request_exports_neither_its_span_nor_its_children(
    obs_capture: Capture, engine: sa.Engine
) -> None:
    calls: list[str] = []
    client = TestClient(ObsMiddleware(make_app(engine, calls)))
    assert client.get("/health").text == "ok"
    assert obs_capture.spans == []  # no orphan "probe.check" or "db.query" root traces
    assert dropped(obs_capture) == 2
    assert obs.current_span() is None
    assert client.get("/items").text == "ok"
    assert [(s["name"], s["parent_id"] is None) for s in obs_capture.spans] == [
        ("db.query", False),
        ("probe.check", False),
        ("GET /items", True),
    ]
    assert dropped(obs_capture) == 2


def test_a_failing_excluded_request_runs_once_and_exports_nothing(
    obs_capture: Capture, engine: sa.Engine
) -> None:
    calls: list[str] = []
    client = TestClient(ObsMiddleware(make_app(engine, calls)), raise_server_exceptions=False)
    assert client.get("/health?fail=1").status_code == 500
    assert calls == ["/health"]  # not called again by our error path
    assert obs_capture.spans == []  # an error does not keep a trace that is not exported at all
    assert dropped(obs_capture) == 2


def test_obs_exclude_paths_adds_to_the_health_checks(engine: sa.Engine) -> None:
    http = from_env({"OBS_EXCLUDE_PATHS": "/chat"}).http
    calls: list[str] = []
    with capture(http=http) as cap:
        client = TestClient(ObsMiddleware(make_app(engine, calls)))
        for path in ("/health", "/chat", "/items"):
            assert client.get(path).text == "ok"
        assert [s["name"] for s in cap.spans if s["parent_id"] is None] == ["GET /items"]
        assert dropped(cap) == 4
