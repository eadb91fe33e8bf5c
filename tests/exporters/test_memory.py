"""Memory exporter: keeps records for tests."""

from __future__ import annotations

import threading

from obs_middleware.exporters import MemoryExporter

from ._identity import identity, records, stack_ok


def test_keeps_every_batch_in_order() -> None:
    exporter = MemoryExporter()
    exporter.export([{"n": 1}])
    exporter.export([{"n": 2}, {"n": 3}])
    exporter.flush()
    exporter.shutdown()
    assert exporter.records == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_clear_forgets_records() -> None:
    exporter = MemoryExporter()
    exporter.export([{"n": 1}])
    exporter.clear()
    assert exporter.records == []


def test_concurrent_exports_lose_nothing() -> None:
    exporter = MemoryExporter()
    threads = [
        threading.Thread(target=lambda: [exporter.export([{"n": i}]) for i in range(1000)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(exporter.records) == 4000


def test_records_carry_the_process_identity_and_the_stack_trace() -> None:

    exporter = MemoryExporter()
    exporter.export(records())
    assert all(r.items() >= identity().items() for r in exporter.records)
    assert stack_ok(exporter.records[0]["exception.stacktrace"])
