"""Export throughput paths: finished spans -> the export worker's loop -> one exporter, one core.

``export_path(path, workdir)`` builds one path of ``EXPORT_PATHS``: its stages (``EXPORT_STAGES``),
each exporting the same finished spans, timed by ``_harness.py throughput`` on the calling thread.
Network exporters talk to in-process stand-ins answering 200, so no socket or HTTP work is charged:
what is timed ends with the bytes the exporter hands its connection.
"""

# Exporters with optional dependencies are imported on use.
# ruff: noqa: PLC0415

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A round exports this many batches of the pipeline's default size (20,480 spans); OTLP a quarter
# of that (its SDK stage, kept for comparison, is ~10x slower).
EXPORT_BATCHES = 40
EXPORT_STAGES = {
    "full": "finished spans -> the export worker's loop -> exporter (jsonl, HTTP: to_records, "
    "export; Tinybird, ClickHouse, OTLP: export_spans)",
    "encode": "records prebuilt -> exporter.export",
    "ndjson": "finished spans -> span_rows -> encode_rows (NDJSON bytes, no gzip)",
    "spans": "finished spans -> SpanEncoder.encode -> request protobuf bytes (no HTTP)",
    "sdk": "records prebuilt -> to_otel_spans -> the SDK's protobuf bytes (the former path)",
}
# path -> (what it is, its stages in the order they run each round)
EXPORT_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "jsonl": ("jsonl exporter writing to a file", ("full", "encode")),
    "tinybird": (
        "Tinybird exporter: NDJSON rows, gzip, delivery; the Events API answered in-process",
        ("full", "encode", "ndjson"),
    ),
    "clickhouse": (
        "ClickHouse exporter: JSONEachRow rows, delivery (default: no gzip); answered in-process",
        ("full",),
    ),
    "otlp": (
        "OTLP/HTTP exporter as sent: finished spans, protobuf bytes handed to its HTTP client "
        "(answered in-process); metrics off",
        ("full", "spans", "sdk"),
    ),
    "http": (
        "HTTP exporter (Fluent Bit in_http): a JSON array per batch, delivery; answered "
        "in-process (measured, not gated: the issue gates the four above)",
        ("full", "encode"),
    ),
}


def export_mix(n: int) -> list[Any]:
    """``n`` finished spans in finish order: per request an AI client span, then its HTTP root.

    The root carries 3 HTTP attributes, user, tier and request id; the AI span 7 attributes, one
    of them uncatalogued (Tinybird's ``attributes`` column).
    """
    from obs_middleware._core import span as _span

    finished: list[Any] = []
    _span.on_finish = finished.append  # exporting is what the stages time, not this
    for i in range(n // 2):
        with _span.Span(
            "POST /v1/images",
            {"http.method": "POST", "http.route": "/v1/images", "http.status_code": 200},
            "server",
        ) as root:
            root.local.user_id = f"user-{i % 100}"
            root.local.tier = "pro"
            root.local.request_id = f"req-{i}"
            with _span.Span(
                "ai.request",
                {
                    "ai.provider": "replicate",
                    "ai.model": "black-forest-labs/flux-schnell",
                    "ai.operation": "run",
                    "ai.queue_ms": 120.5,
                    "ai.image_count": 1,
                    "cost.usd": 0.003,
                    "cost.pricing_version": "2026-11",
                },
                "client",
            ):
                pass
    return finished


class File:
    """The jsonl exporter's output file (``clear()`` between rounds, ``lines()`` to check)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def clear(self) -> None:
        os.truncate(self.path, 0)

    def lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines()


class EventsApi:
    """Stands in for an ``HttpTransport``: every POST is answered 200 in-process, bodies kept.

    ``answer``: the body of every answer (Tinybird's Events API reports its row counts).
    """

    answer = b'{"successful_rows":512,"quarantined_rows":0}'

    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, Mapping[str, str]]] = []

    def clear(self) -> None:
        self.bodies.clear()

    def post(self, path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Any:
        from obs_middleware.exporters.http import Response

        self.bodies.append((body, headers))
        return Response(200, {}, self.answer)

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def lines(self) -> list[bytes]:
        return [
            line
            for body, headers in self.bodies
            for line in (
                gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
            ).splitlines()
        ]


class FluentBit(EventsApi):
    """Stands in for Fluent Bit's HTTP input: bodies are JSON arrays, one record each line."""

    answer = b""

    def lines(self) -> list[bytes]:
        return [json.dumps(rec).encode() for line in super().lines() for rec in json.loads(line)]


@dataclass
class ExportPath:
    """One export path: its stages (``EXPORT_STAGES`` keys), each exporting ``spans`` spans.

    ``reset()`` runs before every stage, untimed: it requeues the spans, forgets the trace ids'
    hex (``to_records`` caches it per trace, so every round formats it again) and empties the
    exporter's output.
    """

    stages: dict[str, Callable[[], None]]
    reset: Callable[[], None]
    spans: int
    check: Callable[[], None]
    notes: list[str] = field(default_factory=list)


def export_path(path: str, workdir: Path) -> ExportPath:
    """Build an export path of ``EXPORT_PATHS`` (``ImportError`` if OTLP's extra is absent)."""
    from obs_middleware._core.config import PipelineOptions
    from obs_middleware._pipeline import Pipeline
    from obs_middleware._record import Resource, to_records

    if path not in EXPORT_PATHS:
        raise ValueError(f"unknown export path {path!r} (known: {tuple(EXPORT_PATHS)})")
    size = PipelineOptions().batch_size
    n = size * (EXPORT_BATCHES // 4 if path == "otlp" else EXPORT_BATCHES)
    spans = export_mix(n)
    resource = Resource("bench", "production", "1.0.0")
    batches = [to_records(spans[i : i + size], resource) for i in range(0, n, size)]
    stages: dict[str, Callable[[], None]] = {}
    notes: list[str] = []
    out: Any
    exporter: Any
    if path == "jsonl":
        from obs_middleware.exporters.jsonl import JsonlExporter

        out = File(workdir / "throughput.jsonl")
        exporter = JsonlExporter(out.path)
    elif path == "otlp":
        out, exporter, stages = _otlp(batches, spans, size)
    elif path == "http":
        from obs_middleware.exporters.http import HttpExporter

        out = FluentBit()
        exporter = HttpExporter("http://127.0.0.1:9880", tag="bench")
        exporter.transport = out
    else:
        from obs_middleware.exporters._rows import encode_rows, span_rows
        from obs_middleware.exporters.clickhouse import ClickHouseExporter
        from obs_middleware.exporters.tinybird import TinybirdExporter

        out = EventsApi()
        exporter = TinybirdExporter(token="bench") if path == "tinybird" else ClickHouseExporter()
        exporter.transport = out
        notes.append(f"exporter gzip {'on' if exporter.compress else 'off'}")

        def ndjson() -> None:
            for i in range(0, n, size):
                encode_rows(span_rows(spans[i : i + size], resource, packed=True))

        if path == "tinybird":
            stages["ndjson"] = ndjson
    pipeline = Pipeline([exporter], resource, queue_size=n, batch_size=size, interval_s=3600)

    def reset() -> None:
        for s in spans:
            s.local.trace_hex = None
        pipeline.queue.clear()  # the stages with prebuilt records leave it full
        pipeline.queue.extend(spans)
        out.clear()

    def full() -> None:
        pipeline._drain()  # the export worker's loop: batches, records or rows, every exporter
        exporter.flush()

    def encode() -> None:
        for records in batches:
            exporter.export(records)
        exporter.flush()

    def check() -> None:
        reset()
        full()
        lines = out.lines()
        assert len(lines) == n, (path, len(lines), n)
        if path == "otlp":  # every span took the protobuf writer, none the record path
            assert exporter._encoder.fallbacks == 0
        if path != "otlp":
            from obs_middleware.exporters._rows import row

            expected = batches[0][0] if path in ("jsonl", "http") else row(batches[0][0])
            assert json.loads(lines[0]) == expected, (lines[0], expected)

    wanted = EXPORT_PATHS[path][1]
    every = {"full": full, "encode": encode, **stages}
    return ExportPath({k: every[k] for k in wanted}, reset, n, check, notes)


class _Answer200:
    """A ``requests`` transport adapter answering every request 200 in-process, bodies kept.

    Mounted on the OTLP exporter's session, so the SDK encodes, serializes and prepares each
    request as it would to send it, and only the socket is left out.
    """

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        import requests

        self.bodies.append(request.body)
        response = requests.Response()
        response.status_code = 200
        response._content = b""
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        pass

    def clear(self) -> None:
        self.bodies.clear()

    def lines(self) -> list[bytes]:
        """One item per span received (the check counts them)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        names = []
        for body in self.bodies:
            message = ExportTraceServiceRequest.FromString(body)
            for rs in message.resource_spans:
                for ss in rs.scope_spans:
                    names += [s.name.encode() for s in ss.spans]
        return names


def _otlp(
    batches: list[list[dict[str, Any]]], spans: list[Any], size: int
) -> tuple[_Answer200, Any, dict[str, Callable[[], None]]]:
    """The OTLP exporter on an in-process session, its encoding alone, and the SDK's encoding."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from obs_middleware._record import Resource
    from obs_middleware.exporters import otlp as otlp_module
    from obs_middleware.exporters.otlp import OTLPExporter, _Times, to_otel_spans

    answer = _Answer200()
    make_session = otlp_module._session

    def session(*args: Any) -> Any:
        s = make_session(*args)
        s.mount("http://", answer)
        return s

    otlp_module._session = session  # the exporter makes its session in __init__
    try:
        exporter = OTLPExporter("http://127.0.0.1:9", metrics=False)
    finally:
        otlp_module._session = make_session
    times = _Times()
    exporter.bind(Resource("bench", "production", "1.0.0"))  # as the pipeline does

    def encode() -> None:
        for i in range(0, len(spans), size):
            exporter._request(exporter._encoder.encode(spans[i : i + size]))

    def sdk() -> None:
        for records in batches:
            encode_spans(to_otel_spans(records, exporter.resource, times)).SerializeToString()

    return answer, exporter, {"spans": encode, "sdk": sdk}
