"""Point events (``obs.emit``, application logs, job lifecycle) exported as OTLP log
records, over HTTP and gRPC, reach the real collector (rotel) with the trace and span ids of the
span they happened in; read from rotel's debug log (Phoenix takes no logs).

Verified with rotel 0.0.1a15.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware import ObsMiddleware
from obs_middleware.exporters.otlp import OTLPExporter

from .conftest import exporting_to


def rotel_section(log_path: str, marker: str) -> str:
    """rotel's debug log from the resource of the logs that carry ``marker``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as f:
            log = f.read()
        if marker in log:
            return log[log.rindex("ResourceLog", 0, log.index(marker)) :]
        time.sleep(0.5)
    pytest.fail(f"rotel never logged {marker!r}")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_log_event_and_a_job_event_reach_the_collector_in_their_trace(otlp_peers, protocol):
    url = otlp_peers["OBS_OTLP_GRPC_URL" if protocol == "grpc" else "OBS_OTLP_URL"]
    exporter = OTLPExporter(url, protocol=protocol, metrics=False)
    marker = f"disk almost full ({protocol}, {uuid.uuid4().hex})"  # unique in rotel's log
    service = "logs-" + protocol.replace("/", "-")
    with exporting_to(exporter, service=service, environment="ci"):
        with obs.span("POST /upload", _kind="server") as root:
            obs.emit(
                "log",
                **{
                    "log.level": "WARNING",
                    "log.logger": "app.storage",
                    "log.message": marker,
                    "code.function.name": "upload",
                },
            )
            with obs.job(f"job-{protocol}", service_type="resize") as job:
                pass
        assert obs.flush(10)
    section = rotel_section(otlp_peers["OBS_ROTEL_LOG"], marker)
    trace_id = f"{root.trace_id:032x}"
    assert f"service.name: Str({service})" in section
    at = section.index(marker)
    log = section[section.rindex("ScopeLogs #", 0, at) : at + 600]
    assert "SeverityText: WARN\n" in log
    assert "SeverityNumber: SEVERITY_NUMBER_WARN(13)" in log
    assert f"Trace ID       : {trace_id}" in log
    assert f"Span ID        : {root.span_id:016x}" in log
    assert "InstrumentationScope app.storage" in log  # the logger, as OTel's logging bridge
    assert "code.function.name: Str(upload)" in log
    completed = section.index("event.name: Str(job.completed)")
    record = section[section.rindex("LogRecord #", 0, completed) :][:1500]
    assert "SeverityNumber: SEVERITY_NUMBER_INFO(9)" in record
    assert f"Trace ID       : {job.span.trace_id:032x}" in record
    assert f"Span ID        : {job.span.span_id:016x}" in record
    assert "job.id: Str(job-" in record
    assert "duration_ms: Double(" in record


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_warning_logged_in_a_request_reaches_the_collector_with_its_trace_id(
    otlp_peers, protocol
):
    # ``configure(logs="warning")``: the root LogHandler, a real Starlette app behind ObsMiddleware.
    url = otlp_peers["OBS_OTLP_GRPC_URL" if protocol == "grpc" else "OBS_OTLP_URL"]
    marker = f"payment provider slow ({protocol}, {uuid.uuid4().hex})"
    seen: dict[str, str] = {}

    async def pay(request: Request) -> PlainTextResponse:
        span = obs.current_span()
        assert span is not None
        seen["trace_id"] = span.trace_hex
        logging.getLogger("app.payments").warning("%s", marker)
        logging.getLogger("app.payments").info("below the level: not exported")
        return PlainTextResponse("ok")

    app = ObsMiddleware(Starlette(routes=[Route("/pay", pay, methods=["POST"])]))
    exporter = OTLPExporter(url, protocol=protocol, metrics=False)
    with exporting_to(exporter, service="logs-app", environment="ci", logs="warning"):

        async def call() -> int:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                return (await client.post("/pay")).status_code

        assert asyncio.run(call()) == 200
        assert obs.flush(10)
    section = rotel_section(otlp_peers["OBS_ROTEL_LOG"], marker)
    at = section.index(marker)
    log = section[section.rindex("ScopeLogs #", 0, at) : at + 600]
    assert "InstrumentationScope app.payments" in log
    assert "SeverityNumber: SEVERITY_NUMBER_WARN(13)" in log
    assert f"Trace ID       : {seen['trace_id']}" in log
    assert "below the level" not in section
