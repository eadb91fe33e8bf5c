"""Application logs through the pipeline: ``configure(logs="warning")`` on a real Starlette app
behind ``ObsMiddleware``, exported as JSON lines with the request's trace id."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import events
from obs_middleware._core.config import PipelineOptions, SamplingOptions
from obs_middleware._core.metrics import registry

log = logging.getLogger("app.routes")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"


async def warn(request: Request) -> PlainTextResponse:
    log.warning("provider slow for %s", request.query_params.get("model", "?"))
    log.info("below the level")
    return PlainTextResponse("ok")


def sync_warn(request: Request) -> PlainTextResponse:  # Starlette's threadpool, copied context
    log.error("sync handler: token=abcdef0123456789 rejected")
    return PlainTextResponse("ok")


async def private(request: Request) -> PlainTextResponse:
    obs.mark_private()
    log.warning("moderation flagged prompt %r", "my diary entry")
    return PlainTextResponse("ok")


async def ours(request: Request) -> PlainTextResponse:
    logging.getLogger("obs_middleware.test").warning("ours: never exported")
    return PlainTextResponse("ok")


def app() -> Starlette:
    routes = [
        Route("/warn", warn),
        Route("/sync", sync_warn),
        Route("/private", private),
        Route("/ours", ours),
    ]
    application = Starlette(routes=routes)
    application.add_middleware(obs.ObsMiddleware)
    return application


async def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


def read(path: Path) -> list[dict[str, Any]]:
    assert obs.flush(10)
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _root_level() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # the app logs at INFO; the handler's level decides
    yield
    root.setLevel(level)


async def test_a_warning_in_a_request_reaches_the_jsonl_output_with_its_trace_id(
    jsonl_config: Callable[..., Path],
) -> None:
    path = jsonl_config(logs="warning", sampling=SamplingOptions(traces_per_s=0))
    assert (await get("/warn?model=sdxl")).status_code == 200
    assert (await get("/sync")).status_code == 200
    records = read(path)
    servers = [r for r in records if r["type"] == "span" and r.get("span.kind") == "server"]
    logs = [r for r in records if r["name"] == "log"]
    assert [(r["log.level"], r["log.logger"], r["log.message"]) for r in logs] == [
        ("WARNING", "app.routes", "provider slow for sdxl"),
        ("ERROR", "app.routes", "sync handler: [REDACTED] rejected"),
    ]
    assert [r["trace_id"] for r in logs] == [r["trace_id"] for r in servers]
    assert [r["span_id"] for r in logs] == [r["span_id"] for r in servers]
    assert [r["code.function.name"] for r in logs] == ["warn", "sync_warn"]


async def test_an_unsampled_requests_warning_is_still_exported(
    jsonl_config: Callable[..., Path],
) -> None:
    path = jsonl_config(logs="warning")
    await get("/warn?model=flux", headers={"traceparent": UNSAMPLED})
    (record,) = read(path)  # the request's spans are sampled out, its log is not
    assert (record["name"], record["trace_id"], record["log.message"]) == (
        "log",
        TRACE_ID,
        "provider slow for flux",
    )


async def test_private_requests_and_our_loggers(jsonl_config: Callable[..., Path]) -> None:
    path = jsonl_config(logs="warning", sampling=SamplingOptions(traces_per_s=0))
    await get("/private")
    await get("/ours")
    (record,) = [r for r in read(path) if r["name"] == "log"]
    assert (record["log.logger"], record["log.message"]) == ("app.routes", "[PRIVATE]")
    assert "diary" not in path.read_text()


async def test_with_logs_off_no_log_is_exported(jsonl_config: Callable[..., Path]) -> None:
    path = jsonl_config(sampling=SamplingOptions(traces_per_s=0))  # logs: off, the default
    await get("/warn")
    assert [r["name"] for r in read(path)] == ["GET /warn"]


class Broken:
    """An exporter that fails every batch."""

    name = "broken"

    def export(self, records: Any) -> None:
        raise OSError("disk full")

    def flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


async def test_a_failing_exporter_or_event_handler_never_reaches_the_app() -> None:
    def broken_handler(name: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    registry.reset()
    config = _setup.build_config(
        exporters=[Broken()],
        logs="warning",
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
    )
    events.attach("broken-sync", "log", broken_handler, sync=True)
    events.attach("broken-async", "log", broken_handler)
    try:
        with _setup.scoped(config):
            response = await get("/warn")
            assert (response.status_code, response.text) == (200, "ok")
            assert obs.flush(10)
            dropped = registry.snapshot()["obs.dropped"].points
    finally:
        for handler_id in ("broken-sync", "broken-async"):
            with contextlib.suppress(KeyError):
                events.detach(handler_id)
    # both records (the server span and the log) counted, nothing raised into the request
    assert dropped == {("exporter_error:broken",): 2}
