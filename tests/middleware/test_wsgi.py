"""WSGI middleware with plain WSGI apps (werkzeug's test runner): the same span and record as
ASGI, ended when the server closes the body."""

from __future__ import annotations

import contextvars
import gc
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

import obs_middleware as obs
from obs_middleware._core.config import HttpOptions
from obs_middleware.middleware import ObsWSGIMiddleware
from obs_middleware.testing import Capture, capture

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
Environ = dict[str, Any]


def environ_for(
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    **extra: Any,
) -> Environ:
    environ = EnvironBuilder(path=path, method=method, headers=headers, data=data).get_environ()
    environ.update(extra)
    return environ


def call(
    app: Callable[..., Iterable[bytes]], environ: Environ
) -> tuple[str, dict[str, str], bytes]:
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    return status, dict(headers), b"".join(body)


def routed(template: str | None, status: str = "200 OK", body: bytes = b"ok") -> Any:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        if template is not None:
            environ["obs.route"] = template
        start_response(status, [("Content-Type", "text/plain")])
        return [body]

    return app


def test_server_span_whole_record(obs_capture: Capture) -> None:
    status, headers, body = call(
        ObsWSGIMiddleware(routed("/items/<int:item_id>")), environ_for("/items/42?token=s3cret")
    )
    assert (status, body) == ("200 OK", b"ok")
    assert headers["x-request-id"] == "00000000000000000000000000000001"
    assert obs_capture.records == [
        {
            "type": "span",
            "name": "GET /items/<int:item_id>",
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
            "http.route": "/items/<int:item_id>",
            "http.status_code": 200,
            "http.request_size": None,
            "http.response_size": 2,
        }
    ]


def test_unmatched_route_is_named_by_method_only(obs_capture: Capture) -> None:
    call(ObsWSGIMiddleware(routed(None, "404 Not Found")), environ_for("/nope"))
    record = obs_capture.span("GET")
    assert (record["http.route"], record["url.path"], record["http.status_code"]) == (
        None,
        "/nope",
        404,
    )


def test_exception_is_recorded_as_500_reraised_and_scrubbed(obs_capture: Capture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        environ["obs.route"] = "/pay"
        raise RuntimeError("upstream rejected Bearer abcdefghijklmnopqrstuvwxyz")

    with pytest.raises(RuntimeError):
        call(ObsWSGIMiddleware(app), environ_for("/pay", "POST"))
    record = obs_capture.span("POST /pay")
    assert (record["status"], record["http.status_code"], record["error_type"]) == (
        "error",
        500,
        "RuntimeError",
    )
    assert record["error_message"] == "upstream rejected [REDACTED]"
    assert obs.current_span() is None


def test_generator_app_raising_before_start_response_is_a_500(obs_capture: Capture) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        raise RuntimeError("lazy failure")
        yield b""  # pragma: no cover - makes this a generator

    with pytest.raises(RuntimeError):
        call(ObsWSGIMiddleware(app), environ_for())
    record = obs_capture.span("GET")
    assert (record["status"], record["http.status_code"]) == ("error", 500)


def test_streamed_body_counts_all_chunks_and_span_ends_on_close(obs_capture: Capture) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"aaa"
            yield b"bb"
            yield b"c"

        def close(self) -> None:
            closed.append(True)

    def app(environ: Environ, start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    result = ObsWSGIMiddleware(app)(environ_for("/stream"), lambda status, headers, exc=None: None)
    assert obs.current_span() is None  # not current while the server iterates
    chunks = iter(result)
    assert next(chunks) == b"aaa"
    assert obs_capture.records == []  # still open
    assert list(chunks) == [b"bb", b"c"]
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]  # a second close does not end it twice
    assert closed == [True, True]
    (record,) = obs_capture.spans
    assert record["http.response_size"] == 6


def test_span_ends_once_content_length_bytes_are_out_before_the_body_is_exhausted(
    obs_capture: Capture,
) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"aaa"
        yield b"bb"

    result = ObsWSGIMiddleware(app)(environ_for(), lambda status, headers, exc=None: None)
    chunks = iter(result)
    assert next(chunks) == b"aaa"
    assert obs_capture.records == []  # 3 of 5 bytes
    assert next(chunks) == b"bb"
    (record,) = obs_capture.spans  # ended with the last byte, no StopIteration or close yet
    assert record["http.response_size"] == 5
    assert list(chunks) == []
    result.close()  # type: ignore[attr-defined]
    assert len(obs_capture.spans) == 1


def test_ended_span_is_not_changed_when_an_abandoned_body_is_collected(
    obs_capture: Capture,
) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"one", b"two"]

    result = ObsWSGIMiddleware(app)(environ_for(), lambda status, headers, exc=None: None)
    chunks = iter(result)
    assert next(chunks) == b"one"
    result.close()  # type: ignore[attr-defined]  # the server stops early and closes
    del chunks
    gc.collect()
    assert obs_capture.spans[0]["status"] == "ok"


def test_write_callable_bytes_are_counted(obs_capture: Capture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"12345")
        return [b"678"]

    written: list[bytes] = []
    result = ObsWSGIMiddleware(app)(environ_for(), lambda status, headers, exc=None: written.append)
    written.extend(result)
    result.close()  # type: ignore[attr-defined]
    assert written == [b"12345", b"678"]
    assert obs_capture.spans[0]["http.response_size"] == 8


def test_error_while_iterating_the_body_is_recorded(obs_capture: Capture) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"part"
        raise OSError("disk gone")

    with pytest.raises(OSError):
        call(ObsWSGIMiddleware(app), environ_for())
    record = obs_capture.span("GET")
    assert (record["status"], record["error_type"], record["http.status_code"]) == (
        "error",
        "OSError",
        200,
    )


def test_next_request_on_the_same_thread_is_not_nested(obs_capture: Capture) -> None:
    app = ObsWSGIMiddleware(routed("/"))
    call(app, environ_for())
    call(app, environ_for())
    first, second = obs_capture.spans
    assert second["parent_id"] is None
    assert first["trace_id"] != second["trace_id"]


def test_spans_in_the_app_are_children_of_the_server_span(obs_capture: Capture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        with obs.span("db.query"):
            pass
        return routed("/")(environ, start_response)

    call(ObsWSGIMiddleware(app), environ_for())
    child, server = obs_capture.spans
    assert child["parent_id"] == server["span_id"]


@pytest.mark.parametrize("path", ["/health", "/readyz"])
def test_excluded_paths_produce_no_span(obs_capture: Capture, path: str) -> None:
    _, headers, _ = call(ObsWSGIMiddleware(routed(path)), environ_for(path))
    assert "x-request-id" not in {k.lower() for k in headers}
    assert obs_capture.records == []
    assert obs_capture.metrics["http.server.requests"].points == {}


def test_spans_started_by_an_excluded_request_are_dropped_with_it(obs_capture: Capture) -> None:
    calls: list[str] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        with obs.span("health.check"):
            obs.emit("health.checked")
        if environ.get("QUERY_STRING") == "fail":
            raise RuntimeError("down")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = ObsWSGIMiddleware(app)
    assert call(middleware, environ_for("/health"))[2] == b"ok"
    with pytest.raises(RuntimeError, match="down"):
        call(middleware, environ_for("/health?fail"))
    assert calls == ["/health", "/health"]  # once per request, even when it raises
    assert obs_capture.records == []
    assert obs_capture.metrics["obs.dropped"].points == {("excluded_path",): 4}
    assert obs.current_span() is None


def test_valid_x_request_id_is_echoed(obs_capture: Capture) -> None:
    _, headers, _ = call(
        ObsWSGIMiddleware(routed("/")), environ_for(headers={"X-Request-ID": "req-7"})
    )
    assert headers["x-request-id"] == "req-7"
    assert obs_capture.spans[0]["request_id"] == "req-7"


def test_invalid_x_request_id_is_replaced_by_trace_id(obs_capture: Capture) -> None:
    _, headers, _ = call(
        ObsWSGIMiddleware(routed("/")), environ_for(HTTP_X_REQUEST_ID="bad value; drop")
    )
    assert headers["x-request-id"] == "00000000000000000000000000000001"


def test_incoming_traceparent_continues_the_trace(obs_capture: Capture) -> None:
    call(ObsWSGIMiddleware(routed("/")), environ_for(headers={"traceparent": TRACEPARENT}))
    record = obs_capture.spans[0]
    assert (record["trace_id"], record["parent_id"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )


@pytest.mark.parametrize("value", ["garbage", "00-" + "é" * 60, TRACEPARENT.upper()])
def test_invalid_traceparent_starts_a_fresh_trace(obs_capture: Capture, value: str) -> None:
    status, _, _ = call(ObsWSGIMiddleware(routed("/")), environ_for(HTTP_TRACEPARENT=value))
    assert status == "200 OK"
    assert obs_capture.spans[0]["parent_id"] is None


@pytest.mark.parametrize("first", [TRACEPARENT, "cc" + TRACEPARENT[2:] + "-future-field"])
def test_repeated_traceparent_joined_by_the_server_starts_a_fresh_trace(
    obs_capture: Capture, first: str
) -> None:
    # WSGI servers (wsgiref, werkzeug, gunicorn) join a repeated header's values with commas.
    joined = f"{first},{TRACEPARENT[:-4]}7-01"
    call(ObsWSGIMiddleware(routed("/")), environ_for(HTTP_TRACEPARENT=joined))
    assert obs_capture.spans[0]["parent_id"] is None


def test_tracestate_joined_by_the_server_is_kept_whole(obs_capture: Capture) -> None:
    seen: list[Any] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        seen.append(obs.current_span())
        return routed("/")(environ, start_response)  # type: ignore[no-any-return]

    environ = environ_for(HTTP_TRACEPARENT=TRACEPARENT, HTTP_TRACESTATE="foo=1,bar=2, rojo=1")
    call(ObsWSGIMiddleware(app), environ)
    assert seen[0].local.tracestate == "foo=1,bar=2,rojo=1"


def test_url_path_is_scrubbed_and_bounded(obs_capture: Capture) -> None:
    app = ObsWSGIMiddleware(routed(None))
    call(app, environ_for(PATH_INFO="/reset/sk-abcdefghijklmnopqrstuvwx"))
    call(app, environ_for(PATH_INFO="/x" * 50_000))
    scrubbed, bounded = obs_capture.spans
    assert scrubbed["url.path"] == "/reset/[REDACTED]"
    assert len(bounded["url.path"]) == 1025 and bounded["url.path"].endswith("…")


def test_request_size_from_content_length(obs_capture: Capture) -> None:
    call(ObsWSGIMiddleware(routed("/")), environ_for(method="POST", data=b"hello"))
    assert obs_capture.spans[0]["http.request_size"] == 5


def test_odd_content_length_never_leaks_a_span_into_the_next_request(obs_capture: Capture) -> None:
    app = ObsWSGIMiddleware(routed("/"))

    def two_requests_on_one_thread() -> None:
        status, _, _ = call(app, environ_for(CONTENT_LENGTH="²"))
        assert status == "200 OK"
        assert obs.current_span() is None
        call(app, environ_for())

    contextvars.copy_context().run(two_requests_on_one_thread)  # a leak stays in this test
    assert [r["parent_id"] for r in obs_capture.spans] == [None, None]


def test_sensitive_headers_and_client_ip_are_never_recorded() -> None:
    headers = {
        "User-Agent": "curl/8",
        "Authorization": "Basic dXNlcjpodW50ZXIy",
        "Cookie": "session=abcdef",
        "X-Api-Key": "key-123456",
        "X-Forwarded-For": "198.51.100.23",
    }
    options = HttpOptions(capture_headers=tuple(headers))
    with capture(http=options) as cap:
        call(
            ObsWSGIMiddleware(routed("/")), environ_for(headers=headers, REMOTE_ADDR="203.0.113.9")
        )
        record = cap.spans[0]
    assert record["http.request.header.user-agent"] == "curl/8"
    for secret in ("dXNlcjpodW50ZXIy", "abcdef", "key-123456", "198.51.100.23", "203.0.113.9"):
        assert secret not in repr(record)


def test_http_metrics_by_method_route_and_status_class(obs_capture: Capture) -> None:
    call(ObsWSGIMiddleware(routed("/a")), environ_for("/a"))
    call(ObsWSGIMiddleware(routed("/a", "500 Internal Server Error")), environ_for("/a"))
    call(ObsWSGIMiddleware(routed(None, "404 Not Found")), environ_for("/zzz", "DELETE"))
    assert obs_capture.metrics["http.server.requests"].points == {
        ("GET", "/a", "2xx"): 1,
        ("GET", "/a", "5xx"): 1,
        ("DELETE", "", "4xx"): 1,
    }
    assert obs_capture.metrics["http.server.active"].points == {("GET",): 0, ("DELETE",): 0}
    statuses = [r["status"] for r in obs_capture.spans]
    assert statuses == ["ok", "error", "ok"]


def test_unknown_methods_share_one_other_series_and_keep_the_original_on_the_span(
    obs_capture: Capture,
) -> None:
    app = ObsWSGIMiddleware(routed("/r"))
    for i in range(50):
        call(app, environ_for("/r", REQUEST_METHOD=f"M{i}"))
    call(app, environ_for("/r", method="PATCH"))
    counts = obs_capture.metrics["http.server.requests"].points
    assert counts == {("_OTHER", "/r", "2xx"): 50, ("PATCH", "/r", "2xx"): 1}
    first = obs_capture.spans[0]
    assert (first["name"], first["http.method"], first["http.request.method_original"]) == (
        "HTTP /r",
        "_OTHER",
        "M0",
    )


def test_http_metrics_are_exact_under_many_server_threads(obs_capture: Capture) -> None:
    app = ObsWSGIMiddleware(routed("/t"))
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            call(app, environ_for("/t"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics = obs_capture.metrics
    assert metrics["http.server.requests"].points == {("GET", "/t", "2xx"): 400}
    assert metrics["http.server.active"].points == {("GET",): 0}
    assert len(obs_capture.spans) == 400
    assert len({r["trace_id"] for r in obs_capture.spans}) == 400


def test_nested_middleware_yields_one_span(obs_capture: Capture) -> None:
    app = ObsWSGIMiddleware(ObsWSGIMiddleware(routed("/items/{id}")))
    for _ in range(2):
        status, headers, _ = call(app, environ_for("/items/1"))
        assert status == "200 OK"
        assert list(headers).count("x-request-id") == 1
    assert [r["name"] for r in obs_capture.spans] == ["GET /items/{id}"] * 2


def test_a_flask_app_wrapped_twice_connects_its_signals_once(obs_capture: Capture) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("twice")

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    app.wsgi_app = ObsWSGIMiddleware(ObsWSGIMiddleware(app.wsgi_app))  # type: ignore[method-assign]
    assert app.test_client().get("/boom").status_code == 500
    (record,) = obs_capture.spans
    assert record["http.route"] == "/boom"
    assert record["error_type"] == "RuntimeError"
    for signal in (flask.request_started, flask.got_request_exception):
        assert len(list(signal.receivers_for(app))) == 1


def test_an_app_marking_its_request_untraced_leaves_no_span_and_no_metrics(
    obs_capture: Capture,
) -> None:
    def scrape(environ: Environ, start_response: Any) -> list[bytes]:
        environ["obs.untraced"] = True  # as obs run's metrics route does
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    status, _, body = call(ObsWSGIMiddleware(scrape), environ_for("/metrics"))
    assert (status, body) == ("200 OK", b"ok")
    call(ObsWSGIMiddleware(routed("/traced")), environ_for("/traced"))
    assert [r["name"] for r in obs_capture.spans] == ["GET /traced"]
    points = obs_capture.metrics["http.server.duration"].points
    assert [labels[1] for labels in points] == ["/traced"]
