"""The instrumentation under test: obs-middleware, OpenTelemetry and dd-trace-py, each as a handle.

A handle sets its library up and answers ``flush()`` (export everything finished so far) and
``emitted()`` (how many spans reached its exporter), so a benchmark can check that "cheap" never
means "did nothing". Peers are imported inside their constructor only: importing one is part of
what its configuration costs and must not leak into the others.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import obs_middleware as obs


class ObsHandle:
    """obs-middleware configured with the jsonl exporter writing to a file (every span exported).

    ``export=False`` is a diagnostic: the finish hook does nothing, so what remains is the
    request-thread path.
    """

    def __init__(self, workdir: Path, *, export: bool = True) -> None:
        self.path = workdir / "obs.jsonl"
        # Every span, at any rate: these diagnostics price the export of each one (the default
        # adaptive export would keep ~100 traces a second of a tight loop).
        obs.configure(
            service="bench",
            exporters=[f"jsonl:{self.path}"],
            sampling=obs.SamplingOptions(traces_per_s=0),
        )
        if not export:
            from obs_middleware._core import span as _span

            _span.on_finish = lambda item: None
        self.flush = obs.flush

    def emitted(self) -> int:
        """Lines (records) in the jsonl file so far."""
        return count_lines(self.path)

    def records(self) -> list[dict[str, Any]]:
        """The exported records, parsed."""
        lines = self.path.read_bytes().splitlines() if self.path.exists() else []
        return [json.loads(line) for line in lines]


def count_lines(path: Path) -> int:
    """Newlines in ``path`` (0 if it does not exist yet)."""
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


class OtelHandle:
    """An OpenTelemetry SDK TracerProvider + BatchSpanProcessor feeding a counting exporter.

    The exporter drops the spans: an OTLP exporter's protobuf and HTTP work is not charged.
    """

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        counter = self

        class CountingExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                counter.count += len(spans)
                return SpanExportResult.SUCCESS

        self.count = 0
        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(CountingExporter()))

    def flush(self) -> None:
        """Export what the batch processor holds."""
        self.provider.force_flush()

    def emitted(self) -> int:
        """Spans the counting exporter received."""
        return self.count


def free_port() -> int:
    """A loopback TCP port nobody listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DD_ENV = {
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    "DD_CRASHTRACKING_ENABLED": "false",
    "DD_TRACE_STARTUP_LOGS": "false",
    "DD_SERVICE": "bench",
}


class DdtraceHandle:
    """dd-trace-py with its agent URL on an unused loopback port; counts finished spans.

    Its native writer encodes on the request thread; the failed sends to the absent agent run in
    its background thread.
    """

    def __init__(self) -> None:
        os.environ.update(DD_TRACE_AGENT_URL=f"http://127.0.0.1:{free_port()}", **DD_ENV)
        from ddtrace.trace import TraceFilter, tracer

        counter = self

        class CountingFilter(TraceFilter):
            def process_trace(self, trace: Any) -> Any:
                counter.count += len(trace)
                return trace

        self.count = 0
        self.tracer = tracer
        tracer.configure(trace_processors=[CountingFilter()])

    def flush(self) -> None:
        """Nothing to do: finished traces are counted on the request thread."""

    def emitted(self) -> int:
        """Spans in the traces that finished."""
        return self.count
