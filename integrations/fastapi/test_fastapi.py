"""ObsMiddleware on real FastAPI apps through httpx.ASGITransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import obs_middleware as obs
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


def require_token(x_token: str = Header(default="")) -> str:
    if x_token != "ok":
        raise HTTPException(401, "bad token")
    return x_token


def make_app() -> FastAPI:
    app = FastAPI()
    v1 = APIRouter()

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict:
        with obs.span("db.query"):
            pass
        return {"id": item_id}

    @app.get("/sync/{name}")
    def sync_endpoint(name: str) -> dict:
        with obs.span("db.query.sync"):  # a def endpoint runs in the threadpool
            pass
        return {"name": name}

    @app.get("/fail")
    async def fail(authorization: str = Header(default="")) -> dict:
        raise RuntimeError(f"upstream refused {authorization}")

    @app.get("/private", dependencies=[Depends(require_token)])
    async def private() -> dict:
        return {}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i, chunk in enumerate((b"aaa", b"bb", b"c")):
                with obs.span("chunk", index=i):
                    pass
                yield chunk

        return StreamingResponse(chunks())

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi " + await websocket.receive_text())
        await websocket.close()

    @v1.get("/users/{user_id}/images/{image_id}")
    async def get_image(user_id: str, image_id: str) -> dict:
        return {"user": user_id, "image": image_id}

    app.include_router(v1, prefix="/v1")
    app.add_middleware(obs.ObsMiddleware)
    return app


def client(app: FastAPI, **kw: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, **kw)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def by_name(cap: Capture) -> dict[str, dict]:
    return {r["name"]: r for r in cap.spans}


async def test_api_route_template_names_the_span(obs_capture: Capture) -> None:
    app = make_app()
    assert any(isinstance(r, APIRoute) and r.path == "/items/{item_id}" for r in app.routes)
    async with client(app) as c:
        assert (await c.get("/items/42")).json() == {"id": 42}
    spans = by_name(obs_capture)
    server = spans["GET /items/{item_id}"]
    assert (server["http.route"], server["url.path"], server["http.status_code"]) == (
        "/items/{item_id}",
        "/items/42",
        200,
    )
    assert spans["db.query"]["parent_id"] == server["span_id"]
    assert server["http.endpoint"] == "get_item"


async def test_router_included_with_prefix_keeps_the_prefix(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/v1/users/u1/images/i9")).status_code == 200
    server = obs_capture.span("GET /v1/users/{user_id}/images/{image_id}")
    assert server["url.path"] == "/v1/users/u1/images/i9"


async def test_validation_error_keeps_the_route_template(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/items/not-a-number")).status_code == 422
    record = obs_capture.span("GET /items/{item_id}")
    assert (record["http.status_code"], record["status"]) == (422, "ok")


async def test_unmatched_path_is_named_by_method_only(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/nowhere")).status_code == 404
    assert obs_capture.span("GET")["url.path"] == "/nowhere"


async def test_dependency_http_exception_is_a_4xx_not_an_error(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/private")).status_code == 401
        assert (await c.get("/private", headers={"X-Token": "ok"})).status_code == 200
    first, second = obs_capture.spans
    assert (first["name"], first["http.status_code"], first["error_type"]) == (
        "GET /private",
        401,
        None,
    )
    assert second["http.status_code"] == 200


async def test_sync_endpoint_in_threadpool_nests_under_server_span(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.get("/sync/a")
    spans = by_name(obs_capture)
    assert spans["db.query.sync"]["parent_id"] == spans["GET /sync/{name}"]["span_id"]


async def test_exception_is_recorded_500_reraised_and_scrubbed(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        with pytest.raises(RuntimeError, match="upstream refused"):
            await c.get("/fail", headers={"Authorization": SECRETS["authorization"]})
    record = obs_capture.span("GET /fail")
    assert (record["status"], record["http.status_code"], record["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
    assert record["error_message"] == "upstream refused [REDACTED]"


async def test_streaming_response_counts_all_chunks_and_ends_after_last_chunk(
    obs_capture: Capture,
) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/stream")).content == b"aaabbc"
    server = obs_capture.span("GET /stream")
    chunks = [r for r in obs_capture.spans if r["name"] == "chunk"]
    assert server["http.response_size"] == 6
    assert len(chunks) == 3 and all(c["parent_id"] == server["span_id"] for c in chunks)
    last = chunks[-1]

    def end_ms(record: dict) -> float:
        return float(record["start"][-8:-1]) * 1000 + record["duration_ms"]

    assert end_ms(server) > end_ms(last)


async def test_excluded_health_path_produces_no_span(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        assert (await c.get("/health")).status_code == 200
    assert obs_capture.records == []


async def test_x_request_id_echoed_or_generated(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        echoed = await c.get("/items/1", headers={"X-Request-ID": "abc.123"})
        generated = await c.get("/items/1", headers={"X-Request-ID": "x" * 500})
    assert echoed.headers["x-request-id"] == "abc.123"
    servers = [r for r in obs_capture.spans if r["name"] == "GET /items/{item_id}"]
    assert generated.headers["x-request-id"] == servers[1]["trace_id"]


async def test_incoming_traceparent_continues_the_trace(obs_capture: Capture) -> None:
    async with client(make_app()) as c:
        await c.get("/items/1", headers={"traceparent": TRACEPARENT})
    spans = by_name(obs_capture)
    assert spans["GET /items/{item_id}"]["parent_id"] == "00f067aa0ba902b7"
    assert {s["trace_id"] for s in spans.values()} == {"4bf92f3577b34da6a3ce929d0e0e4736"}


async def test_ratio_zero_exports_nothing_but_counts_every_request() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        async with client(make_app()) as c:
            for i in range(3):
                await c.get(f"/items/{i}")
            await c.get("/v1/users/a/images/b")
        assert cap.records == []
        assert cap.metrics["http.server.requests"].points == {
            ("GET", "/items/{item_id}", "2xx"): 3,
            ("GET", "/v1/users/{user_id}/images/{image_id}", "2xx"): 1,
        }


def test_websocket_passes_through_and_produces_no_span(obs_capture: Capture) -> None:
    with TestClient(make_app()) as tc, tc.websocket_connect("/ws") as ws:
        ws.send_text("there")
        assert ws.receive_text() == "hi there"
    assert obs_capture.records == []


async def test_no_ip_cookie_or_authorization_value_in_exported_jsonl(
    jsonl_config: Callable[..., Path],
) -> None:
    path = jsonl_config(
        http=HttpOptions(
            capture_headers=("Authorization", "Cookie", "X-Api-Key", "X-Forwarded-For")
        )
    )
    async with client(make_app(), client=(CLIENT_IP, 40000), raise_app_exceptions=False) as c:
        for url in ("/items/1", "/fail", "/private", "/v1/users/a/images/b?token=t0k3n"):
            await c.get(url, headers=SECRETS)
    assert obs.flush(5)
    text = path.read_text()
    assert len(text.splitlines()) >= 4
    assert all(json.loads(line)["type"] in ("span", "event") for line in text.splitlines())
    for secret in (*SECRETS.values(), "SECRET", CLIENT_IP, "198.51.100", "t0k3n"):
        assert secret not in text


# -- 500 responses built by Starlette's error handling (ServerErrorMiddleware) --------------------


async def on_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": f"custom failure: {type(exc).__name__}"}, status_code=500)


def failing_app(handlers: dict, *, obs_middleware: bool = True) -> FastAPI:
    app = FastAPI(exception_handlers=handlers)

    @app.get("/fail")
    async def fail() -> dict:
        raise RuntimeError("boom")

    if obs_middleware:
        app.add_middleware(obs.ObsMiddleware)
    return app


@pytest.fixture
def placed() -> Iterator[None]:
    """What ``obs.instrument_all()`` does for FastAPI (its Starlette integration)."""
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
        traced = await c.get("/fail")
    assert (traced.status_code, traced.content) == (plain.status_code, plain.content)
    server = obs_capture.span("GET /fail")
    assert traced.headers["x-request-id"] == server["trace_id"]
    assert (server["status"], server["http.status_code"], server["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
