"""Handlers attached by prefix (beam-telemetry semantics): dispatch, detach on failure, no-op."""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import obs_middleware as obs
from obs_middleware._core import events
from obs_middleware._core.metrics import registry
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.testing import Capture

Attach = Callable[..., None]


def recorder() -> tuple[list[tuple[str, dict[str, Any]]], Callable[[str, dict[str, Any]], None]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    return seen, lambda event, fields: seen.append((event, fields))


def test_span_emits_start_and_stop_with_duration(obs_capture: Capture, handlers: Attach) -> None:
    seen, fn = recorder()
    handlers("t", "render", fn, sync=True)
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
    assert events.flush(5)
    assert [e for e, _ in seen] == ["render.start", "render.exception"]


def test_emit_reaches_handlers_and_is_exported_as_event_record(
    obs_capture: Capture, handlers: Attach
) -> None:
    seen, fn = recorder()
    handlers("t", "job.", fn)
    obs.emit("job.completed", job_id="j1")
    assert events.flush(5)
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
    assert events.flush(5)
    assert [e for e, _ in ai] == ["ai.request"]
    assert [e for e, _ in every] == ["ai.request", "db.query"]


def test_reattaching_an_id_replaces_its_handler(handlers: Attach) -> None:
    first, fn_first = recorder()
    second, fn_second = recorder()
    handlers("h", "x", fn_first)
    events.dispatch("x.1", {})
    assert events.flush(5)
    handlers("h", "x", fn_second)
    events.dispatch("x.2", {})
    assert events.flush(5)
    assert [e for e, _ in first] == ["x.1"]
    assert [e for e, _ in second] == ["x.2"]


def test_detach_returns_whether_it_was_attached(handlers: Attach) -> None:
    seen, fn = recorder()
    handlers("h", "x", fn)
    assert obs.detach("h") is True
    assert obs.detach("h") is False
    events.dispatch("x.1", {})
    assert seen == []


@pytest.mark.parametrize("sync", [False, True])
def test_failing_handler_is_detached_and_logged_once_others_keep_receiving(
    obs_capture: Capture, handlers: Attach, caplog: pytest.LogCaptureFixture, sync: bool
) -> None:
    seen, fn = recorder()
    calls: list[str] = []

    def broken(event: str, fields: dict[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("handler bug")

    handlers("broken", "job.", broken, sync=sync)
    handlers("good", "job.", fn, sync=sync)
    with caplog.at_level(logging.ERROR, logger="obs_middleware"):
        for _ in range(3):
            obs.emit("job.done")  # never raises into the emitter
        assert obs.flush(5)
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
    assert events.flush(5)
    assert len(seen) == events._MAX_CACHED + 10
    assert len(events._by_event) <= events._MAX_CACHED


# -- handlers run off the emitting thread ----------------------------------------------------------


def test_a_200ms_handler_adds_under_1ms_to_a_request(
    obs_capture: Capture, handlers: Attach
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        obs.emit("app.rendered", size=1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    traced = ObsMiddleware(app)

    async def request() -> float:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        started = time.perf_counter()
        await traced(scope, receive, send)
        return time.perf_counter() - started

    def median_latency() -> float:
        return statistics.median(asyncio.run(request()) for _ in range(15))

    bare = median_latency()
    seen: list[str] = []

    def slow(event: str, fields: dict[str, Any]) -> None:
        time.sleep(0.2)
        seen.append(event)

    handlers("slow", "", slow)
    with_handler = median_latency()
    assert with_handler - bare < 0.001
    assert events.flush(15 * 4 * 0.2 + 5)
    assert len(seen) == 15 * 3  # each request: the span's start and stop, and the app's event
    assert seen[:3] == ["GET.start", "app.rendered", "GET.stop"]


def test_a_queued_handler_sees_the_span_as_it_was_when_the_event_fired(
    obs_capture: Capture, handlers: Attach
) -> None:
    seen: list[tuple[str, dict[str, Any], int]] = []
    handlers("h", "render", lambda e, f: seen.append((e, dict(f["span"].attrs), f["span"].end_ns)))
    with obs.span("render", step=1) as s:
        s.set(step=2)
    assert obs.flush(5)
    assert seen == [("render.start", {"step": 1}, 0), ("render.stop", {"step": 2}, s.end_ns)]


def test_each_handler_keeps_its_order_and_a_full_queue_drops_the_newest_counted(
    handlers: Attach,
) -> None:
    release = threading.Event()
    seen: list[str] = []

    def blocked(event: str, fields: dict[str, Any]) -> None:
        release.wait(5)
        seen.append(event)

    before = dropped_for("handler_queue:h")
    handlers("h", "q.", blocked, queue_size=3)
    for i in range(5):
        events.dispatch(f"q.{i}", {})  # never waits for the blocked handler
    assert dropped_for("handler_queue:h") - before == 2
    release.set()
    assert events.flush(5)
    assert seen == ["q.0", "q.1", "q.2"]


def test_a_sync_handler_runs_inline_and_may_change_the_live_span(
    obs_capture: Capture, handlers: Attach
) -> None:
    handlers("h", "render.start", lambda e, f: f["span"].set(tagged=True), sync=True)
    with obs.span("render"):
        pass
    assert obs_capture.span("render")["tagged"] is True


def test_a_forked_child_does_not_handle_the_parents_queued_events(
    handlers: Attach, tmp_path: Path
) -> None:
    release = threading.Event()
    out = tmp_path / "handled"

    def handler(event: str, fields: dict[str, Any]) -> None:
        release.wait(5)
        with out.open("a") as f:
            f.write(f"{os.getpid()} {event}\n")

    handlers("h", "f.", handler)
    events.dispatch("f.parent", {})  # held in the parent's queue
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        release.set()  # the child's own copy: no parent thread waits on it
        events.dispatch("f.child", {})
        os._exit(0 if events.flush(5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    release.set()
    assert events.flush(5)
    lines = sorted(out.read_text().splitlines())
    assert lines == sorted([f"{pid} f.child", f"{os.getpid()} f.parent"])


def dropped_for(reason: str) -> float:
    return dict(registry.snapshot()["obs.dropped"].points).get((reason,), 0.0)
