"""OTLP log records of point events (``_otlp_logs``): ``obs.emit``, job lifecycle and the ``log``
events of application logs, posted to ``/v1/logs`` and decoded with the official classes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

import obs_middleware as obs
from obs_middleware._core import span as _span
from obs_middleware._delivery import DeliveryOptions
from obs_middleware._record import Resource, to_records
from obs_middleware.exporters.otlp import OTLPExporter

from .test_otlp import Collector

RESOURCE = Resource("svc", "prod", "1.0")


@pytest.fixture
def receiver() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


@pytest.fixture
def finished(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    items: list[Any] = []
    monkeypatch.setattr(_span, "on_finish", items.append)
    return items


def emitted(finished: list[Any]) -> tuple[_span.Span, _span.Span]:
    """A request span with a log event, a job inside it, and an event outside any trace."""
    with _span.Span("POST /upload", {}, "server") as root:
        root.local.user_id = "u-7"
        _span.emit(
            "log",
            **{
                "log.level": "ERROR",
                "log.logger": "app.db",
                "log.message": "query failed",
                "exception.type": "OperationalError",
                "exception.message": "db down",
                "code.line.number": 42,
            },
        )
        with pytest.raises(RuntimeError), obs.job("job-1", service_type="resize") as job:
            raise RuntimeError("no disk")
    _span.emit("cache.cleared", _parent=None, entries=3)
    return root, job.span


def records_of(requests: list[ExportLogsServiceRequest]) -> list[tuple[str, LogRecord]]:
    """(scope name, log record) of every log record received."""
    return [
        (scope_logs.scope.name, record)
        for request in requests
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]


def attributes(record: LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in record.attributes:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field else None
    return out


@pytest.mark.parametrize("path", ["spans", "records"])
def test_point_events_are_log_records_in_their_trace(
    receiver: Collector, finished: list[Any], path: str
) -> None:
    root, job = emitted(finished)
    exporter = OTLPExporter(receiver.url, metrics=False)
    if path == "spans":
        exporter.export_spans(finished, RESOURCE)
    else:
        exporter.bind(RESOURCE)
        exporter.export(to_records(finished, RESOURCE))
    (request,) = receiver.logs
    (resource_logs,) = request.resource_logs
    resource = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
    assert resource["service.name"] == "svc" and resource["service.version"] == "1.0"
    by_name = {
        attributes(r).get("event.name", "log"): (scope, r) for scope, r in records_of(receiver.logs)
    }
    assert sorted(by_name) == [
        "cache.cleared",
        "job.failed",
        "job.received",
        "job.started",
        "log",
    ]
    scope, log = by_name["log"]
    assert scope == "app.db"  # the logger, where OTel's logging bridge puts it
    assert (log.severity_text, log.severity_number) == ("ERROR", 17)
    assert log.body.string_value == "query failed"
    assert log.trace_id == root.trace_id.to_bytes(16, "big")
    assert log.span_id == root.span_id.to_bytes(8, "big")
    assert log.flags == 1 and log.event_name == ""
    assert attributes(log) == {
        "enduser.id": "u-7",
        "exception.type": "OperationalError",
        "exception.message": "db down",
        "code.line.number": 42,
    }
    scope, failed = by_name["job.failed"]
    assert scope == "obs_middleware"
    assert failed.event_name == "job.failed"
    assert (failed.severity_text, failed.severity_number) == ("ERROR", 17)
    assert failed.span_id == job.span_id.to_bytes(8, "big")
    failed_attrs = attributes(failed)
    assert failed_attrs["error.type"] == "RuntimeError"
    assert failed_attrs["error.message"] == "no disk"
    assert failed_attrs["obs.status"] == "error"
    assert failed_attrs["job.id"] == "job-1" and failed_attrs["duration_ms"] >= 0
    started = by_name["job.started"][1]
    assert (started.severity_text, started.severity_number) == ("INFO", 9)
    outside = by_name["cache.cleared"][1]
    assert outside.trace_id == b"" and outside.span_id == b"" and outside.flags == 0
    assert attributes(outside) == {"event.name": "cache.cleared", "entries": 3}
    assert outside.time_unix_nano > 0
    assert not [k for _, r in records_of(receiver.logs) for k in attributes(r) if "host" in k]


@pytest.mark.parametrize(
    ("level", "text", "number"),
    [
        ("DEBUG", "DEBUG", 5),
        ("INFO", "INFO", 9),
        ("WARNING", "WARN", 13),
        ("ERROR", "ERROR", 17),
        ("CRITICAL", "FATAL", 21),
        ("CUSTOM", "CUSTOM", 0),
    ],
)
def test_log_levels_map_as_the_otel_logging_bridge(
    receiver: Collector, finished: list[Any], level: str, text: str, number: int
) -> None:
    _span.emit("log", _parent=None, **{"log.level": level, "log.message": "m"})
    exporter = OTLPExporter(receiver.url, metrics=False)
    exporter.export_spans(finished, RESOURCE)
    ((scope, record),) = records_of(receiver.logs)
    assert (record.severity_text, record.severity_number) == (text, number)
    assert scope == "obs_middleware"  # no logger named


def test_logs_false_sends_no_events_and_spans_still_go(
    receiver: Collector, finished: list[Any]
) -> None:
    emitted(finished)
    exporter = OTLPExporter(receiver.url, metrics=False, logs=False)
    exporter.export_spans(finished, RESOURCE)
    assert receiver.logs == [] and len(receiver.traces) == 1


def test_undelivered_events_have_a_spool_of_their_own_and_replay(
    receiver: Collector, finished: list[Any], tmp_path: Any
) -> None:
    emitted(finished)
    options = DeliveryOptions(spool_dir=str(tmp_path), max_attempts=1)
    receiver.script = [503, 503]  # the spans' request, then the logs'
    exporter = OTLPExporter(receiver.url, metrics=False, delivery=options)
    exporter.export_spans(finished, RESOURCE)
    assert receiver.logs == [] and receiver.traces == []
    assert [p.name for p in (tmp_path / "logs").iterdir()]  # events: their own spool
    exporter.flush()  # the collector answers: both spools replay, each to its own path
    assert len(records_of(receiver.logs)) == 5
    assert len(receiver.traces) == 1
    exporter.shutdown()
