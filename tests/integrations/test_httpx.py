"""httpx client spans (sync and async) through httpx's own MockTransport: the span record,
traceparent injection, host allow/deny lists, privacy of the URL, errors, and suppression of our
exporters' traffic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware._core.config import HttpOptions
from obs_middleware._core.context import EXPORTING, parse_traceparent
from obs_middleware.integrations import _outbound
from obs_middleware.integrations import httpx as obs_httpx
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.testing import Capture, capture


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_httpx.patch()
    yield
    obs_httpx.unpatch()


seen: list[httpx.Request] = []


def answer(request: httpx.Request) -> httpx.Response:
    seen.append(request)
    if request.url.path == "/missing":
        return httpx.Response(404, content=b"no")
    if request.url.path == "/down":
        raise httpx.ConnectError("connection refused", request=request)
    return httpx.Response(200, content=b'{"ok":true}')


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


def client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(answer))


def test_request_inside_a_span_is_a_client_child_with_whole_record(obs_capture: Capture) -> None:
    with obs.span("job"), client() as c:
        c.post("https://user:pw@api.example.com/v1/images/42?size=big&token=abc", content=b"12345")
    record = obs_capture.span("POST api.example.com")
    assert record == {
        "type": "span",
        "name": "POST api.example.com",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000002",
        "parent_id": "0000000000000001",
        "service": "app",
        "environment": "development",
        "start": "2026-01-01T00:00:00.002000Z",
        "duration_ms": 1.0,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": None,
        "tier": None,
        "request_id": None,
        "host.name": "test-host",
        "service.instance.id": "0000000000000000",
        "span.kind": "client",
        "http.method": "POST",
        "server.address": "api.example.com",
        "url.full": "https://api.example.com/v1/images/42?size=&token=",
        "http.status_code": 200,
        "http.request_size": 5,
        "http.response_size": 11,
    }
    parent = parse_traceparent(seen[0].headers["traceparent"].encode())
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled) == (1, 2, True)


def test_secrets_in_the_path_are_scrubbed(obs_capture: Capture) -> None:
    with client() as c:
        c.get("https://api.example.com/keys/sk-abcdefghijklmnopqrstuvwx/info")
    assert obs_capture.spans[0]["url.full"] == "https://api.example.com/keys/[REDACTED]/info"


def test_a_made_up_method_is_other_on_the_span_and_the_metric(obs_capture: Capture) -> None:
    with client() as c:
        for i in range(20):
            c.request(f"CUSTOM{i}", "https://api.example.com/x")
        c.request("PATCH", "https://api.example.com/x")
    first = obs_capture.spans[0]
    assert (first["name"], first["http.method"], first["http.request.method_original"]) == (
        "HTTP api.example.com",
        "_OTHER",
        "CUSTOM0",
    )
    assert obs_capture.metrics["http.client.requests"].points == {
        ("_OTHER", "api.example.com", "2xx"): 20,
        ("PATCH", "api.example.com", "2xx"): 1,
    }


def test_error_status_and_transport_failure_mark_the_span_failed(obs_capture: Capture) -> None:
    with client() as c:
        c.get("http://svc.internal:8080/missing")
        with pytest.raises(httpx.ConnectError):
            c.get("http://svc.internal:8080/down")
    missing, down = obs_capture.spans
    assert (missing["status"], missing["http.status_code"], missing["server.port"]) == (
        "error",
        404,
        8080,
    )
    assert (down["status"], down["error_type"], "http.status_code" in down) == (
        "error",
        "ConnectError",
        False,
    )
    points = obs_capture.metrics["http.client.requests"].points
    assert points == {
        ("GET", "svc.internal", "4xx"): 1,
        ("GET", "svc.internal", "xxx"): 1,
    }


async def test_async_client_span_belongs_to_the_awaiting_task(obs_capture: Capture) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as c:
        with obs.span("handler"):
            response = await c.get("https://api.example.com/v1/ping")
    assert response.status_code == 200
    assert obs_capture.names == ["GET api.example.com", "handler"]
    child, parent = obs_capture.spans
    assert child["parent_id"] == parent["span_id"]
    tp = parse_traceparent(seen[0].headers["traceparent"].encode())
    assert tp is not None
    assert f"{tp.span_id:016x}" == child["span_id"]


def test_a_traceparent_set_by_the_caller_is_kept(obs_capture: Capture) -> None:
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with client() as c:
        c.get("https://api.example.com/", headers={"traceparent": mine})
    assert seen[0].headers["traceparent"] == mine


@pytest.mark.parametrize(
    ("allow", "deny", "host", "injected"),
    [
        ((), (), "api.openai.com", True),
        ((), ("api.openai.com",), "api.openai.com", False),
        (("*.internal",), (), "images.internal", True),
        (("*.internal",), (), "api.openai.com", False),
        (("*.internal",), ("secret.internal",), "secret.internal", False),
        (("API.Example.com",), (), "api.example.com", True),
    ],
)
def test_propagation_follows_host_allow_and_deny_lists(
    allow: tuple[str, ...], deny: tuple[str, ...], host: str, injected: bool
) -> None:
    options = HttpOptions(propagate_hosts=allow, no_propagate_hosts=deny)
    with capture(http=options) as cap, client() as c:
        c.get(f"https://{host}/x")
    assert ("traceparent" in seen[0].headers) is injected
    assert len(cap.spans) == 1  # the span is recorded either way


def test_exporter_traffic_is_never_traced(obs_capture: Capture) -> None:
    token = EXPORTING.set(True)
    try:
        with client() as c:
            c.get("https://collector.example.com/v1/traces")
    finally:
        EXPORTING.reset(token)
    assert obs_capture.spans == []
    assert "traceparent" not in seen[0].headers


def test_patch_is_idempotent_and_unpatch_stops_tracing(obs_capture: Capture) -> None:
    obs_httpx.patch()
    with client() as c:
        c.get("https://api.example.com/one")
    obs_httpx.unpatch()
    with client() as c:
        c.get("https://api.example.com/two")
    assert obs_capture.names == ["GET api.example.com"]


def test_our_own_failure_never_reaches_the_caller(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in obs")

    monkeypatch.setattr(_outbound.ClientCall, "__init__", broken)
    with client() as c:
        assert c.get("https://api.example.com/").status_code == 200
    assert obs_capture.spans == []


class _ForwardingTransport(httpx.BaseTransport):
    """A transport that sends through a second client, as fal's transport does."""

    def __init__(self) -> None:
        self.inner = client()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.send(request)
        response.read()
        return httpx.Response(response.status_code, content=response.content)


def test_a_client_sending_through_another_client_makes_one_span(obs_capture: Capture) -> None:
    with obs.span("job"), httpx.Client(transport=_ForwardingTransport()) as c:
        c.get("https://api.example.com/x")
    assert obs_capture.names == ["GET api.example.com", "job"]


async def test_no_span_exports_query_values_of_a_failed_request(
    obs_capture: Capture, failing_server: str, closed_port: int
) -> None:
    async def profile(request: Request) -> Response:
        async with httpx.AsyncClient() as upstream:
            answer = await upstream.get(f"{failing_server}/x", params={"email": "bob@example.com"})
            answer.raise_for_status()  # the server span records HTTPStatusError
        return Response("unreachable")

    app = ObsMiddleware(Starlette(routes=[Route("/profile", profile)]))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        assert (await c.get("/profile")).status_code == 500
    with pytest.raises(httpx.ConnectError), obs.span("refused"):
        httpx.get(f"http://127.0.0.1:{closed_port}/x?email=bob%40example.com")
    assert "bob" not in repr(obs_capture.records)
    server = obs_capture.span("GET /profile")
    assert server["error_type"] == "HTTPStatusError"
    assert f"for url '{failing_server}/x?email='" in server["error_message"]
