"""structlog, configured for real: native JSON logging, the stdlib bridge (ProcessorFormatter)
and async log methods all carry the trace ids; warnings become span events.

Verified with structlog 26.1.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import obs_middleware as obs
from obs_middleware.logs import SpanEvents, add_trace_context
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
