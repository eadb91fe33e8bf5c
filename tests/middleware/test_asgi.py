"""Pure ASGI middleware, driven by direct ASGI calls (no framework): the server span and its record,
correlation ids, trace context, errors, streaming, pass-through scopes, metrics and sampling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import internal, redact
from obs_middleware._core import span as _span
from obs_middleware._core.config import HttpOptions, RedactionOptions, SamplingOptions
from obs_middleware._core.context import parse_traceparent, valid_request_id
from obs_middleware._core.metrics import HistogramPoint
from obs_middleware._core.redact import compile_secret_patterns, scrub
from obs_middleware.integrations._ai import ai_call
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.testing import Capture, capture

Message = dict[str, Any]
App = Callable[..., Awaitable[None]]

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def scope_for(
    path: str = "/", method: str = "GET", headers: Iterable[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"token=s3cret",
        "headers": list(headers),
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
    }


async def call(app: App, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def routed(template: str | None, status: int = 200, body: bytes = b"ok") -> App:
    """A tiny ASGI app that, like Starlette's router, stores the matched route in the scope."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if template is not None:
            scope["route"] = SimpleNamespace(path=template)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def response_headers(sent: list[Message]) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


def http_points(cap: Capture, name: str) -> dict[tuple[str, ...], Any]:
    return dict(cap.metrics[name].points)


# -- the server span -------------------------------------------------------------------------------


async def test_server_span_whole_record(obs_capture: Capture) -> None:
    sent = await call(
        ObsMiddleware(routed("/items/{item_id}")),
        scope_for("/items/42", headers=[(b"content-length", b"0")]),
    )
    assert sent[0]["status"] == 200
    assert obs_capture.records == [
        {
            "type": "span",
            "name": "GET /items/{item_id}",
            "trace_id": "00000000000000000000000000000001",
            "span_id": "0000000000000001",
            "parent_id": None,
            "service": "app",
            "environment": "development",
            "start": "2026-01-01T00:00:00.001000Z",
            "duration_ms": 1.0,
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
            "http.request_size": 0,
            "http.response_size": 2,
        }
    ]


@pytest.mark.parametrize("kept_by", ["status 500", "slow"])
async def test_an_unsampled_request_kept_at_its_end_has_every_attribute(kept_by: str) -> None:
    # Attributes are skipped for a request sure to be forgotten: one kept at its end needs them.
    status = 500 if kept_by == "status 500" else 200
    inner = routed("/items/{item_id}", status)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if kept_by == "slow":  # the capture clock advances 1 ms per reading
            for _ in range(5):
                _span.clock_ns()
        await inner(scope, receive, send)

    with capture(sampling=SamplingOptions(ratio=0.0, slow_ms=5)) as cap:
        await call(ObsMiddleware(routed("/items/{item_id}")), scope_for("/items/1"))
        await call(ObsMiddleware(app), scope_for("/items/42", headers=[(b"content-length", b"3")]))
        [record] = cap.records
        assert {k: v for k, v in record.items() if k.startswith("http.") or k == "url.path"} == {
            "url.path": "/items/42",
            "http.method": "GET",
            "http.route": "/items/{item_id}",
            "http.status_code": status,
            "http.request_size": 3,
            "http.response_size": 2,
        }
        duration = http_points(cap, "http.server.duration")
        assert sum(p.count for p in duration.values()) == 2  # both requests, kept or not


async def test_unmatched_route_is_named_by_method_only(obs_capture: Capture) -> None:
    await call(ObsMiddleware(routed(None, status=404)), scope_for("/nope/123"))
    record = obs_capture.span("GET")
    assert (record["http.route"], record["url.path"], record["http.status_code"]) == (
        None,
        "/nope/123",
        404,
    )


async def test_raw_path_and_query_only_as_url_path(obs_capture: Capture) -> None:
    await call(ObsMiddleware(routed("/items/{item_id}")), scope_for("/items/42"))
    text = repr(obs_capture.records)
    assert text.count("/items/42") == 1
    assert "s3cret" not in text


@pytest.mark.parametrize(
    ("path", "recorded"),
    [
        ("/reset/sk-abcdefghijklmnopqrstuvwx", "/reset/[REDACTED]"),
        ("/api/token=s3cr3t-value", "/api/[REDACTED]"),
        ("/items/42", "/items/42"),
        ("/v1/Chat-Completions/7.json", "/v1/Chat-Completions/7.json"),
    ],
)
async def test_url_path_is_scrubbed(obs_capture: Capture, path: str, recorded: str) -> None:
    await call(ObsMiddleware(routed(None)), scope_for(path))
    assert obs_capture.spans[0]["url.path"] == recorded


@given(st.text(alphabet=redact.PLAIN_PATH, max_size=200))
@settings(database=None)
def test_a_plain_path_left_unsearched_holds_nothing_the_scrubber_would_remove(path: str) -> None:
    # The fast path's premise: text of lower-case letters, digits and "/" never matches a secret
    # pattern (a new pattern that could match such text must change redact.PLAIN_PATH).
    assert scrub(path) == path
    assert scrub(path.replace("/", "")) == path.replace("/", "")


async def test_url_path_is_bounded_with_a_marker(obs_capture: Capture) -> None:
    await call(ObsMiddleware(routed(None)), scope_for("/a" * 50_000))
    recorded = obs_capture.spans[0]["url.path"]
    assert recorded == ("/a" * 50_000)[: redact.MAX_MESSAGE] + "…"


async def test_a_secret_across_the_cut_is_scrubbed_before_cutting(obs_capture: Capture) -> None:
    path = "/" + "a" * (redact.MAX_MESSAGE - 10) + "/sk-" + "k" * 40
    await call(ObsMiddleware(routed(None)), scope_for(path))
    recorded = obs_capture.spans[0]["url.path"]
    assert "kkk" not in recorded and len(recorded) == redact.MAX_MESSAGE + 1


async def test_user_secret_patterns_apply_to_plain_paths() -> None:
    try:
        with capture(redaction=RedactionOptions(extra_patterns=(r"cust[0-9]{6}",))) as cap:
            await call(ObsMiddleware(routed(None)), scope_for("/customers/cust123456"))
            assert cap.spans[0]["url.path"] == "/customers/[REDACTED]"
    finally:
        compile_secret_patterns()


async def test_a_static_route_path_is_recorded_as_is(obs_capture: Capture) -> None:
    # The template is exported as http.route anyway: the path equal to it is not searched.
    await call(ObsMiddleware(routed("/api/token=static")), scope_for("/api/token=static"))
    assert obs_capture.spans[0]["url.path"] == "/api/token=static"


async def test_spans_in_the_app_are_children_of_the_server_span(obs_capture: Capture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with obs.span("db.query"):
            pass
        await routed("/x")(scope, receive, send)

    await call(ObsMiddleware(app), scope_for("/x"))
    child, server = obs_capture.spans
    assert child["parent_id"] == server["span_id"]
    assert child["trace_id"] == server["trace_id"]
    assert child["request_id"] == server["request_id"]


# -- errors ----------------------------------------------------------------------------------------


async def test_exception_is_recorded_as_500_reraised_and_scrubbed(obs_capture: Capture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = SimpleNamespace(path="/pay")
        raise RuntimeError("provider said: invalid api_key=sk-abcdefghijklmnop1234")

    with pytest.raises(RuntimeError, match="provider said"):
        await call(ObsMiddleware(app), scope_for("/pay", method="POST"))
    record = obs_capture.span("POST /pay")
    assert (record["status"], record["http.status_code"], record["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
    assert record["error_message"] == "provider said: invalid [REDACTED]"
    assert http_points(obs_capture, "http.server.requests") == {("POST", "/pay", "5xx"): 1}


async def test_exception_after_response_started_keeps_sent_status(obs_capture: Capture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"par", "more_body": True})
        raise ConnectionResetError("stream broke")

    with pytest.raises(ConnectionResetError):
        await call(ObsMiddleware(app), scope_for("/s"))
    record = obs_capture.span("GET")
    assert (record["status"], record["http.status_code"], record["http.response_size"]) == (
        "error",
        200,
        3,
    )


async def test_5xx_response_without_exception_is_an_error(obs_capture: Capture) -> None:
    await call(ObsMiddleware(routed("/x", status=503)), scope_for("/x"))
    record = obs_capture.span("GET /x")
    assert (record["status"], record["error_type"]) == ("error", None)


async def test_cancelled_request_is_recorded_cancelled(obs_capture: Capture) -> None:
    started = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(call(ObsMiddleware(app), scope_for("/slow")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert obs_capture.span("GET")["status"] == "cancelled"


# -- streaming -------------------------------------------------------------------------------------


async def test_streaming_response_size_counts_all_chunks_and_span_ends_at_last_chunk(
    obs_capture: Capture,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"aaa", b"bb", b"c"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        for _ in range(50):  # work after the last byte (background cleanup) is not timed
            _span.clock_ns()

    await call(ObsMiddleware(app), scope_for("/stream"))
    record = obs_capture.span("GET")
    assert record["http.response_size"] == 6
    assert record["duration_ms"] == 1.0  # start → the final body message, one clock tick


# -- pass-through scopes and excluded paths --------------------------------------------------------


async def test_websocket_scope_passes_through_untouched(obs_capture: Capture) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    scope = {"type": "websocket", "path": "/ws", "headers": []}

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        pass

    await ObsMiddleware(app)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert scope == {"type": "websocket", "path": "/ws", "headers": []}
    assert obs_capture.records == []
    assert http_points(obs_capture, "http.server.requests") == {}


async def test_lifespan_messages_pass_through_unchanged_and_flush_on_shutdown(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(_setup, "server_started", lambda: calls.append("started"))
    monkeypatch.setattr(_setup, "server_stopping", lambda: calls.append("stopping") or True)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope == {"type": "lifespan", "asgi": {"version": "3.0"}}
        await receive()
        await send({"type": "lifespan.startup.complete"})
        assert calls == ["started"]
        await receive()
        assert calls == ["started"]
        await send({"type": "lifespan.shutdown.complete"})

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await ObsMiddleware(app)({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert calls == ["started", "stopping"]
    assert obs_capture.records == []


@pytest.mark.parametrize("path", ["/health", "/healthz", "/livez", "/readyz"])
async def test_excluded_paths_produce_no_span_no_metrics_no_header(
    obs_capture: Capture, path: str
) -> None:
    sent = await call(ObsMiddleware(routed(path)), scope_for(path))
    assert sent[0]["headers"] == []
    assert obs_capture.records == []
    assert http_points(obs_capture, "http.server.requests") == {}


async def test_an_ai_call_in_an_excluded_request_still_costs(obs_capture: Capture) -> None:
    # Its silent root never ends: the cost is recorded when the call ends, not left waiting.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with ai_call("openai", "chat", "gpt-4o-mini") as ai:
            ai.set_tokens(input=20, output=10)
        await routed("/health")(scope, receive, send)

    await call(ObsMiddleware(app), scope_for("/health"))
    assert obs_capture.records == []
    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {("openai", "gpt-4o-mini", "chat", "", ""): pytest.approx(9e-06)}


async def test_per_app_options_override_the_configuration(obs_capture: Capture) -> None:
    app = ObsMiddleware(routed("/ping"), options=HttpOptions(exclude_paths=("/ping",)))
    await call(app, scope_for("/ping"))
    await call(app, scope_for("/health"))
    assert obs_capture.names == ["GET /ping"]


# -- correlation id and trace context --------------------------------------------------------------


async def test_valid_x_request_id_is_echoed(obs_capture: Capture) -> None:
    sent = await call(ObsMiddleware(routed("/")), scope_for(headers=[(b"x-request-id", b"abc-1")]))
    assert response_headers(sent)[b"x-request-id"] == b"abc-1"
    assert obs_capture.spans[0]["request_id"] == "abc-1"


@pytest.mark.parametrize("value", [None, b"", b"bad id with spaces", b"x" * 200, b"\xff\xfe"])
async def test_missing_or_invalid_x_request_id_is_replaced_by_trace_id(
    obs_capture: Capture, value: bytes | None
) -> None:
    headers = [] if value is None else [(b"x-request-id", value)]
    sent = await call(ObsMiddleware(routed("/")), scope_for(headers=headers))
    assert response_headers(sent)[b"x-request-id"] == b"00000000000000000000000000000001"
    assert obs_capture.spans[0]["request_id"] == "00000000000000000000000000000001"


async def test_custom_request_id_header(obs_capture: Capture) -> None:
    app = ObsMiddleware(routed("/"), options=HttpOptions(request_id_header="X-Correlation-ID"))
    sent = await call(app, scope_for(headers=[(b"x-correlation-id", b"corr-9")]))
    assert response_headers(sent)[b"x-correlation-id"] == b"corr-9"


async def test_incoming_traceparent_continues_the_trace(obs_capture: Capture) -> None:
    scope = scope_for(headers=[(b"traceparent", TRACEPARENT), (b"tracestate", b"rojo=1")])
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(obs.current_span())
        await routed("/")(scope, receive, send)

    await call(ObsMiddleware(app), scope)
    record = obs_capture.spans[0]
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record["parent_id"] == "00f067aa0ba902b7"
    assert seen[0].local.tracestate == "rojo=1"


async def test_invalid_traceparent_starts_a_fresh_trace(obs_capture: Capture) -> None:
    await call(ObsMiddleware(routed("/")), scope_for(headers=[(b"traceparent", b"00-zz")]))
    record = obs_capture.spans[0]
    assert (record["trace_id"], record["parent_id"]) == ("00000000000000000000000000000001", None)


async def test_two_traceparent_fields_start_a_fresh_trace(obs_capture: Capture) -> None:
    other = b"00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01"
    headers = [(b"traceparent", TRACEPARENT), (b"accept", b"*/*"), (b"traceparent", other)]
    await call(ObsMiddleware(routed("/")), scope_for(headers=headers))
    record = obs_capture.spans[0]
    assert (record["trace_id"], record["parent_id"]) == ("00000000000000000000000000000001", None)


async def test_tracestate_split_over_fields_is_combined_in_order(obs_capture: Capture) -> None:
    headers = [
        (b"tracestate", b"foo=1,bar=2"),
        (b"traceparent", TRACEPARENT),
        (b"tracestate", b"rojo=1"),
        (b"tracestate", b""),
        (b"tracestate", b"congo=2"),
    ]
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(obs.current_span())
        await routed("/")(scope, receive, send)

    await call(ObsMiddleware(app), scope_for(headers=headers))
    assert obs_capture.spans[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert seen[0].local.tracestate == "foo=1,bar=2,rojo=1,congo=2"


TRACE_HEADERS = (b"traceparent", b"tracestate", b"x-request-id")


def header_values() -> st.SearchStrategy[bytes]:
    valid = st.builds(
        lambda t, s, f: b"00-%032x-%016x-%s" % (t, s, f),
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**64 - 1),
        st.sampled_from([b"00", b"01", b"ff", b"0", b"zz"]),
    )
    mutated = st.builds(
        lambda v, i, b: v[:i] + b + v[i + 1 :],
        valid,
        st.integers(0, 60),
        st.binary(min_size=0, max_size=3),
    )
    huge = st.builds(
        lambda unit, n: unit * n, st.binary(min_size=1, max_size=8), st.integers(1, 20_000)
    )
    tracestate = st.sampled_from([b"rojo=00f067aa0ba902b7", b"congo=t61rcWkgMzE, rojo=1"])
    return st.one_of(st.binary(max_size=300), valid, mutated, huge, tracestate)


def test_arbitrary_trace_headers_through_the_middleware_never_raise() -> None:
    """1,000 arbitrary, malformed and huge traceparent/tracestate/x-request-id values."""
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(obs.current_span())
        await routed("/r")(scope, receive, send)

    middleware = ObsMiddleware(app)
    loop = asyncio.new_event_loop()

    @given(values=st.lists(st.tuples(st.sampled_from(TRACE_HEADERS), header_values()), max_size=4))
    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def check(values: list[tuple[bytes, bytes]]) -> None:
        seen.clear()
        sent = loop.run_until_complete(call(middleware, scope_for("/r", headers=values)))
        headers = dict(values)
        (server,) = seen
        # W3C: a repeated traceparent is invalid; repeated tracestates are one list, in order.
        parents = [v for n, v in values if n == b"traceparent"]
        states = [v for n, v in values if n == b"tracestate"]
        remote = parse_traceparent(
            parents[0] if len(parents) == 1 else None, b",".join(states) if states else None
        )
        if remote is None:
            assert server.parent_id == 0  # a fresh trace
        else:
            assert (server.trace_id, server.parent_id) == (remote.trace_id, remote.span_id)
            assert server.sampled is remote.sampled
            assert server.local.tracestate == remote.tracestate
        rid = valid_request_id(headers.get(b"x-request-id")) or f"{server.trace_id:032x}"
        assert response_headers(sent)[b"x-request-id"] == rid.encode()
        assert sent[0]["status"] == 200
        assert obs.current_span() is None

    try:
        with capture(fixed=False) as cap:
            check()
            assert cap.metrics["http.server.requests"].points[("GET", "/r", "2xx")] >= 1000
    finally:
        loop.close()


# -- request attributes, privacy, user hook --------------------------------------------------------


async def test_captured_headers_skip_sensitive_ones_unless_allowed() -> None:
    headers = [
        (b"user-agent", b"curl/8"),
        (b"authorization", b"Bearer topsecret-token"),
        (b"cookie", b"session=abcdef"),
        (b"x-forwarded-for", b"198.51.100.23"),
    ]
    names = ("User-Agent", "Authorization", "Cookie", "X-Forwarded-For", "X-Missing")
    with capture(http=HttpOptions(capture_headers=names)) as cap:
        await call(ObsMiddleware(routed("/")), scope_for(headers=headers))
        record = cap.spans[0]
    assert record["http.request.header.user-agent"] == "curl/8"
    for secret in ("topsecret", "abcdef", "198.51.100.23", "203.0.113.7"):
        assert secret not in repr(record)
    assert "http.request.header.x-missing" not in record

    opted_in = HttpOptions(capture_headers=names, allow_sensitive_headers=True)
    with capture(http=opted_in) as cap:
        await call(ObsMiddleware(routed("/")), scope_for(headers=headers))
        assert cap.spans[0]["http.request.header.cookie"] == "session=abcdef"


async def test_secrets_in_captured_headers_are_scrubbed() -> None:
    headers = [(b"x-debug", b"retry with key sk-0123456789abcdefghij")]
    with capture(http=HttpOptions(capture_headers=("X-Debug",))) as cap:
        await call(ObsMiddleware(routed("/")), scope_for(headers=headers))
        assert cap.spans[0]["http.request.header.x-debug"] == "retry with key [REDACTED]"


async def test_user_id_hook_sets_user_when_app_did_not(obs_capture: Capture) -> None:
    app = ObsMiddleware(routed("/"), options=HttpOptions(user_id=lambda scope: 7))
    await call(app, scope_for())
    assert obs_capture.spans[0]["user_id"] == "7"


async def test_set_user_in_app_wins_over_hook(obs_capture: Capture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        obs.set_user("from-app", tier="free")
        await routed("/")(scope, receive, send)

    await call(ObsMiddleware(app, options=HttpOptions(user_id=lambda s: "hook")), scope_for())
    assert (obs_capture.spans[0]["user_id"], obs_capture.spans[0]["tier"]) == ("from-app", "free")


async def test_failing_user_id_hook_never_reaches_the_app(
    obs_capture: Capture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(internal, "_warned", set())

    def hook(scope: Any) -> str:
        raise KeyError("no user")

    app = ObsMiddleware(routed("/"), options=HttpOptions(user_id=hook))
    for _ in range(2):
        sent = await call(app, scope_for())
        assert sent[0]["status"] == 200
    assert [r["user_id"] for r in obs_capture.spans] == [None, None]
    assert len([r for r in caplog.records if "user_id hook" in r.getMessage()]) == 1


async def test_unparseable_content_length_still_traces_and_counts_the_request(
    obs_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        sent = await call(
            ObsMiddleware(routed("/up")),
            scope_for("/up", headers=[(b"content-length", b"9" * 5000)]),
        )
    assert sent[0]["status"] == 200
    assert obs.current_span() is None
    assert http_points(obs_capture, "http.server.requests") == {("GET", "/up", "2xx"): 1}


# -- metrics and sampling --------------------------------------------------------------------------


async def test_http_metrics_by_method_route_and_status_class(obs_capture: Capture) -> None:
    await call(ObsMiddleware(routed("/items/{id}")), scope_for("/items/1"))
    await call(ObsMiddleware(routed("/items/{id}")), scope_for("/items/2"))
    await call(ObsMiddleware(routed("/items/{id}", status=404)), scope_for("/items/3"))
    await call(ObsMiddleware(routed("/items/{id}", status=201)), scope_for("/items", "POST"))
    await call(ObsMiddleware(routed(None, status=404)), scope_for("/nope"))
    assert http_points(obs_capture, "http.server.requests") == {
        ("GET", "/items/{id}", "2xx"): 2,
        ("GET", "/items/{id}", "4xx"): 1,
        ("POST", "/items/{id}", "2xx"): 1,
        ("GET", "", "4xx"): 1,
    }
    point = http_points(obs_capture, "http.server.duration")[("GET", "/items/{id}", "2xx")]
    assert isinstance(point, HistogramPoint)
    assert (point.count, point.sum) == (2, 2.0)  # one deterministic 1 ms tick each
    assert http_points(obs_capture, "http.server.active") == {("GET",): 0.0, ("POST",): 0.0}


async def test_unknown_methods_share_one_other_series_and_keep_the_original_on_the_span(
    obs_capture: Capture,
) -> None:
    app = ObsMiddleware(routed("/r"))
    for i in range(300):  # each a new method a client made up
        await call(app, scope_for("/r", method=f"M{i}"))
    await call(app, scope_for("/r", method="get"))  # methods are case-sensitive
    await call(app, scope_for("/r", method="QUERY"))
    assert http_points(obs_capture, "http.server.requests") == {
        ("_OTHER", "/r", "2xx"): 301,
        ("QUERY", "/r", "2xx"): 1,
    }
    assert http_points(obs_capture, "http.server.active") == {("_OTHER",): 0.0, ("QUERY",): 0.0}
    first = obs_capture.spans[0]
    assert (first["name"], first["http.method"], first["http.request.method_original"]) == (
        "HTTP /r",
        "_OTHER",
        "M0",
    )
    assert "http.request.method_original" not in obs_capture.spans[-1]


async def test_original_method_is_scrubbed_and_bounded(obs_capture: Capture) -> None:
    app = ObsMiddleware(routed(None))
    await call(app, scope_for(method="TOKEN=s3cr3t-value"))
    await call(app, scope_for(method="X" * 100_000))
    secret, huge = obs_capture.spans
    assert (secret["name"], secret["http.request.method_original"]) == ("HTTP", "[REDACTED]")
    assert huge["http.request.method_original"] == "X" * redact.MAX_MESSAGE + "…"


async def test_known_methods_can_be_overridden(obs_capture: Capture) -> None:
    options = HttpOptions(known_methods=("GET", "PROPFIND"))
    for method in ("PROPFIND", "POST"):
        await call(ObsMiddleware(routed("/dav"), options=options), scope_for("/dav", method))
    assert http_points(obs_capture, "http.server.requests") == {
        ("PROPFIND", "/dav", "2xx"): 1,
        ("_OTHER", "/dav", "2xx"): 1,
    }


async def test_active_requests_gauge_is_one_during_the_request(obs_capture: Capture) -> None:
    during: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        during.append(http_points(obs_capture, "http.server.active"))
        await routed("/")(scope, receive, send)

    await call(ObsMiddleware(app), scope_for(method="PUT"))
    assert during == [{("PUT",): 1.0}]
    assert http_points(obs_capture, "http.server.active") == {("PUT",): 0.0}


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
async def test_metrics_are_exact_at_any_sample_rate(ratio: float) -> None:
    with capture(fixed=False, sampling=SamplingOptions(ratio=ratio)) as cap:
        for _ in range(40):
            await call(ObsMiddleware(routed("/r")), scope_for("/r"))
        exported = len(cap.spans)
        assert http_points(cap, "http.server.requests") == {("GET", "/r", "2xx"): 40}
    if ratio == 0.0:
        assert exported == 0
    elif ratio == 1.0:
        assert exported == 40


async def test_ratio_zero_keeps_failed_requests_whole() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with obs.span("db.query"):
            pass
        raise RuntimeError("boom")

    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        await call(ObsMiddleware(routed("/ok")), scope_for("/ok"))
        with pytest.raises(RuntimeError):
            await call(ObsMiddleware(app), scope_for("/boom"))
        assert cap.names == ["db.query", "GET"]
        assert http_points(cap, "http.server.requests") == {
            ("GET", "/ok", "2xx"): 1,
            ("GET", "", "5xx"): 1,
        }


async def test_incoming_unsampled_flag_exports_nothing_but_counts(obs_capture: Capture) -> None:
    unsampled = TRACEPARENT[:-2] + b"00"
    await call(ObsMiddleware(routed("/r")), scope_for("/r", headers=[(b"traceparent", unsampled)]))
    assert obs_capture.records == []
    assert http_points(obs_capture, "http.server.requests") == {("GET", "/r", "2xx"): 1}


# -- nested instances (obs run inserted one, the app added its own) --------------------------------


async def test_nested_middleware_yields_one_span_with_the_outer_options(
    obs_capture: Capture,
) -> None:
    inner = ObsMiddleware(routed("/items/{item_id}"), options=HttpOptions(request_id_header="x-in"))
    outer = ObsMiddleware(inner, options=HttpOptions(request_id_header="x-out"))
    sent = await call(outer, scope_for("/items/1"))
    (record,) = obs_capture.spans
    assert record["name"] == "GET /items/{item_id}"
    assert set(response_headers(sent)) == {b"x-out"}  # the inner one added nothing
    assert sum(p.count for p in http_points(obs_capture, "http.server.duration").values()) == 1


async def test_a_fresh_scope_is_traced_again_by_the_same_instance(obs_capture: Capture) -> None:
    app = ObsMiddleware(ObsMiddleware(routed("/a")))
    await call(app, scope_for("/a"))
    await call(app, scope_for("/a"))
    assert [r["name"] for r in obs_capture.spans] == ["GET /a", "GET /a"]
