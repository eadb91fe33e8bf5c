"""Encoding throughput on one core: spans/s for JSON lines, Tinybird NDJSON rows, OTLP conversion.

Run: ``.venv/bin/python integrations/delivery/bench_encode.py [N]`` (not collected by pytest).
Records are made by the real pipeline path (spans → ``to_records``) with the attributes of a
typical HTTP + AI request; each encoder runs on the same batch of 512 records, best of 5 rounds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import obs_middleware as obs
from obs_middleware._core.span import Span
from obs_middleware._record import Record, Resource, to_records
from obs_middleware.exporters.jsonl import JsonlExporter
from obs_middleware.exporters.tinybird import encode_rows

BATCH = 512


def make_records(n: int) -> list[Record]:
    spans: list[Span] = []
    for i in range(n // 2):
        with Span(
            "POST /v1/images",
            {"http.method": "POST", "http.route": "/v1/images", "http.status_code": 200},
            "server",
        ) as root:
            root.local.user_id = f"user-{i % 100}"
            root.local.tier = "pro"
            root.local.request_id = f"req-{i}"
            with Span(
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
            ) as child:
                pass
        spans += [child, root]
    return to_records(spans, Resource("bench", "production", "1.0.0"))


def rate(fn: Callable[[Sequence[Record]], object], records: list[Record]) -> float:
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        best = min(best, time.perf_counter() - start)
    return len(records) / best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    obs.configure(service="bench", exporters="none")  # records are built here, not exported
    records = make_records(n)
    results = {
        "jsonl": rate(JsonlExporter("/dev/null").export, records),
        "tinybird_ndjson": rate(encode_rows, records),
    }
    try:  # the [otlp] extra may be absent
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import (  # noqa: PLC0415
            encode_spans,
        )

        from obs_middleware.exporters.otlp import (  # noqa: PLC0415
            OTLPExporter,
            _Times,
            to_otel_spans,
        )

        exporter = OTLPExporter("http://127.0.0.1:9", metrics=False)
        times = _Times()
        otlp_records = records[: min(len(records), 20_000)]
        results["otlp_convert"] = rate(
            lambda b: to_otel_spans(b, exporter.resource, times), otlp_records
        )
        results["otlp_convert_and_protobuf"] = rate(
            lambda b: encode_spans(to_otel_spans(b, exporter.resource, times)).SerializeToString(),
            otlp_records,
        )
    except ImportError:
        pass
    for name, value in results.items():
        print(f"{name:28s} {value:12,.0f} spans/s")


if __name__ == "__main__":
    main()
