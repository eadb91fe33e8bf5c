"""Litestar ObsPlugin, driven by direct ASGI calls: procedure attributes on the request span,
invalid_input with field paths, errors, per-procedure metrics, slow dependency/guard spans, and
instrument_all() for apps created later."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from litestar import Litestar, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel

import obs_middleware as obs
from obs_middleware._core.config import HttpOptions
from obs_middleware.middleware import litestar as obs_litestar
from obs_middleware.middleware.litestar import ObsPlugin, _type_name
from obs_middleware.testing import Capture

Message = dict[str, Any]


class ImageIn(BaseModel):
    prompt: str
    steps: int


class ImageOut(BaseModel):
    id: int


async def slow_model() -> str:
    await asyncio.sleep(0)
    return "sdxl"


async def must_be_admin(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    if connection.headers.get("x-role") != "admin":
        raise NotAuthorizedException()


@post("/", operation_id="createImage")
async def create_image(data: JSONBody[ImageIn]) -> ImageOut:
    return ImageOut(id=len(data.prompt))


@get("/{image_id:int}", dependencies={"model": Provide(slow_model)})
async def get_image(image_id: FromPath[int], model: NamedDependency[str]) -> ImageOut:
    return ImageOut(id=image_id)


@get("/crash")
async def crash() -> None:
    raise RuntimeError("disk full")


@get("/admin", guards=[must_be_admin])
async def admin() -> str:
    return "ok"


@get("/ping")
async def ping() -> str:
    return "pong"


def make_app(**plugin_kw: Any) -> Litestar:
    images = Router(path="/images", route_handlers=[create_image, get_image, crash, admin])
    return Litestar(
        route_handlers=[Router(path="/v1", route_handlers=[images]), ping],
        plugins=[ObsPlugin(**plugin_kw)],
        logging_config=None,
        openapi_config=None,
    )


async def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def procedure_attrs(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k.startswith("procedure.")}


@pytest.fixture(autouse=True)
def no_hooks_left() -> Iterator[None]:
    yield
    obs_litestar.unpatch()


async def test_request_span_carries_the_procedure(obs_capture: Capture) -> None:
    app = make_app()
    assert await call(app, "POST", "/v1/images", b'{"prompt": "cat", "steps": 30}') == 201
    record = obs_capture.span("POST /v1/images")
    assert (record["status"], record["http.route"], record["http.status_code"]) == (
        "ok",
        "/v1/images",
        201,
    )
    assert procedure_attrs(record) == {
        "procedure.name": "createImage",
        "procedure.router": "/v1/images",
        "procedure.input": "ImageIn",
        "procedure.output": "ImageOut",
    }


async def test_invalid_body_is_invalid_input_with_field_paths_never_values(
    obs_capture: Capture,
) -> None:
    app = make_app()
    body = b'{"prompt": ["sk-not-a-prompt-0123456789abcdef"], "steps": "many"}'
    assert await call(app, "POST", "/v1/images", body) == 400
    record = obs_capture.span("POST /v1/images")
    assert (record["status"], record["error_type"], record["procedure.invalid_fields"]) == (
        "invalid_input",
        "ValidationException",
        ["prompt", "steps"],
    )
    exported = json.dumps(record)
    assert "sk-not-a-prompt" not in exported
    assert "many" not in exported


async def test_malformed_json_is_invalid_input(obs_capture: Capture) -> None:
    assert await call(make_app(), "POST", "/v1/images", b"{nope") == 400
    record = obs_capture.span("POST /v1/images")
    assert (record["status"], "procedure.invalid_fields" in record) == ("invalid_input", False)


async def test_unhandled_exception_is_an_error_with_its_type(obs_capture: Capture) -> None:
    assert await call(make_app(), "GET", "/v1/images/crash") == 500
    record = obs_capture.span("GET /v1/images/crash")
    assert (record["status"], record["error_type"], record["error_message"]) == (
        "error",
        "RuntimeError",
        "disk full",
    )


async def test_client_errors_raised_as_http_exceptions_are_not_failures(
    obs_capture: Capture,
) -> None:
    assert await call(make_app(slow_ms=None), "GET", "/v1/images/admin") == 401
    record = obs_capture.span("GET /v1/images/admin")
    assert (record["status"], record["error_type"], record["http.status_code"]) == ("ok", None, 401)


async def test_metrics_are_kept_per_procedure(obs_capture: Capture) -> None:
    app = make_app()
    await call(app, "POST", "/v1/images", b'{"prompt": "a", "steps": 1}')
    await call(app, "POST", "/v1/images", b'{"prompt": "a", "steps": "x"}')
    await call(app, "GET", "/v1/images/7")
    await call(app, "GET", "/v1/images/crash")
    metrics = obs_capture.metrics
    assert metrics["procedure.calls"].points == {
        ("createImage",): 2,
        ("get_image",): 1,
        ("crash",): 1,
    }
    assert metrics["procedure.errors"].points == {
        ("createImage", "invalid_input"): 1,
        ("crash", "error"): 1,
    }
    assert set(metrics["procedure.duration"].points) == {
        ("createImage",),
        ("get_image",),
        ("crash",),
    }


async def test_slow_dependencies_and_guards_become_child_spans(obs_capture: Capture) -> None:
    app = make_app(slow_ms=0.5)  # the test clock advances 1 ms per reading
    await call(app, "GET", "/v1/images/3")
    await call(app, "GET", "/v1/images/admin", headers=((b"x-role", b"admin"),))
    assert obs_capture.names == [
        "litestar.dependencies",
        "GET /v1/images/{image_id}",
        "litestar.guards",
        "GET /v1/images/admin",
    ]
    deps, request, guards, admin_request = obs_capture.spans
    assert deps["parent_id"] == request["span_id"]
    assert guards["parent_id"] == admin_request["span_id"]


async def test_fast_steps_make_no_spans(obs_capture: Capture) -> None:
    app = make_app(slow_ms=1000)
    await call(app, "GET", "/v1/images/3")
    assert obs_capture.names == ["GET /v1/images/{image_id}"]


async def test_unmatched_path_is_traced_without_a_procedure(obs_capture: Capture) -> None:
    assert await call(make_app(), "GET", "/v1/nothing") == 404
    record = obs_capture.span("GET")
    assert (record["http.status_code"], procedure_attrs(record)) == (404, {})


async def test_excluded_paths_are_not_traced(obs_capture: Capture) -> None:
    app = make_app(http=HttpOptions(exclude_paths=("/ping",)))
    await call(app, "GET", "/ping")
    assert obs_capture.spans == []
    assert obs_capture.metrics["procedure.calls"].points == {}


async def test_instrument_all_adds_the_plugin_to_apps_created_afterwards(
    obs_capture: Capture,
) -> None:
    report = obs.instrument_all(only=["litestar"])
    assert report.patched == ["litestar"]
    try:
        app = Litestar(route_handlers=[ping], logging_config=None, openapi_config=None)
        explicit = Litestar(route_handlers=[ping], plugins=[ObsPlugin()], logging_config=None)
    finally:
        obs.uninstrument_all()
    assert sum(isinstance(p, ObsPlugin) for p in explicit.plugins) == 1
    await call(app, "GET", "/ping")
    assert obs_capture.names == ["GET /ping"]
    later = Litestar(route_handlers=[ping], logging_config=None, openapi_config=None)
    await call(later, "GET", "/ping")
    assert obs_capture.names == ["GET /ping"]  # uninstrumented: no plugin on new apps


def test_patch_is_idempotent_and_unpatch_restores_litestar() -> None:
    original = vars(Litestar)["__init__"]
    obs_litestar.patch()
    patched = vars(Litestar)["__init__"]
    obs_litestar.patch()
    assert vars(Litestar)["__init__"] is patched is not original
    obs_litestar.unpatch()
    obs_litestar.unpatch()
    assert vars(Litestar)["__init__"] is original


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (ImageOut, "ImageOut"),
        (list[ImageOut], "list[ImageOut]"),
        (dict[str, int], "dict[str, int]"),
        (ImageOut | None, "ImageOut"),
        (Optional[ImageOut], "ImageOut"),  # noqa: UP045
        (ImageIn | ImageOut, "ImageIn | ImageOut"),
        (None, None),
        (type(None), None),
        (Any, None),
    ],
)
def test_type_names_are_short(annotation: Any, name: str | None) -> None:
    assert _type_name(annotation) == name


async def test_a_hand_wrapped_app_gets_the_procedure_too(obs_capture: Capture) -> None:
    app = Litestar(route_handlers=[ping], logging_config=None, openapi_config=None)
    await call(obs.ObsMiddleware(app), "GET", "/ping")
    assert procedure_attrs(obs_capture.span("GET /ping")) == {
        "procedure.name": "ping",
        "procedure.router": "/",
        "procedure.output": "str",
    }


async def test_our_failure_never_leaves_the_request_span_open(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(handler: object) -> None:
        raise RuntimeError("bug in obs")

    monkeypatch.setattr(obs_litestar, "_describe", broken)
    assert await call(make_app(), "GET", "/v1/images/3") == 200
    record = obs_capture.span("GET /v1/images/{image_id}")
    assert (record["status"], record["http.status_code"]) == ("ok", 200)
