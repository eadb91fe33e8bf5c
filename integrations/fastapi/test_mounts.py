"""Route naming through mounts on real FastAPI apps: mounted FastAPI and Starlette sub-apps,
routers included with prefixes inside them, parameterised mount prefixes and static files are
named by their full template, with the endpoint name recorded.

Verified with fastapi 0.165, starlette 1.10.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import obs_middleware as obs
from obs_middleware.testing import Capture


def thumbnail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("thumb")


def make_app(static_dir: Path) -> FastAPI:
    images = APIRouter(prefix="/images")

    @images.get("/{image_id}")
    async def get_image(image_id: int) -> dict[str, int]:
        return {"id": image_id}

    v1 = FastAPI()
    v1.include_router(images)

    @v1.get("/health/deep")
    async def deep_health() -> dict[str, str]:
        return {"ok": "yes"}

    tenants = FastAPI()
    tenants.include_router(images, prefix="/media")

    legacy = Starlette(routes=[Route("/thumbs/{name}", thumbnail)])

    app = FastAPI()
    app.mount("/v1", v1)
    app.mount("/t/{tenant}", tenants)
    app.mount("/legacy", legacy)
    app.router.routes.append(Mount("/grouped", routes=[Route("/thumbs/{name}", thumbnail)]))
    app.mount("/static", StaticFiles(directory=static_dir))
    app.add_middleware(obs.ObsMiddleware)
    return app


@pytest.fixture
def client(tmp_path: Path) -> httpx.AsyncClient:
    (tmp_path / "site.css").write_text("body {}")
    transport = httpx.ASGITransport(app=make_app(tmp_path))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(
    ("path", "status", "name", "endpoint"),
    [
        ("/v1/images/42", 200, "GET /v1/images/{image_id}", "get_image"),
        ("/v1/health/deep", 200, "GET /v1/health/deep", "deep_health"),
        ("/t/acme/media/images/7", 200, "GET /t/{tenant}/media/images/{image_id}", "get_image"),
        ("/legacy/thumbs/cat.png", 200, "GET /legacy/thumbs/{name}", "thumbnail"),
        ("/grouped/thumbs/dog.png", 200, "GET /grouped/thumbs/{name}", "thumbnail"),
        ("/static/site.css", 200, "GET /static/{path}", None),
        ("/v1/missing", 404, "GET", None),
        ("/t/acme/missing", 404, "GET", None),
    ],
)
async def test_mounted_sub_apps_are_named_by_full_template(
    obs_capture: Capture,
    client: httpx.AsyncClient,
    path: str,
    status: int,
    name: str,
    endpoint: str | None,
) -> None:
    async with client:
        assert (await client.get(path)).status_code == status
    (record,) = obs_capture.spans
    assert (record["name"], record.get("http.endpoint"), record["url.path"]) == (
        name,
        endpoint,
        path,
    )


async def test_many_tenants_share_one_template_and_one_metric_series(
    obs_capture: Capture, client: httpx.AsyncClient
) -> None:
    async with client:
        for tenant in ("a", "b", "c"):
            await client.get(f"/t/{tenant}/media/images/1")
    assert {r["name"] for r in obs_capture.spans} == {"GET /t/{tenant}/media/images/{image_id}"}
    points = obs_capture.metrics["http.server.requests"].points
    assert points == {("GET", "/t/{tenant}/media/images/{image_id}", "2xx"): 3}
