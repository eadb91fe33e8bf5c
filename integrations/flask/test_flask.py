"""ObsWSGIMiddleware on real Flask apps, driven through Flask's test client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, Response, abort, request, stream_with_context
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import obs_middleware as obs
from obs_middleware._core.config import HttpOptions, SamplingOptions
from obs_middleware.middleware import ObsWSGIMiddleware
from obs_middleware.testing import Capture, capture

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SECRETS = {
    "Authorization": "Bearer sk-live-0123456789abcdefSECRET",
    "Cookie": "session=cookie-SECRET-42",
    "X-Api-Key": "apikey-SECRET-77",
    "X-Forwarded-For": "198.51.100.23",
}
CLIENT_IP = "203.0.113.9"


def make_app(*, testing: bool = True) -> Flask:
    app = Flask(__name__)
    app.config["TESTING"] = testing

    @app.get("/items/<int:item_id>")
    def get_item(item_id: int) -> dict:
        with obs.span("db.query"):
            pass
        return {"id": item_id}

    @app.get("/fail")
    def fail() -> dict:
        raise RuntimeError(f"upstream refused {request.headers.get('Authorization', '')}")

    @app.get("/forbidden")
    def forbidden() -> dict:
        abort(403)

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for i, chunk in enumerate((b"aaa", b"bb", b"c")):
                with obs.span("chunk", index=i):
                    pass
                yield chunk

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/health")
    def health() -> str:
        return "ok"

    app.wsgi_app = ObsWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def get(app_or_client: Flask | FlaskClient, url: str, **kw: object) -> TestResponse:
    """GET through Flask's test client, reading the whole body and then closing the response, as
    a WSGI server does."""
    client = app_or_client.test_client() if isinstance(app_or_client, Flask) else app_or_client
    response = client.get(url, **kw)
    response.get_data()
    response.close()
    return response


def by_name(cap: Capture) -> dict[str, dict]:
    return {r["name"]: r for r in cap.spans}


def test_url_rule_names_the_span_and_raw_path_is_only_url_path(obs_capture: Capture) -> None:
    response = get(make_app(), "/items/42?q=secret-query")
    assert response.json == {"id": 42}
    spans = by_name(obs_capture)
    server = spans["GET /items/<int:item_id>"]
    assert spans["db.query"]["parent_id"] == server["span_id"]
    assert "secret-query" not in json.dumps(obs_capture.records)
    assert server == {
        "type": "span",
        "name": "GET /items/<int:item_id>",
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
        "http.route": "/items/<int:item_id>",
        "http.status_code": 200,
        "http.request_size": None,
        "http.response_size": len(response.data),
    }


def test_unmatched_path_is_named_by_method_only(obs_capture: Capture) -> None:
    assert get(make_app(), "/nowhere/1").status_code == 404
    record = obs_capture.span("GET")
    assert (record["http.route"], record["url.path"], record["http.status_code"]) == (
        None,
        "/nowhere/1",
        404,
    )


def test_abort_is_a_4xx_not_an_error(obs_capture: Capture) -> None:
    assert get(make_app(), "/forbidden").status_code == 403
    record = obs_capture.span("GET /forbidden")
    assert (record["status"], record["error_type"]) == ("ok", None)


def test_exception_is_recorded_500_reraised_and_scrubbed(obs_capture: Capture) -> None:
    client = make_app(testing=True).test_client()  # TESTING propagates exceptions
    with pytest.raises(RuntimeError, match="upstream refused"):
        client.get("/fail", headers={"Authorization": SECRETS["Authorization"]})
    record = obs_capture.span("GET /fail")
    assert (record["status"], record["http.status_code"], record["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
    assert record["error_message"] == "upstream refused [REDACTED]"


@pytest.mark.parametrize("handler", [False, True], ids=["default", "errorhandler"])
def test_500_responses_carry_the_request_id_and_keep_their_body(
    obs_capture: Capture, handler: bool
) -> None:
    def app(traced: bool) -> Flask:
        flask_app = Flask(__name__)

        @flask_app.get("/fail")
        def fail() -> dict:
            raise RuntimeError("boom")

        if handler:
            flask_app.register_error_handler(500, lambda e: ("custom failure", 500))
        if traced:
            flask_app.wsgi_app = ObsWSGIMiddleware(flask_app.wsgi_app)  # type: ignore[method-assign]
        return flask_app

    plain = get(app(False), "/fail")
    traced = get(app(True), "/fail", headers={"X-Request-ID": "req-500"})
    assert (traced.status_code, traced.data) == (plain.status_code, plain.data)
    assert traced.status_code == 500
    assert traced.headers["x-request-id"] == "req-500"
    assert obs_capture.span("GET /fail")["error_type"] == "RuntimeError"


def test_exception_handled_by_flask_still_records_error_type(obs_capture: Capture) -> None:
    response = get(make_app(testing=False), "/fail")
    assert response.status_code == 500
    record = obs_capture.span("GET /fail")
    assert (record["status"], record["error_type"]) == ("error", "RuntimeError")


def end_ms(record: dict) -> float:
    return float(record["start"][-8:-1]) * 1000 + record["duration_ms"]


def test_streamed_response_counts_all_chunks_and_span_ends_after_last_chunk(
    obs_capture: Capture,
) -> None:
    response = get(make_app(), "/stream")
    assert response.data == b"aaabbc"
    server = obs_capture.span("GET /stream")
    chunks = [r for r in obs_capture.spans if r["name"] == "chunk"]
    assert server["http.response_size"] == 6
    assert len(chunks) == 3
    assert end_ms(server) > end_ms(chunks[-1])


def test_spans_made_while_streaming_the_body_are_children_of_the_server_span(
    obs_capture: Capture,
) -> None:
    get(make_app(), "/stream")
    server = obs_capture.span("GET /stream")
    chunks = [r for r in obs_capture.spans if r["name"] == "chunk"]
    assert {(c["trace_id"], c["parent_id"]) for c in chunks} == {
        (server["trace_id"], server["span_id"])
    }
    assert obs.current_span() is None


def test_span_ends_when_the_body_is_exhausted_even_without_close(obs_capture: Capture) -> None:
    response = make_app().test_client().get("/items/5")  # read, never closed
    assert response.json == {"id": 5}
    assert "GET /items/<int:item_id>" in obs_capture.names


def test_span_ends_with_the_last_byte_when_the_client_reads_only_the_first_chunk(
    obs_capture: Capture,
) -> None:
    response = make_app().test_client().get("/items/5")  # the body is neither read nor closed
    assert response.status_code == 200
    assert obs_capture.names == ["db.query", "GET /items/<int:item_id>"]
    with make_app().test_client() as client:
        assert client.get("/items/6").status_code == 200
        assert obs_capture.names[-1] == "GET /items/<int:item_id>"


def test_excluded_health_path_produces_no_span(obs_capture: Capture) -> None:
    response = get(make_app(), "/health")
    assert response.text == "ok"
    assert "X-Request-ID" not in response.headers
    assert obs_capture.records == []


def test_x_request_id_echoed_when_valid_generated_when_absent_or_invalid(
    obs_capture: Capture,
) -> None:
    client = make_app().test_client()
    echoed = get(client, "/items/1", headers={"X-Request-ID": "req-9"})
    generated = get(client, "/items/1")
    replaced = get(client, "/items/1", headers={"X-Request-ID": "bad id"})
    assert echoed.headers["x-request-id"] == "req-9"
    servers = [r for r in obs_capture.spans if r["name"] == "GET /items/<int:item_id>"]
    assert generated.headers["x-request-id"] == servers[1]["trace_id"]
    assert replaced.headers["x-request-id"] == servers[2]["trace_id"]


def test_incoming_traceparent_continues_the_trace(obs_capture: Capture) -> None:
    get(make_app(), "/items/1", headers={"traceparent": TRACEPARENT})
    spans = by_name(obs_capture)
    assert spans["GET /items/<int:item_id>"]["parent_id"] == "00f067aa0ba902b7"
    assert {s["trace_id"] for s in spans.values()} == {"4bf92f3577b34da6a3ce929d0e0e4736"}


def test_consecutive_requests_are_separate_traces(obs_capture: Capture) -> None:
    client = make_app().test_client()
    get(client, "/items/1")
    get(client, "/items/2")
    servers = [r for r in obs_capture.spans if r["name"] == "GET /items/<int:item_id>"]
    assert [s["parent_id"] for s in servers] == [None, None]
    assert servers[0]["trace_id"] != servers[1]["trace_id"]


def test_two_apps_name_their_own_routes(obs_capture: Capture) -> None:
    first, second = make_app(), Flask("second")
    second.add_url_rule("/other/<name>", "other", lambda name: name)
    second.wsgi_app = ObsWSGIMiddleware(second.wsgi_app)  # type: ignore[method-assign]
    get(first, "/items/3")
    get(second, "/other/x")
    names = obs_capture.names
    assert "GET /items/<int:item_id>" in names and "GET /other/<name>" in names


def test_ratio_zero_exports_nothing_but_counts_every_request() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        client = make_app().test_client()
        for i in range(4):
            get(client, f"/items/{i}")
        get(client, "/forbidden")
        assert cap.records == []
        assert cap.metrics["http.server.requests"].points == {
            ("GET", "/items/<int:item_id>", "2xx"): 4,
            ("GET", "/forbidden", "4xx"): 1,
        }


def test_no_ip_cookie_or_authorization_value_in_exported_jsonl(
    jsonl_config: Callable[..., Path],
) -> None:
    path = jsonl_config(http=HttpOptions(capture_headers=(*SECRETS, "User-Agent")))
    client = make_app(testing=False).test_client()
    env = {"REMOTE_ADDR": CLIENT_IP}
    for url in ("/items/1", "/fail", "/nowhere", "/stream", "/items/2?token=t0k3n"):
        get(client, url, headers={**SECRETS, "User-Agent": "probe/1"}, environ_base=env)
    assert obs.flush(5)
    text = path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    servers = [r for r in records if r.get("span.kind") == "server"]
    assert len(servers) == 5
    assert all(r["http.request.header.user-agent"] == "probe/1" for r in servers)
    for secret in (*SECRETS.values(), "SECRET", CLIENT_IP, "198.51.100", "t0k3n"):
        assert secret not in text
