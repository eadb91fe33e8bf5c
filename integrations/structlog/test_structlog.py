"""structlog, configured for real: native JSON logging, the stdlib bridge (ProcessorFormatter)
and async log methods all carry the trace ids; warnings become span events, or are exported
through the pipeline (``ExportLogs``) from a real Starlette request.

Verified with structlog 26.1.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware._core.config import SamplingOptions
from obs_middleware.logs import ExportLogs, SpanEvents, add_trace_context
from obs_middleware.testing import Capture


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def native(out: io.StringIO) -> Any:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_trace_context,
            SpanEvents("warning"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_native_json_lines_carry_trace_ids_and_warnings_become_span_events(
    obs_capture: Capture,
) -> None:
    out = io.StringIO()
    log = native(out)
    structlog.contextvars.bind_contextvars(tenant="acme")
    log.info("before")
    with obs.span("request") as span:
        span.local.request_id = "req-1"
        obs.set_user("u-5")
        log.info("rendering", model="sdxl")
        log.warning("slow provider", seconds=12)
    before, rendering, slow = lines(out)
    assert before == {"tenant": "acme", "event": "before", "level": "info"}
    assert rendering == {
        "tenant": "acme",
        "model": "sdxl",
        "event": "rendering",
        "level": "info",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000001",
        "request_id": "req-1",
        "user_id": "u-5",
    }
    assert slow["level"] == "warning"
    (record,) = obs_capture.spans
    assert [(e["name"], e["level"], e["message"]) for e in record["events"]] == [
        ("log", "WARNING", "slow provider")
    ]


async def test_async_log_methods_keep_the_ids(obs_capture: Capture) -> None:
    out = io.StringIO()
    log = native(out)
    with obs.span("request"):
        await log.ainfo("from a worker thread")
    (line,) = lines(out)
    assert line["trace_id"] == "00000000000000000000000000000001"


def test_stdlib_records_rendered_by_structlog_carry_the_ids(obs_capture: Capture) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, add_trace_context],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    stdlib_logger = logging.getLogger("test.obs.structlog.bridge")
    stdlib_logger.addHandler(handler)
    stdlib_logger.setLevel(logging.INFO)
    stdlib_logger.propagate = False
    try:
        with obs.span("request"):
            stdlib_logger.info("from the stdlib")
    finally:
        stdlib_logger.removeHandler(handler)
    (line,) = lines(out)
    assert (line["event"], line["span_id"]) == ("from the stdlib", "0000000000000001")


# -- ExportLogs: structlog events exported through the pipeline -----------------------------------
def exporting(out: io.StringIO, level: str = "warning") -> Any:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.CallsiteParameterAdder(
                [
                    structlog.processors.CallsiteParameter.PATHNAME,
                    structlog.processors.CallsiteParameter.LINENO,
                    structlog.processors.CallsiteParameter.FUNC_NAME,
                ]
            ),
            add_trace_context,
            ExportLogs(level),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger().bind(logger="app.render")


def exported(cap: Capture) -> list[dict[str, Any]]:
    return [r for r in cap.events if r["name"] == "log"]


def render(request: Request) -> PlainTextResponse:
    log = structlog.get_logger().bind(logger="app.render")
    log.info("rendering", model="sdxl")
    log.warning("provider slow", token="abcdefghij0123456789")
    if request.query_params.get("private"):
        obs.mark_private()
        log.error("prompt rejected: my diary entry")
    try:
        raise TimeoutError("upstream api_key=sk-abcdefghijklmnopqrstuvwx timed out")
    except TimeoutError:
        log.exception("giving up with api_key=sk-abcdefghijklmnopqrstuvwx")
    return PlainTextResponse("ok")


async def get(path: str, headers: dict[str, str] | None = None) -> None:
    application = Starlette(routes=[Route("/render", render)])
    application.add_middleware(obs.ObsMiddleware)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get(path, headers=headers)).status_code == 200


async def test_warnings_in_a_request_reach_the_jsonl_output_with_its_trace_id(
    jsonl_config: Callable[..., Path],
) -> None:
    out = io.StringIO()
    exporting(out)
    path = jsonl_config(sampling=SamplingOptions(traces_per_s=0))
    await get("/render")
    assert obs.flush(10)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    (server,) = [r for r in records if r.get("span.kind") == "server"]
    warning, error = [r for r in records if r["name"] == "log"]
    assert {k: warning[k] for k in ("trace_id", "span_id")} == {
        k: server[k] for k in ("trace_id", "span_id")
    }
    assert (warning["log.level"], warning["log.logger"], warning["log.message"]) == (
        "WARNING",
        "app.render",
        "provider slow",  # the message is the event; other keys stay in the app's own log
    )
    assert (warning["code.function.name"], warning["code.file.path"]) == ("render", __file__)
    assert isinstance(warning["code.line.number"], int)
    assert (error["log.level"], error["log.message"]) == ("ERROR", "giving up with [REDACTED]")
    assert (error["exception.type"], error["exception.message"]) == (
        "TimeoutError",
        "upstream [REDACTED] timed out",
    )
    assert error["exception.stacktrace"].endswith(" in render")
    # the app's own output is untouched (format_exc_info ran after, as usual)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [
        "rendering",
        "provider slow",
        "giving up with api_key=sk-abcdefghijklmnopqrstuvwx",
    ]


async def test_unsampled_private_and_below_the_level(jsonl_config: Callable[..., Path]) -> None:
    exporting(io.StringIO(), level="error")
    path = jsonl_config()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await get("/render?private=1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"})
    assert obs.flush(10)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["name"], r["trace_id"], r["log.level"], r["log.message"]) for r in records] == [
        ("log", trace_id, "ERROR", "[PRIVATE]"),
        ("log", trace_id, "ERROR", "[PRIVATE]"),
    ]
    assert records[1]["exception.message"] == "[PRIVATE]"
    assert "diary" not in path.read_text()


def test_an_event_that_cannot_be_exported_passes_through_counted(obs_capture: Capture) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    out = io.StringIO()
    structlog.configure(
        processors=[ExportLogs(), structlog.processors.KeyValueRenderer(key_order=["n"])],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    log = structlog.get_logger()
    log.warning(Unprintable(), n=1)
    log.warning("fine", logger="obs_middleware.exporters")  # ours: skipped
    assert out.getvalue().startswith("n=1")
    assert exported(obs_capture) == []
    assert obs_capture.metrics["obs.dropped"].points == {("log_failed",): 1}


def test_structlog_through_stdlib_logging_is_exported_by_the_root_handler(
    obs_capture: Capture,
) -> None:
    """``configure(logs=)`` (as ``obs run`` sets it) with structlog's stdlib integration: the
    record holds the event dict; the export takes its event and exception, not its other keys."""
    structlog.configure(
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    )
    root = logging.getLogger()
    root.addHandler(handler)
    obs.configure(logs="warning")  # inside the capture: the root handler exports to it
    try:
        log = structlog.get_logger("app.bridge")
        with obs.span("request"):
            log.warning("provider slow", user_email="bob@example.com")
            try:
                raise TimeoutError("upstream timed out")
            except TimeoutError:
                log.exception("giving up")
    finally:
        obs.configure(logs="off")
        root.removeHandler(handler)
    warning, error = exported(obs_capture)
    assert (warning["log.logger"], warning["log.message"]) == ("app.bridge", "provider slow")
    assert "bob@example.com" not in json.dumps(obs_capture.records)
    assert (error["log.message"], error["exception.type"]) == ("giving up", "TimeoutError")
    assert json.loads(out.getvalue().splitlines()[0])["user_email"] == "bob@example.com"
