"""Point events (``obs.emit``, an application log event, job lifecycle) exported as OTLP log
records, over HTTP and gRPC, reach the real collector (rotel) with the trace and span ids of the
span they happened in; read from rotel's debug log (Phoenix takes no logs).

Verified with rotel 0.0.1a15.
"""

from __future__ import annotations

import time
import uuid

import pytest

import obs_middleware as obs
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
