"""Handlers attached by prefix (beam-telemetry semantics): dispatch, detach on failure, no-op."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import obs_middleware as obs
from obs_middleware._core import events
from obs_middleware.testing import Capture

Attach = Callable[..., None]


def recorder() -> tuple[list[tuple[str, dict[str, Any]]], Callable[[str, dict[str, Any]], None]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    return seen, lambda event, fields: seen.append((event, fields))


def test_span_emits_start_and_stop_with_duration(obs_capture: Capture, handlers: Attach) -> None:
    seen, fn = recorder()
    handlers("t", "render", fn)
    with obs.span("render") as s:
        pass
    assert [e for e, _ in seen] == ["render.start", "render.stop"]
    assert seen[0][1] == {"span": s}
    assert seen[1][1] == {"span": s, "duration_ms": 1.0}


def test_failing_span_emits_exception_instead_of_stop(
    obs_capture: Capture, handlers: Attach
) -> None:
    seen, fn = recorder()
    handlers("t", "render", fn)
    with pytest.raises(ValueError), obs.span("render"):
        raise ValueError
    assert [e for e, _ in seen] == ["render.start", "render.exception"]


def test_emit_reaches_handlers_and_is_exported_as_event_record(
    obs_capture: Capture, handlers: Attach
) -> None:
    seen, fn = recorder()
    handlers("t", "job.", fn)
    obs.emit("job.completed", job_id="j1")
    assert seen == [("job.completed", {"job_id": "j1"})]
    assert obs_capture.events == [
        {
            "type": "event",
            "name": "job.completed",
            "trace_id": None,
            "span_id": None,
            "parent_id": None,
            "service": "app",
            "environment": "development",
            "start": "2026-01-01T00:00:00.001000Z",
            "duration_ms": None,
            "status": "ok",
            "error_type": None,
            "error_message": None,
            "user_id": None,
            "tier": None,
            "request_id": None,
            "host.name": "test-host",
            "service.instance.id": "0000000000000000",
            "job_id": "j1",
        }
    ]


def test_emit_inside_span_carries_its_trace_and_span_ids(obs_capture: Capture) -> None:
    with obs.span("request") as s:
        obs.set_user("u1", tier="pro")
        obs.emit("cache.miss")
    (event,) = obs_capture.events
    assert event["trace_id"] == f"{s.trace_id:032x}"
    assert event["span_id"] == f"{s.span_id:016x}"
    assert (event["user_id"], event["tier"]) == ("u1", "pro")


def test_handlers_are_attached_by_prefix(handlers: Attach) -> None:
    ai, fn_ai = recorder()
    every, fn_every = recorder()
    handlers("ai", "ai.", fn_ai)
    handlers("all", "", fn_every)
    events.dispatch("ai.request", {})
    events.dispatch("db.query", {})
    assert [e for e, _ in ai] == ["ai.request"]
    assert [e for e, _ in every] == ["ai.request", "db.query"]


def test_reattaching_an_id_replaces_its_handler(handlers: Attach) -> None:
    first, fn_first = recorder()
    second, fn_second = recorder()
    handlers("h", "x", fn_first)
    events.dispatch("x.1", {})
    handlers("h", "x", fn_second)
    events.dispatch("x.2", {})
    assert [e for e, _ in first] == ["x.1"]
    assert [e for e, _ in second] == ["x.2"]


def test_detach_returns_whether_it_was_attached(handlers: Attach) -> None:
    seen, fn = recorder()
    handlers("h", "x", fn)
    assert obs.detach("h") is True
    assert obs.detach("h") is False
    events.dispatch("x.1", {})
    assert seen == []


def test_failing_handler_is_detached_and_logged_once_others_keep_receiving(
    obs_capture: Capture, handlers: Attach, caplog: pytest.LogCaptureFixture
) -> None:
    seen, fn = recorder()
    calls: list[str] = []

    def broken(event: str, fields: dict[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("handler bug")

    handlers("broken", "job.", broken)
    handlers("good", "job.", fn)
    with caplog.at_level(logging.ERROR, logger="obs_middleware"):
        for _ in range(3):
            obs.emit("job.done")  # never raises into the emitter
    assert calls == ["job.done"]
    assert [e for e, _ in seen] == ["job.done"] * 3
    errors = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert obs.detach("broken") is False


def test_no_handler_means_nothing_is_dispatched(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert events.active is False
    dispatched: list[str] = []
    monkeypatch.setattr(events, "dispatch", lambda event, fields: dispatched.append(event))
    with obs.span("quiet"):
        obs.emit("quiet.event")
    assert dispatched == []
    assert obs_capture.names == ["quiet.event", "quiet"]


def test_active_flag_follows_attach_and_detach(handlers: Attach) -> None:
    handlers("h", "", lambda e, f: None)
    assert events.active is True
    obs.detach("h")
    assert events.active is False


def test_many_distinct_event_names_keep_the_cache_bounded(handlers: Attach) -> None:
    seen, fn = recorder()
    handlers("h", "n.", fn)
    for i in range(events._MAX_CACHED + 10):
        events.dispatch(f"n.{i}", {})
    assert len(seen) == events._MAX_CACHED + 10
    assert len(events._by_event) <= events._MAX_CACHED
