"""ObsMiddleware stacked with OpenTelemetry's own ASGI middleware
(opentelemetry-instrumentation-asgi) on a real Starlette app, in both orders, through Starlette's
TestClient and under a real uvicorn server: the inner middleware's server span continues the
outer one's trace, and the spans the handler opens (obs and OpenTelemetry) continue the
innermost."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp

import obs_middleware as obs
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.testing import Capture

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"


@pytest.fixture
def bridged() -> Iterator[None]:
    assert obs.instrument_all(only=["opentelemetry"]).patched == ["opentelemetry"]
    yield
    obs.uninstrument_all()


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exported: InMemorySpanExporter) -> TracerProvider:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exported))
    return made


def make_app(tracer: trace.Tracer) -> Starlette:
    async def item(request: Request) -> PlainTextResponse:
        with obs.span("handler.obs"), tracer.start_as_current_span("handler.otel"):
            pass
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/items/{item_id}", item)])


def stack(order: str, provider: TracerProvider) -> ASGIApp:
    app = make_app(provider.get_tracer("handler"))
    if order == "otel-outside":
        return OpenTelemetryMiddleware(ObsMiddleware(app), tracer_provider=provider)
    return ObsMiddleware(OpenTelemetryMiddleware(app, tracer_provider=provider))


def spans_by_name(exported: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exported.get_finished_spans()}


def parent(span: ReadableSpan) -> int:
    return span.parent.span_id if span.parent is not None else 0


def check(order: str, cap: Capture, exported: InMemorySpanExporter) -> None:
    """One trace, the caller's; each span's parent the innermost span around it."""
    obs.flush()
    ours = {r["name"]: r for r in cap.spans}
    server = ours["GET /items/{item_id}"]
    handler = ours["handler.obs"]
    theirs = spans_by_name(exported)
    otel_server = theirs["GET /items/7"]
    sends = [s for s in exported.get_finished_spans() if s.name.endswith(" http send")]
    handler_otel = theirs["handler.otel"]
    trace_hex = f"{CALLER_TRACE:032x}"
    assert {r["trace_id"] for r in ours.values()} == {trace_hex}
    assert {s.context.trace_id for s in theirs.values()} == {CALLER_TRACE}
    otel_server_hex = f"{otel_server.context.span_id:016x}"
    if order == "otel-outside":
        assert parent(otel_server) == CALLER_SPAN
        assert otel_server.kind is trace.SpanKind.SERVER
        assert server["parent_id"] == otel_server_hex
        assert handler["parent_id"] == server["span_id"]
        # our middleware calls the send it was given inside its own span: the innermost
        assert {parent(s) for s in sends} == {int(server["span_id"], 16)}
    else:
        assert server["parent_id"] == f"{CALLER_SPAN:016x}"
        assert parent(otel_server) == int(server["span_id"], 16)
        # it saw a current span (ours): an internal span, not a second server span
        assert otel_server.kind is trace.SpanKind.INTERNAL
        assert handler["parent_id"] == otel_server_hex
        assert {parent(s) for s in sends} == {otel_server.context.span_id}
    assert parent(handler_otel) == int(handler["span_id"], 16)


@pytest.mark.parametrize("order", ["otel-outside", "obs-outside"])
def test_stacked_middlewares_continue_one_trace(
    order: str,
    obs_capture: Capture,
    bridged: None,
    provider: TracerProvider,
    exported: InMemorySpanExporter,
) -> None:
    client = TestClient(stack(order, provider))
    response = client.get("/items/7", headers={"traceparent": TRACEPARENT})
    assert response.text == "ok"
    check(order, obs_capture, exported)


@pytest.mark.parametrize("order", ["otel-outside", "obs-outside"])
def test_without_a_caller_the_outer_middleware_starts_the_trace_the_inner_continues(
    order: str,
    obs_capture: Capture,
    bridged: None,
    provider: TracerProvider,
    exported: InMemorySpanExporter,
) -> None:
    assert TestClient(stack(order, provider)).get("/items/1").text == "ok"
    obs.flush()
    (server,) = [r for r in obs_capture.spans if r["name"] == "GET /items/{item_id}"]
    theirs = exported.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in theirs} == {server["trace_id"]}
    roots = [s for s in theirs if s.parent is None]
    assert len(roots) == (1 if order == "otel-outside" else 0)  # the outer one is the root
    assert (server["parent_id"] is None) == (order == "obs-outside")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Callable[[ASGIApp], str]]:
    """``serve(app)``: the app under a real uvicorn server on a loopback port; its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: ASGIApp) -> str:
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.mark.parametrize("order", ["otel-outside", "obs-outside"])
def test_under_uvicorn(
    order: str,
    obs_capture: Capture,
    bridged: None,
    provider: TracerProvider,
    exported: InMemorySpanExporter,
    serve: Callable[[ASGIApp], str],
) -> None:
    url = serve(stack(order, provider))
    # urllib is not instrumented: the request carries only the caller's traceparent
    request = urllib.request.Request(f"{url}/items/7", headers={"traceparent": TRACEPARENT})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == b"ok"
    deadline = time.monotonic() + 10
    while "GET /items/7" not in spans_by_name(exported):
        assert time.monotonic() < deadline, "the OpenTelemetry server span never ended"
        time.sleep(0.02)
    check(order, obs_capture, exported)
