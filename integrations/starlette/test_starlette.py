"""ObsMiddleware on real Starlette apps through httpx.ASGITransport and Starlette's TestClient."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import span as _span
from obs_middleware._core.config import HttpOptions, SamplingOptions
from obs_middleware.middleware import starlette as obs_starlette
from obs_middleware.testing import Capture, capture

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SECRETS = {
    "authorization": "Bearer sk-live-0123456789abcdefSECRET",
    "cookie": "session=cookie-SECRET-42",
    "x-api-key": "apikey-SECRET-77",
    "x-forwarded-for": "198.51.100.23",
}
CLIENT_IP = "203.0.113.9"


async def get_item(request: Request) -> JSONResponse:
    with obs.span("db.query", **{"db.table": "items"}):
        pass
    return JSONResponse({"id": request.path_params["item_id"]})


def sync_item(request: Request) -> PlainTextResponse:
    with obs.span("db.query.sync"):  # runs in Starlette's threadpool with a copied context
        pass
    return PlainTextResponse("sync")


async def fail(request: Request) -> Response:
    raise RuntimeError(f"upstream refused {request.headers.get('authorization', '')}")


async def forbidden(request: Request) -> Response:
    raise HTTPException(403, "no")


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i, chunk in enumerate((b"aaa", b"bb", b"c")):
            with obs.span("chunk", index=i):
                pass
            yield chunk

    return StreamingResponse(chunks(), media_type="text/plain")


async def with_background(request: Request) -> Response:
    def cleanup() -> None:
        for _ in range(20):
            _span.clock_ns()

    return PlainTextResponse("done", background=BackgroundTask(cleanup))


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def echo_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello " + (await websocket.receive_text()))
    await websocket.close()


def make_app(**options: object) -> Starlette:
    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", get_item),  # converters are dropped from templates
            Route("/sync/{name}", sync_item),
            Route("/fail", fail),
            Route("/forbidden", forbidden),
            Route("/stream", stream),
            Route("/background", with_background),
            Route("/health", health),
            WebSocketRoute("/ws", echo_ws),
            Mount("/api", routes=[Route("/items/{item_id}", get_item)]),
        ]
    )
    app.add_middleware(obs.ObsMiddleware, **options)
    return app


def client(app: Starlette, **kw: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, **kw)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def by_name(cap: Capture) -> dict[str, dict]:
    return {r["name"]: r for r in cap.spans}


async def test_route_template_names_the_span_and_raw_path_is_only_url_path(
    obs_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        response = await c.get("/items/42?q=secret-query")
    assert response.json() == {"id": 42}
    spans = by_name(obs_capture)
    server = spans["GET /items/{item_id}"]
    assert server["http.route"] == "/items/{item_id}"
    assert server["url.path"] == "/items/42"
    assert "secret-query" not in json.dumps(obs_capture.records)
    assert spans["db.query"]["parent_id"] == server["span_id"]
    assert server == {
        "type": "span",
        "name": "GET /items/{item_id}",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000001",
        "parent_id": None,
        "service": "app",
        "environment": "development",
        "start": "2026-01-01T00:00:00.001000Z",
        "duration_ms": 3.0,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": None,
        "tier": None,
        "request_id": "00000000000000000000000000000001",
        "host.name": "test-host",
        "service.instance.id": "0000000000000000",
        "span.kind": "server",
        "url.path": "/items/42",
        "http.method": "GET",
        "http.route": "/items/{item_id}",
        "http.status_code": 200,
        "http.request_size": None,
        "http.response_size": 9,
        "http.endpoint": "get_item",
    }


async def test_unmatched_path_is_named_by_method_only(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/nowhere/1")).status_code == 404
    record = obs_capture.span("GET")
    assert (record["http.route"], record["url.path"], record["http.status_code"]) == (
        None,
        "/nowhere/1",
        404,
    )


async def test_method_not_allowed_keeps_the_route_template(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.post("/items/1")).status_code == 405
    assert obs_capture.span("POST /items/{item_id}")["http.status_code"] == 405


async def test_mounted_route_template_includes_the_mount_prefix(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/api/items/7")).status_code == 200
        assert (await c.get("/api/nothing")).status_code == 404
    server = obs_capture.span("GET /api/items/{item_id}")
    assert (server["http.route"], server["url.path"]) == ("/api/items/{item_id}", "/api/items/7")
    assert obs_capture.spans[-1]["name"] == "GET"  # nothing matched inside the mount


async def test_sync_endpoint_in_threadpool_nests_under_server_span(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/sync/x")).text == "sync"
    spans = by_name(obs_capture)
    assert spans["db.query.sync"]["parent_id"] == spans["GET /sync/{name}"]["span_id"]
    assert spans["db.query.sync"]["trace_id"] == spans["GET /sync/{name}"]["trace_id"]


async def test_exception_is_recorded_500_reraised_and_scrubbed(obs_capture: Capture) -> None:
    app = make_app()
    async with client(app) as c:
        with pytest.raises(RuntimeError, match="upstream refused"):
            await c.get("/fail", headers={"Authorization": SECRETS["authorization"]})
    async with client(app, raise_app_exceptions=False) as c:
        assert (await c.get("/fail")).status_code == 500
    first, second = obs_capture.spans
    assert first["name"] == "GET /fail"
    assert (first["status"], first["http.status_code"], first["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
    assert first["error_message"] == "upstream refused [REDACTED]"
    assert second["http.status_code"] == 500
    assert obs_capture.metrics["http.server.requests"].points == {("GET", "/fail", "5xx"): 2}


async def test_http_exception_is_a_4xx_not_an_error(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/forbidden")).status_code == 403
    record = obs_capture.span("GET /forbidden")
    assert (record["status"], record["error_type"], record["http.status_code"]) == ("ok", None, 403)


async def test_streaming_response_counts_all_chunks_and_span_ends_after_last_chunk(
    obs_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        response = await c.get("/stream")
    assert response.text == "aaabbc"
    server = obs_capture.span("GET /stream")
    assert server["http.response_size"] == 6
    chunks = [r for r in obs_capture.spans if r["name"] == "chunk"]
    assert [c["index"] for c in chunks] == [0, 1, 2]
    assert all(c["parent_id"] == server["span_id"] for c in chunks)

    def end_ms(record: dict) -> float:
        return float(record["start"][-8:-1]) * 1000 + record["duration_ms"]

    assert end_ms(server) > end_ms(chunks[-1])


async def test_background_task_after_the_response_is_not_timed(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/background")).text == "done"
    assert obs_capture.span("GET /background")["duration_ms"] == 1.0


async def test_excluded_health_path_produces_no_span(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        response = await c.get("/health")
    assert response.text == "ok"
    assert "x-request-id" not in response.headers
    assert obs_capture.records == []
    assert obs_capture.metrics["http.server.requests"].points == {}


async def test_x_request_id_echoed_when_valid_generated_when_absent_or_invalid(
    obs_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        echoed = await c.get("/items/1", headers={"X-Request-ID": "req-123"})
        generated = await c.get("/items/1")
        replaced = await c.get("/items/1", headers={"X-Request-ID": "no spaces allowed"})
    assert echoed.headers["x-request-id"] == "req-123"
    servers = [r for r in obs_capture.spans if r["name"].startswith("GET")]
    assert generated.headers["x-request-id"] == servers[1]["trace_id"]
    assert replaced.headers["x-request-id"] == servers[2]["trace_id"]
    assert [s["request_id"] for s in servers] == [
        "req-123",
        servers[1]["trace_id"],
        servers[2]["trace_id"],
    ]


async def test_incoming_traceparent_continues_the_trace(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.get("/items/1", headers={"traceparent": TRACEPARENT})
    spans = by_name(obs_capture)
    server = spans["GET /items/{item_id}"]
    assert (server["trace_id"], server["parent_id"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert spans["db.query"]["trace_id"] == server["trace_id"]


async def test_incoming_unsampled_flag_is_honoured_and_metrics_still_count(
    obs_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        await c.get("/items/1", headers={"traceparent": TRACEPARENT[:-2] + "00"})
    assert obs_capture.records == []
    assert obs_capture.metrics["http.server.requests"].points == {
        ("GET", "/items/{item_id}", "2xx"): 1
    }


async def test_ratio_zero_exports_nothing_but_counts_every_request() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        async with client(make_app()) as c:
            for i in range(5):
                await c.get(f"/items/{i}")
            await c.get("/nowhere")
        assert cap.records == []
        assert cap.metrics["http.server.requests"].points == {
            ("GET", "/items/{item_id}", "2xx"): 5,
            ("GET", "", "4xx"): 1,
        }


async def test_ratio_zero_keeps_failed_request_traces() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        async with client(make_app(), raise_app_exceptions=False) as c:
            await c.get("/items/1")
            await c.get("/fail")
        assert cap.names == ["GET /fail"]


def test_websocket_passes_through_and_produces_no_span(obs_capture: Capture) -> None:
    with TestClient(make_app()) as tc, tc.websocket_connect("/ws") as ws:
        ws.send_text("there")
        assert ws.receive_text() == "hello there"
    assert obs_capture.records == []


def test_lifespan_passes_through_and_flushes_on_shutdown(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    flushes: list[bool] = []
    real_stopping = _setup.server_stopping
    monkeypatch.setattr(_setup, "server_stopping", lambda: flushes.append(real_stopping()))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict]:
        events.append("startup")
        yield {"ready": True}
        events.append("shutdown")

    async def state(request: Request) -> Response:
        return PlainTextResponse(str(request.state.ready))

    app = Starlette(routes=[Route("/state", state)], lifespan=lifespan)
    app.add_middleware(obs.ObsMiddleware)
    with TestClient(app) as tc:
        assert tc.get("/state").text == "True"
    assert events == ["startup", "shutdown"]
    assert flushes == [True]  # flushed, within the shutdown deadline
    assert obs_capture.names == ["GET /state"]


async def test_no_ip_cookie_or_authorization_value_in_exported_jsonl(
    jsonl_config: Callable[..., Path],
) -> None:
    path = jsonl_config(
        http=HttpOptions(
            capture_headers=(
                "Authorization",
                "Cookie",
                "X-Api-Key",
                "X-Forwarded-For",
                "User-Agent",
            )
        )
    )
    async with client(make_app(), client=(CLIENT_IP, 40000), raise_app_exceptions=False) as c:
        headers = {**SECRETS, "User-Agent": "probe/1"}
        for url in ("/items/1", "/fail", "/nowhere", "/stream", "/sync/a?token=abc"):
            await c.get(url, headers=headers)
    assert obs.flush(5)
    text = path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len([r for r in records if r.get("span.kind") == "server"]) == 5
    assert all(
        r.get("http.request.header.user-agent") == "probe/1" for r in records if r.get("span.kind")
    )
    for secret in (
        *SECRETS.values(),
        "sk-live",
        "cookie-SECRET",
        "SECRET",
        CLIENT_IP,
        "198.51.100",
    ):
        assert secret not in text


async def test_http_metrics_by_method_route_and_status_class(obs_capture: Capture) -> None:
    async with client(make_app(), raise_app_exceptions=False) as c:
        await c.get("/items/1")
        await c.get("/items/2")
        await c.post("/items/2")
        await c.get("/forbidden")
        await c.get("/fail")
    points = obs_capture.metrics["http.server.requests"].points
    assert points == {
        ("GET", "/items/{item_id}", "2xx"): 2,
        ("POST", "/items/{item_id}", "4xx"): 1,
        ("GET", "/forbidden", "4xx"): 1,
        ("GET", "/fail", "5xx"): 1,
    }
    assert set(obs_capture.metrics["http.server.active"].points.values()) == {0.0}


# -- 500 responses built by Starlette's error handling (ServerErrorMiddleware) --------------------


async def on_error(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(f"custom failure: {type(exc).__name__}", status_code=500)


def failing_app(handlers: dict, *, obs_middleware: bool = True) -> Starlette:
    class Tag:  # a user middleware of its own, added before and after ours
        def __init__(self, app: Any, name: str) -> None:
            self.app, self.name = app, name

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("tags", []).append(self.name)
            await self.app(scope, receive, send)

    app = Starlette(routes=[Route("/fail", fail)], exception_handlers=handlers)
    app.add_middleware(Tag, name="inner")
    if obs_middleware:
        app.add_middleware(obs.ObsMiddleware)
    app.add_middleware(Tag, name="outer")
    return app


@pytest.fixture
def placed() -> Iterator[None]:
    """What ``obs.instrument_all()`` does for Starlette."""
    obs_starlette.patch()
    yield
    obs_starlette.unpatch()


@pytest.mark.parametrize(
    "handlers", [{}, {500: on_error}, {Exception: on_error}], ids=["default", "500", "Exception"]
)
async def test_500_built_by_starlette_error_handling_carries_the_request_id(
    obs_capture: Capture, placed: None, handlers: dict
) -> None:
    async with client(failing_app(handlers, obs_middleware=False), raise_app_exceptions=False) as c:
        plain = await c.get("/fail")
    async with client(failing_app(handlers), raise_app_exceptions=False) as c:
        traced = await c.get("/fail", headers={"X-Request-ID": "req-500"})
    assert (traced.status_code, traced.text) == (plain.status_code, plain.text)  # untouched
    assert traced.headers["x-request-id"] == "req-500"
    server = obs_capture.span("GET /fail")
    assert (server["status"], server["http.status_code"], server["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
    assert server["request_id"] == "req-500"


async def test_other_user_middleware_keep_their_order_and_see_the_request_span(
    obs_capture: Capture, placed: None
) -> None:
    seen: list[Any] = []

    async def tags(request: Request) -> Response:
        seen.append((request.scope["tags"], obs.current_span()))
        return PlainTextResponse("ok")

    app = failing_app({})
    app.router.routes.append(Route("/tags", tags))
    async with client(app) as c:
        assert (await c.get("/tags")).headers["x-request-id"]
    ((order, span),) = seen
    assert order == ["outer", "inner"]
    assert span is not None and span.kind == "server"


def test_an_app_without_the_middleware_keeps_starlette_s_stack(placed: None) -> None:
    app = failing_app({}, obs_middleware=False)
    with TestClient(app) as c:
        c.get("/tags")
    assert type(app.middleware_stack) is ServerErrorMiddleware


def test_instrument_all_places_the_middleware_outside_starlette_s_error_handling(
    obs_capture: Capture,
) -> None:
    try:
        report = obs.instrument_all(only=["starlette"])
        assert report.patched == ["starlette"]
        app = failing_app({})
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.get("/fail").headers["x-request-id"]
        assert type(app.middleware_stack) is obs.ObsMiddleware
    finally:
        obs.uninstrument_all()
