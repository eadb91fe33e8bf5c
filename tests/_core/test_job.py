"""Worker jobs: one trace per job, lifecycle events with durations and queue time, metrics."""

from __future__ import annotations

import datetime as dt

import pytest

import obs_middleware as obs
from obs_middleware._core.context import format_traceparent
from obs_middleware.integrations._ai import ai_call
from obs_middleware.testing import Capture, capture

# The deterministic clock starts at 2026-01-01T00:00:00Z and advances 1 ms per reading.
EPOCH_S = 1_767_225_600.0


def test_completed_job_is_one_trace_of_span_and_lifecycle_events(obs_capture: Capture) -> None:
    with obs.job(
        "job-1",
        service_type="render",
        worker_id="w-7",
        machine_id="m-2",
        model="sdxl",
        queued_at=EPOCH_S - 2.0,
    ) as j:
        j.progress(0.5, step=1, total=2, message="half way")
        j.set(**{"job.frames": 24})
    records = obs_capture.records
    assert [r["name"] for r in records] == [
        "job.received",
        "job.started",
        "job.progress",
        "job.completed",
        "job render",
    ]
    assert {r["trace_id"] for r in records} == {"00000000000000000000000000000001"}
    span = obs_capture.span("job render")
    assert span["span.kind"] == "consumer"
    assert span["parent_id"] is None
    assert span["request_id"] == "job-1"
    common = {
        "job.id": "job-1",
        "job.service_type": "render",
        "job.worker_id": "w-7",
        "job.machine_id": "m-2",
        "ai.model": "sdxl",
    }
    assert {k: span[k] for k in common} == common
    assert span["job.state"] == "completed"
    assert span["job.frames"] == 24
    assert span["job.progress"] == 0.5
    assert span["job.queue_ms"] == 2001.0  # clock read once before the span starts
    received, started, progress, completed = records[:4]
    assert {k: received[k] for k in common} == common
    assert received["queue_ms"] == 2001.0
    assert started["queue_ms"] == 2001.0
    assert progress["job.progress"] == 0.5
    assert (progress["job.step"], progress["job.total"]) == (1, 2)
    assert progress["job.message"] == "half way"
    assert completed["status"] == "ok"
    assert completed["duration_ms"] == 4.0  # started → completed on the 1 ms/reading clock
    assert completed["queue_ms"] == 2001.0


def test_failed_job_emits_job_failed_and_reraises(obs_capture: Capture) -> None:
    with pytest.raises(RuntimeError, match="out of memory"), obs.job("j2", service_type="render"):
        raise RuntimeError("out of memory")
    failed = next(r for r in obs_capture.events if r["name"] == "job.failed")
    assert (failed["status"], failed["error_type"], failed["error_message"]) == (
        "error",
        "RuntimeError",
        "out of memory",
    )
    assert obs_capture.span("job render")["job.state"] == "failed"
    metrics = obs_capture.metrics
    assert metrics["job.failures"].points == {("render", "RuntimeError"): 1}
    assert metrics["job.runs"].points == {("render", "error"): 1}
    assert metrics["job.active"].points == {("render",): 0.0}


def test_job_inside_a_request_is_its_child(obs_capture: Capture) -> None:
    with obs.span("POST /jobs"), obs.job("j3", service_type="upscale"):
        pass
    job_span = obs_capture.span("job upscale")
    assert job_span["parent_id"] == obs_capture.span("POST /jobs")["span_id"]
    assert job_span["request_id"] is None  # the request keeps its own correlation id


def test_job_continues_the_enqueuers_trace() -> None:
    parent = format_traceparent(0xABC, 0xDEF, True)
    with capture() as cap:
        with obs.job("j4", service_type="render", traceparent=parent):
            pass
        span = cap.span("job render")
    assert span["trace_id"] == f"{0xABC:032x}"
    assert span["parent_id"] == f"{0xDEF:016x}"


def test_progress_events_are_rate_limited_but_completion_always_goes_out(
    obs_capture: Capture,
) -> None:
    with obs.job("j5", service_type="render", progress_interval_s=0.01) as j:
        for step in range(1, 10):
            j.progress(step / 10)
        j.progress(1.0)
    progress = [r["job.progress"] for r in obs_capture.events if r["name"] == "job.progress"]
    # nine calls take under 10 ms on the 1 ms/reading clock: only the first and completion
    assert progress == [0.1, 1.0]
    assert obs_capture.span("job render")["job.progress"] == 1.0


def test_queue_time_from_aware_and_naive_datetimes(obs_capture: Capture) -> None:
    aware = dt.datetime.fromtimestamp(EPOCH_S - 1.5, tz=dt.timezone.utc)
    naive = aware.replace(tzinfo=None)
    with obs.job("a", service_type="t", queued_at=aware):
        pass
    with obs.job("b", service_type="t", queued_at=naive):
        pass
    queued = [r["job.queue_ms"] for r in obs_capture.spans]
    assert queued[0] == 1501.0
    assert queued[1] > 1500.0
    assert obs_capture.metrics["job.queue_time"].points[("t",)].count == 2  # type: ignore[union-attr]


def test_deferred_start_records_setup_time(obs_capture: Capture) -> None:
    with obs.job("j6", service_type="render", autostart=False) as j:
        assert [r["name"] for r in obs_capture.events] == ["job.received"]
        j.start()
        j.start()  # idempotent
    span = obs_capture.span("job render")
    assert span["job.setup_ms"] > 0
    assert [r["name"] for r in obs_capture.events] == [
        "job.received",
        "job.started",
        "job.completed",
    ]


async def test_async_job_with_an_ai_call_costs_by_service_type(obs_capture: Capture) -> None:
    async with obs.job("j7", service_type="caption", model="gpt-4o-mini"):
        with ai_call("openai", "chat", "gpt-4o-mini") as call:
            call.set_tokens(input=20, output=10)
    span = obs_capture.span("job caption")
    assert span["cost.usd"] == pytest.approx(9e-06)
    ai = obs_capture.span("ai.request")
    assert ai["parent_id"] == span["span_id"]
    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {("openai", "gpt-4o-mini", "chat", "caption", ""): pytest.approx(9e-06)}
    metrics = obs_capture.metrics
    assert metrics["job.runs"].points == {("caption", "ok"): 1}


def test_a_private_jobs_progress_messages_are_not_exported(obs_capture: Capture) -> None:
    with obs.job("j-private", service_type="render") as j:
        obs.mark_private()
        j.progress(0.5, message="rendering 'my diary entry'")
    (progress,) = [r for r in obs_capture.events if r["name"] == "job.progress"]
    assert progress["job.message"] == "[PRIVATE]"
