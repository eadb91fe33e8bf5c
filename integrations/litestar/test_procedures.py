"""Litestar, for real: an app with two routers and pydantic models served through Litestar's test
client and under uvicorn; per-procedure spans and metrics, invalid_input for a bad body, and
instrument_all() in every import order (each in a fresh interpreter).

Verified with litestar 2.25, pydantic 2, uvicorn 0.54.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.testing import AsyncTestClient
from pydantic import BaseModel, Field

import obs_middleware as obs
from obs_middleware.middleware import litestar as obs_litestar
from obs_middleware.middleware.litestar import ObsPlugin
from obs_middleware.testing import Capture


class Size(BaseModel):
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class ImageRequest(BaseModel):
    prompt: str
    size: Size


class Image(BaseModel):
    id: int
    url: str


class UserOut(BaseModel):
    id: int
    tier: str


async def current_tier() -> str:
    await asyncio.sleep(0)
    return "pro"


@post("/", operation_id="images.create")
async def create_image(data: JSONBody[ImageRequest]) -> Image:
    with obs.span("render", width=data.size.width):
        pass
    return Image(id=1, url="https://cdn.example.com/1.png")


@get("/{image_id:int}")
async def get_image(image_id: FromPath[int]) -> Image:
    return Image(id=image_id, url=f"https://cdn.example.com/{image_id}.png")


@get("/{user_id:int}", dependencies={"tier": Provide(current_tier)})
async def get_user(user_id: FromPath[int], tier: NamedDependency[str]) -> UserOut:
    return UserOut(id=user_id, tier=tier)


def make_app(plugins: list[Any] | None = None) -> Litestar:
    images = Router(path="/images", route_handlers=[create_image, get_image])
    users = Router(path="/users", route_handlers=[get_user])
    return Litestar(
        route_handlers=[Router(path="/api", route_handlers=[images, users])],
        plugins=[ObsPlugin()] if plugins is None else plugins,
        logging_config=None,
    )


@pytest.fixture(autouse=True)
def unhook() -> Iterator[None]:
    yield
    obs_litestar.unpatch()


async def test_two_routers_with_pydantic_models(obs_capture: Capture) -> None:
    async with AsyncTestClient(make_app()) as client:
        ok = await client.post(
            "/api/images", json={"prompt": "cat", "size": {"width": 512, "height": 512}}
        )
        bad = await client.post(
            "/api/images",
            json={"prompt": "private prompt", "size": {"width": -1, "height": "tall"}},
        )
        got = await client.get("/api/images/9")
        user = await client.get("/api/users/4")
    assert [r.status_code for r in (ok, bad, got, user)] == [201, 400, 200, 200]

    spans = [s for s in obs_capture.spans if s.get("span.kind") == "server"]
    assert [
        (s["name"], s["status"], s["procedure.name"], s["procedure.router"]) for s in spans
    ] == [
        ("POST /api/images", "ok", "images.create", "/api/images"),
        ("POST /api/images", "invalid_input", "images.create", "/api/images"),
        ("GET /api/images/{image_id}", "ok", "get_image", "/api/images"),
        ("GET /api/users/{user_id}", "ok", "get_user", "/api/users"),
    ]
    created, rejected = spans[0], spans[1]
    assert (created["procedure.input"], created["procedure.output"]) == ("ImageRequest", "Image")
    assert obs_capture.span("render")["parent_id"] == created["span_id"]
    assert rejected["procedure.invalid_fields"] == ["size.width", "size.height"]
    assert rejected["http.status_code"] == 400
    assert "private prompt" not in json.dumps(rejected)
    assert "tall" not in json.dumps(rejected)

    metrics = obs_capture.metrics
    assert metrics["procedure.calls"].points == {
        ("images.create",): 2,
        ("get_image",): 1,
        ("get_user",): 1,
    }
    assert metrics["procedure.errors"].points == {("images.create", "invalid_input"): 1}
    duration = metrics["procedure.duration"].points[("get_user",)]
    assert duration.count == 1  # type: ignore[union-attr]


@get("/fail")
async def fail() -> None:
    raise RuntimeError("boom")


def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    return Response(f"custom failure: {type(exc).__name__}", status_code=500)


@pytest.mark.parametrize("handlers", [{}, {500: on_error}, {Exception: on_error}])
async def test_500_responses_carry_the_request_id_and_keep_their_body(
    obs_capture: Capture, handlers: dict[Any, Any]
) -> None:
    def app(plugins: list[Any]) -> Litestar:
        return Litestar([fail], plugins=plugins, exception_handlers=handlers, logging_config=None)

    async with AsyncTestClient(app([])) as client:
        plain = await client.get("/fail")
    async with AsyncTestClient(app([ObsPlugin()])) as client:
        traced = await client.get("/fail", headers={"X-Request-ID": "req-500"})
    assert (traced.status_code, traced.content) == (plain.status_code, plain.content)
    assert traced.status_code == 500
    assert traced.headers["x-request-id"] == "req-500"
    server = obs_capture.span("GET /fail")
    assert (server["status"], server["http.status_code"], server["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_under_uvicorn_requests_are_procedures_and_shutdown_flushes(obs_capture: Capture) -> None:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/users/8", timeout=5) as answer:
            assert json.load(answer) == {"id": 8, "tier": "pro"}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/nothing", timeout=5)
        assert missing.value.code == 404
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert [
        (s["name"], s["http.status_code"], s.get("procedure.name")) for s in obs_capture.spans
    ] == [
        ("GET /api/users/{user_id}", 200, "get_user"),
        ("GET", 404, None),
    ]


ORDERINGS = {
    "instrument, then import and build": """
        obs.instrument_all(only=["litestar"])
        import litestar
        app = build()
        expect(app, True)
    """,
    "import, instrument, build": """
        import litestar
        obs.instrument_all(only=["litestar"])
        expect(build(), True)
    """,
    "build before instrumenting is left alone": """
        import litestar
        app = build()
        obs.instrument_all(only=["litestar"])
        expect(app, False)
    """,
    "instrument twice, one plugin": """
        obs.instrument_all(only=["litestar"])
        obs.instrument_all(only=["litestar"])
        expect(build(), True)
    """,
    "uninstrument, then build": """
        obs.instrument_all(only=["litestar"])
        import litestar
        obs.uninstrument_all()
        expect(build(), False)
    """,
    "uninstrument, instrument again": """
        import litestar
        obs.instrument_all(only=["litestar"])
        obs.uninstrument_all()
        obs.instrument_all(only=["litestar"])
        expect(build(), True)
    """,
}

PRELUDE = """
import asyncio
import obs_middleware as obs
from obs_middleware.middleware import ObsMiddleware

def build():
    from litestar import Litestar, get

    @get("/ping", sync_to_thread=False)
    def ping() -> str:
        return "pong"

    return Litestar(route_handlers=[ping], logging_config=None)

def expect(app, instrumented):
    from obs_middleware.middleware.litestar import ObsPlugin
    plugins = [p for p in app.plugins if isinstance(p, ObsPlugin)]
    wrapped = isinstance(app.asgi_handler, ObsMiddleware)
    want = (1, True) if instrumented else (0, False)
    assert (len(plugins), wrapped) == want, (plugins, wrapped)
    print("ok")
"""


@pytest.mark.parametrize("ordering", list(ORDERINGS))
def test_instrument_all_in_every_import_order(ordering: str) -> None:
    code = PRELUDE + textwrap.dedent(ORDERINGS[ordering])
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
