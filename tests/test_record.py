"""The unified record (docs/ARCHITECTURE.md, "The record"): fixed keys on every record, ids as hex,
RFC 3339 times."""

from __future__ import annotations

import os
import re

import pytest

import obs_middleware as obs
from obs_middleware._record import FIXED_KEYS, Resource, instance_id, to_records
from obs_middleware.testing import Capture, capture


def test_fixed_keys_match_the_design() -> None:
    assert FIXED_KEYS == (
        "type",
        "name",
        "trace_id",
        "span_id",
        "parent_id",
        "service",
        "environment",
        "start",
        "duration_ms",
        "status",
        "error_type",
        "error_message",
        "user_id",
        "tier",
        "request_id",
    )


def test_every_record_has_the_fixed_keys_first(obs_capture: Capture) -> None:
    with obs.span("root", a=1):
        obs.emit("in.span", b=2)
        with pytest.raises(ValueError), obs.span("failing"):
            raise ValueError("x")
    obs.emit("outside")
    records = obs_capture.records
    assert len(records) == 4
    for record in records:
        assert tuple(record)[: len(FIXED_KEYS)] == FIXED_KEYS


def test_user_and_tier_are_on_every_record_of_the_trace(obs_capture: Capture) -> None:
    with obs.span("request"):
        with obs.span("before-login"):
            pass
        obs.set_user(42, tier="pro")
        obs.emit("login")
    for record in obs_capture.records:
        assert (record["user_id"], record["tier"]) == ("42", "pro")


def test_set_user_outside_a_span_does_nothing(obs_capture: Capture) -> None:
    obs.set_user("u")
    with obs.span("x"):
        pass
    assert obs_capture.span("x")["user_id"] is None


def test_record_times_are_rfc3339_utc_microseconds() -> None:
    with capture(fixed=False) as cap:
        with obs.span("x"):
            pass
        record = cap.span("x")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["start"])
    assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", record["span_id"])


def test_to_records_converts_a_span_with_resource(obs_capture: Capture) -> None:
    with obs.span("work", _kind="consumer") as s:
        s.event("checkpoint", n=1)
    (record,) = to_records([s], Resource("svc", "prod", "1.0"))
    assert record == {
        "type": "span",
        "name": "work",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000001",
        "parent_id": None,
        "service": "svc",
        "environment": "prod",
        "start": "2026-01-01T00:00:00.001000Z",
        "duration_ms": 2.0,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": None,
        "tier": None,
        "request_id": None,
        "service.version": "1.0",
        "host.name": "test-host",
        "service.instance.id": "0000000000000000",
        "span.kind": "consumer",
        "events": [{"name": "checkpoint", "time": "2026-01-01T00:00:00.002000Z", "n": 1}],
    }


def test_event_fields_fill_status_duration_and_error_keys(obs_capture: Capture) -> None:
    obs.emit("job.failed", status="error", duration_ms=12.5, error_type="Timeout", job_id="j")
    (record,) = obs_capture.events
    assert (record["status"], record["duration_ms"], record["error_type"], record["job_id"]) == (
        "error",
        12.5,
        "Timeout",
        "j",
    )


def test_user_attributes_cannot_overwrite_record_identity(obs_capture: Capture) -> None:
    with obs.span("upload", name="cat.png", trace_id="mine") as s:
        obs.emit("upload.done", type="image", name="cat.png")
    span_record, event_record = obs_capture.spans[0], obs_capture.events[0]
    assert (span_record["name"], span_record["trace_id"]) == ("upload", f"{s.trace_id:032x}")
    assert (event_record["type"], event_record["name"]) == ("event", "upload.done")


def test_worker_and_machine_ids_from_the_environment_are_on_spans_events_and_job_progress(
    monkeypatch,
) -> None:
    monkeypatch.setenv("OBS_WORKER_ID", "gpu-7")
    monkeypatch.setenv("OBS_MACHINE_ID", "box-2")
    with capture(version="3.1") as cap:
        with obs.job("j1", service_type="render") as job:
            job.progress(0.5)
        records = cap.records
    assert {r["name"] for r in records} >= {"job.received", "job.progress", "job.completed"}
    for r in records:
        assert (r["service.version"], r["worker.id"], r["machine.id"]) == ("3.1", "gpu-7", "box-2")
        assert (r["host.name"], r["service.instance.id"]) == ("test-host", "0" * 16)


def test_a_forked_child_has_a_new_instance_id() -> None:

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, instance_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert re.fullmatch(r"[0-9a-f]{16}", child) and child != instance_id()
