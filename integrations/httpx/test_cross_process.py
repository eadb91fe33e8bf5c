"""httpx against a real server: a Starlette service calls a second Starlette service (its own
process, under uvicorn, on loopback) and both export to jsonl: one trace across the processes.

Verified with httpx 0.28, starlette 1.10, uvicorn 0.54.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions
from obs_middleware._record import Record
from obs_middleware.exporters.memory import MemoryExporter
from obs_middleware.integrations import httpx as obs_httpx

from .conftest import Downstream

Records = Callable[[], list[dict[str, Any]]]


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_httpx.patch()
    yield
    obs_httpx.unpatch()


def upstream_app(downstream_url: str) -> Any:
    async def render(request: Request) -> JSONResponse:
        async with httpx.AsyncClient(base_url=downstream_url) as client:
            answer = await client.get(f"/images/{request.path_params['image_id']}?size=large")
        return JSONResponse({"downstream": answer.json(), "status": answer.status_code})

    def render_sync(request: Request) -> JSONResponse:  # runs in the threadpool
        with httpx.Client(base_url=downstream_url, follow_redirects=True) as client:
            answer = client.get("/old/5")  # a redirect, followed by the client
        return JSONResponse({"status": answer.status_code})

    app = Starlette(routes=[Route("/render/{image_id}", render), Route("/sync", render_sync)])
    app.add_middleware(obs.ObsMiddleware)
    return app


async def call(app: Any, path: str) -> int:
    """Drive the upstream app by a direct ASGI call: only its own client call crosses a socket."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"upstream")],
        "client": ("127.0.0.1", 5000),
        "server": ("upstream", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_one_trace_across_two_processes(
    downstream: Downstream, upstream_jsonl: Records
) -> None:
    assert await call(upstream_app(downstream.url), "/render/42") == 200
    up = {r["name"]: r for r in upstream_jsonl()}
    down = {r["name"]: r for r in downstream.records()}
    server, client = up["GET /render/{image_id}"], up["GET 127.0.0.1"]
    remote, render = down["GET /images/{image_id}"], down["render"]
    assert {server["service"], client["service"], remote["service"]} == {"upstream", "downstream"}
    assert server["trace_id"] == client["trace_id"] == remote["trace_id"] == render["trace_id"]
    assert (server["parent_id"], client["parent_id"]) == (None, server["span_id"])
    assert remote["parent_id"] == client["span_id"]  # the downstream continues our client span
    assert render["parent_id"] == remote["span_id"]
    assert client["url.full"] == f"{downstream.url}/images/42?size="
    assert (client["span.kind"], client["http.status_code"], client["status"]) == (
        "client",
        200,
        "ok",
    )
    assert client["http.response_size"] == len(b'{"id":"42"}')
    assert remote["request_id"] == server["trace_id"]  # no X-Request-ID: the trace id correlates


async def test_sync_client_in_a_threadpool_endpoint_and_redirects(
    downstream: Downstream, upstream_jsonl: Records
) -> None:
    assert await call(upstream_app(downstream.url), "/sync") == 200
    up = upstream_jsonl()
    (client,) = [r for r in up if r.get("span.kind") == "client"]
    down = [r for r in downstream.records() if r.get("span.kind") == "server"]
    assert [r["name"] for r in down] == ["GET /old/{image_id}", "GET /images/{image_id}"]
    assert {r["parent_id"] for r in down} == {client["span_id"]}  # both hops, one client span
    assert {r["trace_id"] for r in [*up, *down]} == {client["trace_id"]}


class HttpxExporter:
    """An exporter that ships its batches with httpx, as a network exporter would."""

    name = "httpx-test"

    def __init__(self, url: str) -> None:
        self.url = url
        self.batches = 0

    def export(self, records: list[Record]) -> None:
        with httpx.Client() as client:
            client.post(f"{self.url}/ingest", json=len(records))
        self.batches += 1

    def flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


async def test_exporter_traffic_is_never_traced(downstream: Downstream) -> None:
    shipping = HttpxExporter(downstream.url)
    memory = MemoryExporter()
    config = _setup.build_config(
        exporters=[shipping, memory],
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
    )
    with _setup.scoped(config):
        with obs.span("job"):
            pass
        _setup.flush(5.0)  # the exporter posts from the export worker thread
    assert shipping.batches >= 1
    assert [r["name"] for r in memory.records] == ["job"]  # no client span for the shipping
    ingest = [r for r in downstream.records() if r["name"] == "POST /ingest"]
    assert ingest
    assert all(r["parent_id"] is None for r in ingest)  # and no traceparent was sent
