"""Route templates: Starlette and FastAPI routes, included routers and mounted sub-apps, named by
their full template after routing (never the raw path), with the endpoint name recorded."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route, Router

from obs_middleware.middleware import ObsMiddleware, _routes
from obs_middleware.middleware._routes import route_template
from obs_middleware.testing import Capture

Message = dict[str, Any]


def scope_for(path: str, method: str = "GET", host: str = "testserver") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def routed(app: Any, path: str, method: str = "GET", host: str = "testserver") -> Any:
    """Run ``app`` and return (status, template, attrs) as the middleware would see them."""
    scope = scope_for(path, method, host)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    attrs: dict[str, Any] = {}
    return sent[0]["status"], route_template(scope, attrs), attrs.get("http.endpoint")


def get_image(request: Request) -> PlainTextResponse:
    return PlainTextResponse("image")


async def opaque(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw"})


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id:int}", get_image),
            Mount("/v1", routes=[Route("/images/{id}", get_image)]),
            Mount("/v2", app=Starlette(routes=[Route("/images/{id}", get_image)])),
            Mount("/t/{tenant}", routes=[Mount("/images", routes=[Route("/{id}", get_image)])]),
            Mount("/static", app=opaque),
            Host(
                "api.{domain}.com",
                app=Router(routes=[Mount("/h", routes=[Route("/{id}", get_image)])]),
            ),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/items/1", (200, "/items/{item_id}", "get_image")),
        ("GET", "/v1/images/2", (200, "/v1/images/{id}", "get_image")),
        ("GET", "/v2/images/3", (200, "/v2/images/{id}", "get_image")),
        ("GET", "/t/acme/images/4", (200, "/t/{tenant}/images/{id}", "get_image")),
        ("GET", "/static/css/site.css", (200, "/static/{path}", None)),
        ("POST", "/items/1", (405, "/items/{item_id}", "get_image")),
        ("GET", "/nope", (404, None, None)),
        ("GET", "/v1/nope", (404, None, None)),
        ("GET", "/v2/nope", (404, None, None)),
    ],
)
async def test_starlette_routes_and_mounts_are_named_by_full_template(
    method: str, path: str, expected: tuple[int, str | None, str | None]
) -> None:
    assert await routed(starlette_app(), path, method) == expected


async def test_mount_under_a_host_route_is_resolved() -> None:
    result = await routed(starlette_app(), "/h/5", host="api.example.com")
    assert result == (200, "/h/{id}", "get_image")


def fastapi_app() -> FastAPI:
    deep = APIRouter(prefix="/deep")

    @deep.get("/{id}")
    def deep_item(id: int) -> int:
        return id

    items = APIRouter(prefix="/items")

    @items.get("/{id}")
    def get_item(id: int) -> int:
        return id

    items.include_router(deep, prefix="/nested")
    sub = FastAPI()
    sub.include_router(items, prefix="/v2")

    @sub.get("/images/{id}")
    def image(id: int) -> int:
        return id

    app = FastAPI()

    @app.get("/direct/{id}")
    def direct(id: int) -> int:
        return id

    app.include_router(items, prefix="/v1")
    app.mount("/sub/{tenant}", sub)
    app.mount("/static", opaque)
    app.add_route("/plain/{x}", get_image)
    return app


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/direct/1", (200, "/direct/{id}", "direct")),
        ("GET", "/v1/items/3", (200, "/v1/items/{id}", "get_item")),
        ("GET", "/v1/items/nested/deep/4", (200, "/v1/items/nested/deep/{id}", "deep_item")),
        ("GET", "/sub/acme/v2/items/3", (200, "/sub/{tenant}/v2/items/{id}", "get_item")),
        ("GET", "/sub/acme/images/9", (200, "/sub/{tenant}/images/{id}", "image")),
        ("GET", "/static/app.js", (200, "/static/{path}", None)),
        ("GET", "/plain/7", (200, "/plain/{x}", "get_image")),
        ("POST", "/v1/items/3", (405, "/v1/items/{id}", "get_item")),
        ("GET", "/nope", (404, None, None)),
        ("GET", "/sub/acme/nope", (404, None, None)),
    ],
)
async def test_fastapi_routers_and_mounted_sub_apps_are_named_by_full_template(
    method: str, path: str, expected: tuple[int, str | None, str | None]
) -> None:
    assert await routed(fastapi_app(), path, method) == expected


async def test_server_span_carries_full_template_and_endpoint_name(obs_capture: Capture) -> None:
    app = ObsMiddleware(fastapi_app())
    await routed(app, "/sub/acme/v2/items/3")
    record = obs_capture.span("GET /sub/{tenant}/v2/items/{id}")
    assert (record["http.route"], record["http.endpoint"], record["url.path"]) == (
        "/sub/{tenant}/v2/items/{id}",
        "get_item",
        "/sub/acme/v2/items/3",
    )


async def test_static_mount_prefix_is_resolved_once_and_parameterised_ones_never_cached() -> None:
    app = starlette_app()
    await routed(app, "/v1/images/1")
    await routed(app, "/t/acme/images/1")
    cached = {prefix for (_, prefix) in _routes._prefixes}
    assert "/v1" in cached
    assert not any("acme" in prefix for prefix in cached)


def test_litestar_template_is_taken_from_the_scope() -> None:
    attrs: dict[str, Any] = {}
    scope = {"path_template": "/users/{uid}", "route_handler": object()}
    assert route_template(scope, attrs) == "/users/{uid}"


def test_frameworkless_scope_has_no_template() -> None:
    assert route_template({"type": "http", "path": "/x"}) is None
