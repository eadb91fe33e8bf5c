"""Delivery pipeline: batching, flush, drops counted by reason, shutdown deadline, fork safety."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import obs_middleware as obs
from obs_middleware import _pipeline, _setup
from obs_middleware._core.config import Config, PipelineOptions
from obs_middleware._core.metrics import http_duration, registry
from obs_middleware._core.span import Event, Span
from obs_middleware._record import Record, Resource
from obs_middleware.exporters import MemoryExporter

Configure = Callable[..., Config]


def dropped() -> dict[tuple[str, ...], float]:
    return dict(registry.snapshot()["obs.dropped"].points)


class BlockingExporter:
    """An exporter whose export() blocks until ``release`` is set (a dead backend)."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.records: list[Record] = []

    def export(self, records: Sequence[Record]) -> None:
        self.entered.set()
        self.release.wait(30)
        self.records.extend(records)

    def flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class FailingExporter:
    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def export(self, records: Sequence[Record]) -> None:
        self.calls += 1
        raise ConnectionError("backend down")

    def flush(self) -> None:
        raise ConnectionError("backend down")

    def shutdown(self) -> None:
        pass


@pytest.fixture
def blocking() -> Iterator[BlockingExporter]:
    exporter = BlockingExporter()
    yield exporter
    exporter.release.set()  # let the stuck worker finish so no thread outlives the test for long


def spans(n: int, name: str = "s") -> None:
    for _ in range(n):
        with obs.span(name):
            pass


def test_flush_exports_everything_queued_before_the_call(configured: Configure) -> None:
    memory = MemoryExporter()
    configured(exporters=[memory], pipeline=PipelineOptions(interval_s=60, flush_on_sigterm=False))
    spans(3)
    assert obs.flush(5) is True
    assert [r["name"] for r in memory.records] == ["s", "s", "s"]


def test_full_batch_is_exported_without_waiting_for_the_interval(configured: Configure) -> None:
    memory = MemoryExporter()
    configured(
        exporters=[memory],
        pipeline=PipelineOptions(batch_size=4, interval_s=60, flush_on_sigterm=False),
    )
    spans(1)  # starts the worker, which then sleeps for the interval
    spans(4)  # the batch-size-th record wakes it
    for _ in range(500):
        if len(memory.records) >= 4:
            break
        time.sleep(0.01)
    assert len(memory.records) >= 4


def test_queue_overflow_drops_newest_and_counts_queue_full(
    configured: Configure, blocking: BlockingExporter
) -> None:
    # batch_size=1 and a long interval: the worker sleeps, so the queue fills deterministically.
    configured(
        exporters=[blocking],
        pipeline=PipelineOptions(queue_size=3, batch_size=1, interval_s=60, flush_on_sigterm=False),
    )
    for i in range(8):
        with obs.span(f"s{i}"):
            pass
    assert dropped() == {("queue_full",): 5}
    blocking.release.set()
    assert obs.flush(5) is True
    assert [r["name"] for r in blocking.records] == ["s0", "s1", "s2"]


def test_metrics_still_count_requests_dropped_from_a_full_queue(
    configured: Configure, blocking: BlockingExporter
) -> None:
    configured(
        exporters=[blocking],
        pipeline=PipelineOptions(queue_size=1, batch_size=1, interval_s=60, flush_on_sigterm=False),
    )
    for _ in range(5):
        with obs.span("GET /x"):
            pass
        http_duration.record(("GET", "/x", "2xx"), 1.0)
    assert registry.snapshot()["http.server.requests"].points == {("GET", "/x", "2xx"): 5}
    assert dropped() == {("queue_full",): 4}


def test_exporter_error_counts_dropped_records_and_logs_once(
    configured: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingExporter()
    memory = MemoryExporter()
    configured(exporters=[failing, memory])
    spans(2)
    assert obs.flush(5)
    spans(1)
    assert obs.flush(5)
    assert dropped() == {("exporter_error:failing",): 3}
    assert len(memory.records) == 3  # one broken exporter does not starve the others
    warnings = [r for r in caplog.records if "'failing' failed to export" in r.getMessage()]
    assert len(warnings) == 1


class SpanTaking(MemoryExporter):
    """A column-store-like exporter: takes the finished spans, converts them itself."""

    name = "span-taking"

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Span | Event] = []

    def export_spans(self, items: Sequence[Span | Event], resource: Resource) -> None:
        assert resource.service == "svc"
        self.items.extend(items)


def test_an_exporter_with_export_spans_gets_the_finished_spans_and_no_records(
    configured: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    real = _pipeline.to_records
    monkeypatch.setattr(_pipeline, "to_records", lambda b, r: built.append(len(b)) or real(b, r))
    taking = SpanTaking()
    configured(exporters=[taking], service="svc")
    spans(3)
    assert obs.flush()
    assert [type(i) for i in taking.items] == [Span] * 3
    assert taking.records == [] and built == []  # with only span takers, no record is built
    memory = MemoryExporter()
    configured(exporters=[taking, memory], service="svc")
    spans(2)
    assert obs.flush()
    assert len(taking.items) == 5 and len(memory.records) == 2 and built == [2]


def test_shutdown_with_blocked_exporter_returns_at_its_deadline_counting_queue_and_batch(
    configured: Configure, blocking: BlockingExporter
) -> None:
    configured(exporters=[blocking])
    spans(1)
    assert blocking.entered.wait(5)  # the worker is now stuck inside export()
    spans(2)  # queued behind the stuck batch
    deadline = 0.3
    started = time.monotonic()
    assert obs.shutdown(deadline) is False
    elapsed = time.monotonic() - started
    assert elapsed < deadline + 1.0  # a correctness bound (never hangs), not a benchmark
    # The two queued and the one stuck in export(): the process may end before it returns.
    assert dropped() == {("shutdown_timeout",): 3}
    assert not _setup._pipeline or not _setup._pipeline.queue


def test_drain_counts_what_its_deadline_leaves_and_keeps_the_pipeline_open(
    configured: Configure, blocking: BlockingExporter
) -> None:
    configured(exporters=[blocking])
    spans(1)
    assert blocking.entered.wait(5)
    spans(2)
    pipeline = _setup._pipeline
    assert pipeline is not None
    assert pipeline.drain(0.2) is False
    assert pipeline.drain(0.2) is False  # the stuck batch is counted once
    assert dropped() == {("shutdown_timeout",): 3}
    spans(1)  # a server still finishing requests: accepted, not "closed"
    assert dropped() == {("shutdown_timeout",): 3}
    assert len(pipeline.queue) == 1


def test_flush_with_blocked_exporter_returns_false_at_timeout(
    configured: Configure, blocking: BlockingExporter
) -> None:
    configured(exporters=[blocking])
    spans(1)
    assert blocking.entered.wait(5)
    started = time.monotonic()
    assert obs.flush(0.2) is False
    assert time.monotonic() - started < 1.2


def test_shutdown_is_idempotent_and_later_spans_are_counted_closed(
    configured: Configure,
) -> None:
    memory = MemoryExporter()
    configured(exporters=[memory])
    spans(1)
    assert obs.shutdown(2) is True
    assert obs.shutdown(2) is True
    spans(2)
    assert [r["name"] for r in memory.records] == ["s"]
    assert dropped() == {("closed",): 2}


def test_flush_after_shutdown_reports_success(configured: Configure) -> None:
    configured(exporters=[MemoryExporter()])
    spans(1)
    assert obs.shutdown(2) is True
    assert obs.flush(1) is True


def test_shutdown_calls_exporter_flush_and_shutdown(configured: Configure) -> None:
    calls: list[str] = []

    class Recording(MemoryExporter):
        def flush(self) -> None:
            calls.append("flush")

        def shutdown(self) -> None:
            calls.append("shutdown")

    configured(exporters=[Recording()])
    spans(1)
    assert obs.shutdown(2)
    assert calls[-1] == "shutdown"


def test_flush_without_pipeline_or_records_returns_true(configured: Configure) -> None:
    configured(exporters="none")
    assert obs.flush(1) is True
    assert obs.shutdown(1) is True


def test_flush_from_the_worker_thread_does_not_deadlock(configured: Configure) -> None:
    results: list[bool] = []

    class FlushingExporter(MemoryExporter):
        def export(self, records: Sequence[Record]) -> None:
            super().export(records)
            if not results:
                results.append(obs.flush(1))

    exporter = FlushingExporter()
    configured(exporters=[exporter])
    spans(1)
    assert obs.flush(5)
    assert results == [True]


# -- fork ------------------------------------------------------------------------------------------


def run_in_child(body: Callable[[], bool]) -> int:
    """Fork; the child runs ``body`` and exits 0 if it returned True. Returns the exit code."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def names_in(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["name"] for line in path.read_text().splitlines()]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_exports_its_own_spans_to_its_own_file(
    configured: Configure, tmp_path: Path
) -> None:
    parent_file, child_file = tmp_path / "parent.jsonl", tmp_path / "child.jsonl"
    slow = PipelineOptions(interval_s=60, flush_on_sigterm=False)
    configured(exporters=[f"jsonl:{parent_file}"], pipeline=slow)
    spans(2, "parent.queued")  # still queued (the worker sleeps) when we fork

    def child() -> bool:
        _setup.configure(exporters=[f"jsonl:{child_file}"], pipeline=slow)
        spans(1, "child.work")
        return obs.shutdown(5)

    assert run_in_child(child) == 0
    assert obs.flush(5)
    assert names_in(child_file) == ["child.work"]
    assert names_in(parent_file) == ["parent.queued", "parent.queued"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_restarts_the_worker_and_does_not_duplicate_parent_spans(
    configured: Configure, tmp_path: Path
) -> None:
    shared = tmp_path / "shared.jsonl"
    configured(
        exporters=[f"jsonl:{shared}"],
        pipeline=PipelineOptions(interval_s=60, flush_on_sigterm=False),
    )
    spans(1, "parent.before")  # the parent's worker is started and asleep

    def child() -> bool:
        spans(1, "child.work")
        return obs.flush(5)

    assert run_in_child(child) == 0
    spans(1, "parent.after")
    assert obs.flush(5)
    assert sorted(names_in(shared)) == ["child.work", "parent.after", "parent.before"]


class RefillingExporter:
    """Submits two more spans while it exports each of its first ``batches`` batches: a queue
    that fills as fast as the worker drains it, so the worker never goes back to sleep."""

    name = "refilling"

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.exported = 0
        self.pipeline: _pipeline.Pipeline | None = None

    def export(self, records: Sequence[Record]) -> None:
        self.exported += 1
        if self.exported < self.batches and self.pipeline is not None:
            for _ in range(2):
                self.pipeline.submit(_finished_span())

    def flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def _finished_span() -> Span:
    span = Span("s", {}).start(activate=False)
    span.end_ns = span.start_ns + 1
    return span


def test_the_sampler_ticks_between_batches_of_a_queue_that_never_empties(
    configured: Configure,
) -> None:
    configured(exporters=[])  # no pipeline of the configuration's own
    ticks: list[float] = []
    exporter = RefillingExporter(batches=6)
    pipeline = _pipeline.Pipeline(
        [exporter],
        Resource("svc", "test", None),
        queue_size=100,
        batch_size=2,
        interval_s=60.0,  # the worker does not wake up by itself within the test
        tick=lambda: ticks.append(time.monotonic()),
    )
    exporter.pipeline = pipeline
    try:
        pipeline.submit(_finished_span())
        pipeline.submit(_finished_span())
        assert pipeline.flush(5)
        assert exporter.exported == 6
        # One tick per wake-up and one before each batch: the adaptive sampler's clock kept
        # running while the worker drained without sleeping.
        assert len(ticks) >= 6
    finally:
        pipeline.shutdown(1.0)
