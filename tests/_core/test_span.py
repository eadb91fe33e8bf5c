"""Spans: nesting, lifecycle, exceptions, handlers raising control-flow exceptions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import obs_middleware as obs
from obs_middleware._core import span as _span
from obs_middleware._core.span import RemoteParent, Span, child_span, get_current
from obs_middleware.testing import Capture


def by_name(cap: Capture) -> dict[str, dict]:
    return {r["name"]: r for r in cap.spans}


def test_span_as_context_manager_exports_whole_record_with_fixed_ids_and_clock(
    obs_capture: Capture,
) -> None:
    with obs.span("outer", model="sdxl") as outer:
        outer.set(steps=30)
        with obs.span("inner", _kind="client"):
            pass
    assert obs_capture.spans == [
        {
            "type": "span",
            "name": "inner",
            "trace_id": "00000000000000000000000000000001",
            "span_id": "0000000000000002",
            "parent_id": "0000000000000001",
            "service": "app",
            "environment": "development",
            "start": "2026-01-01T00:00:00.002000Z",
            "duration_ms": 1.0,
            "status": "ok",
            "error_type": None,
            "error_message": None,
            "user_id": None,
            "tier": None,
            "request_id": None,
            "host.name": "test-host",
            "service.instance.id": "0000000000000000",
            "span.kind": "client",
        },
        {
            "type": "span",
            "name": "outer",
            "trace_id": "00000000000000000000000000000001",
            "span_id": "0000000000000001",
            "parent_id": None,
            "service": "app",
            "environment": "development",
            "start": "2026-01-01T00:00:00.001000Z",
            "duration_ms": 3.0,
            "status": "ok",
            "error_type": None,
            "error_message": None,
            "user_id": None,
            "tier": None,
            "request_id": None,
            "host.name": "test-host",
            "service.instance.id": "0000000000000000",
            "model": "sdxl",
            "steps": 30,
        },
    ]


def test_span_ids_and_parent_links_are_ints_on_the_span_object(obs_capture: Capture) -> None:
    with obs.span("a") as a, obs.span("b") as b:
        assert (a.trace_id, a.span_id, a.parent_id) == (1, 1, 0)
        assert (b.trace_id, b.span_id, b.parent_id) == (1, 2, 1)
        assert b.local is a.local and a.local.root is a
        assert a.is_root and not b.is_root


def test_current_span_is_restored_after_each_span(obs_capture: Capture) -> None:
    assert obs.current_span() is None
    with obs.span("a") as a:
        assert obs.current_span() is a
        with obs.span("b") as b:
            assert obs.current_span() is b
        assert obs.current_span() is a
    assert obs.current_span() is None


def test_sibling_root_spans_start_separate_traces(obs_capture: Capture) -> None:
    with obs.span("first"):
        pass
    with obs.span("second"):
        pass
    first, second = obs_capture.spans
    assert first["trace_id"] != second["trace_id"]
    assert first["parent_id"] is None and second["parent_id"] is None


def test_exception_is_recorded_scrubbed_and_reraised(obs_capture: Capture) -> None:
    with pytest.raises(ValueError, match="boom"), obs.span("work"):
        raise ValueError("boom with Bearer abcdefghijklmnop and sk-0123456789abcdefghij")
    record = obs_capture.span("work")
    assert record["status"] == "error"
    assert record["error_type"] == "ValueError"
    assert record["error_message"] == "boom with [REDACTED] and [REDACTED]"


def test_exception_in_child_marks_child_not_parent(obs_capture: Capture) -> None:
    with obs.span("parent"), pytest.raises(KeyError), obs.span("child"):
        raise KeyError("k")
    spans = by_name(obs_capture)
    assert spans["child"]["status"] == "error"
    assert spans["child"]["error_type"] == "KeyError"
    assert spans["parent"]["status"] == "ok"


def test_record_exception_takes_a_custom_status(obs_capture: Capture) -> None:
    with obs.span("moderation") as s:
        s.record_exception(ValueError("nsfw"), status="content_violation")
    record = obs_capture.span("moderation")
    assert (record["status"], record["error_type"]) == ("content_violation", "ValueError")


def test_error_message_is_capped(obs_capture: Capture) -> None:
    with pytest.raises(RuntimeError), obs.span("big"):
        raise RuntimeError("x" * 10_000)
    assert len(obs_capture.span("big")["error_message"]) == 1024


async def test_cancelled_task_records_cancelled_not_error(obs_capture: Capture) -> None:
    started = asyncio.Event()

    async def work() -> None:
        async with obs.span("slow"):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = obs_capture.span("slow")
    assert (record["status"], record["error_type"]) == ("cancelled", None)


def test_span_events_are_exported_inside_the_record(obs_capture: Capture) -> None:
    with obs.span("upload") as s:
        s.event("chunk", index=0)
    assert obs_capture.span("upload")["events"] == [
        {"name": "chunk", "time": "2026-01-01T00:00:00.002000Z", "index": 0}
    ]


def test_manual_start_end_and_explicit_end_time(obs_capture: Capture) -> None:
    s = obs.span("manual").start()
    assert obs.current_span() is s
    s.end(end_ns=s.start_ns + 7_000_000)
    assert obs.current_span() is None
    assert obs_capture.span("manual")["duration_ms"] == 7.0


def test_deactivate_stops_being_current_without_ending(obs_capture: Capture) -> None:
    s = obs.span("background").start()
    s.deactivate()
    assert obs.current_span() is None
    with obs.span("unrelated") as other:
        assert other.parent_id == 0
    s.end()
    assert obs_capture.span("background")["parent_id"] is None
    assert obs_capture.span("unrelated")["trace_id"] != obs_capture.span("background")["trace_id"]


def test_span_ended_in_another_thread_keeps_its_parent_link(obs_capture: Capture) -> None:
    with obs.span("request"):
        s = obs.span("handoff").start()
        s.deactivate()
    t = threading.Thread(target=s.end)
    t.start()
    t.join()
    spans = by_name(obs_capture)
    assert spans["handoff"]["parent_id"] == spans["request"]["span_id"]


def test_repr_and_duration_while_running() -> None:
    s = Span("x", {})
    assert s.duration_ms == 0.0
    assert repr(s) == "<Span 'x' status=ok 0.000ms>"


# -- handlers raising BaseException ----------------------------------------------------------------


class Abort(BaseException):
    """A BaseException of the application's own (gevent's Timeout and trio's Cancelled are too)."""


CONTROL_FLOW = [KeyboardInterrupt, SystemExit, Abort, GeneratorExit, asyncio.CancelledError]


@pytest.mark.parametrize("exc_type", CONTROL_FLOW)
def test_base_exception_from_start_handler_propagates_and_leaves_no_span_current(
    obs_capture: Capture, handlers: Callable[..., None], exc_type: type[BaseException]
) -> None:
    seen: list[str] = []

    def interrupt(event: str, fields: dict[str, Any]) -> None:
        seen.append(event)
        raise exc_type

    handlers("interrupt", "work.start", interrupt, sync=True)
    with obs.span("request") as request:
        with pytest.raises(exc_type), obs.span("work"):
            pytest.fail("the body runs only if the span started")
        assert obs.current_span() is request
        with obs.span("next"):
            pass
    assert obs.current_span() is None
    spans = by_name(obs_capture)
    assert spans["next"]["parent_id"] == spans["request"]["span_id"]
    assert "work" not in spans  # it never started for the caller: nothing to export
    with pytest.raises(exc_type):  # control flow, not a handler failure: still attached
        obs.span("work").start()
    assert seen == ["work.start", "work.start"]
    assert obs.current_span() is None


@pytest.mark.parametrize("exc_type", CONTROL_FLOW)
def test_base_exception_from_stop_handler_propagates_after_the_span_is_exported(
    obs_capture: Capture, handlers: Callable[..., None], exc_type: type[BaseException]
) -> None:
    def interrupt(event: str, fields: dict[str, Any]) -> None:
        raise exc_type

    handlers("interrupt", "work.stop", interrupt, sync=True)
    with obs.span("request") as request:
        with pytest.raises(exc_type), obs.span("work"):
            pass
        assert obs.current_span() is request
    assert obs_capture.names == ["work", "request"]


def test_base_exception_from_emit_handler_propagates_after_the_event_is_exported(
    obs_capture: Capture, handlers: Callable[..., None]
) -> None:
    def interrupt(event: str, fields: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    handlers("interrupt", "job.", interrupt, sync=True)
    with pytest.raises(KeyboardInterrupt):
        obs.emit("job.queued")
    assert obs_capture.names == ["job.queued"]


def test_child_span_joins_the_parent_trace_never_current_and_ends_at_the_given_time(
    obs_capture: Capture,
) -> None:
    with obs.span("root") as root:
        child = child_span(root, "db.query", {"db.system": "sqlite"}, "client", 10, 0)
        assert obs.current_span() is root
        assert (child.trace_id, child.parent_id, child.local) == (
            root.trace_id,
            root.span_id,
            root.local,
        )
        assert child.span_id not in (0, root.span_id)
        child.end(25)
    assert obs.current_span() is None
    record = obs_capture.span("db.query")
    assert (record["parent_id"], record["span.kind"], record["db.system"]) == (
        root.span_hex,
        "client",
        "sqlite",
    )
    assert child.duration_ms == 15 / 1e6


def test_get_current_is_current_span(obs_capture: Capture) -> None:
    assert get_current() is None
    with obs.span("s") as s:
        assert get_current() is s is obs.current_span()


def test_an_error_span_carries_its_stack_trace_and_an_ok_span_none(obs_capture) -> None:
    def fail() -> None:
        raise KeyError("the user's prompt")

    with pytest.raises(KeyError), obs.span("outer"), obs.span("inner"):
        fail()
    inner, outer = obs_capture.spans
    assert inner["exception.stacktrace"].endswith("in " + fail.__qualname__)
    assert (
        outer["exception.stacktrace"].splitlines()[-1]
        == inner["exception.stacktrace"].splitlines()[-1]
    )
    with obs.span("fine"):
        pass
    assert "exception.stacktrace" not in obs_capture.span("fine")


def test_a_private_request_exports_frames_but_never_the_message(obs_capture) -> None:
    with pytest.raises(ValueError), obs.span("request"):
        obs.mark_private()
        raise ValueError("draw a secret portrait")
    record = obs_capture.span("request")
    assert record["error_message"] == "[PRIVATE]"
    assert "portrait" not in record["exception.stacktrace"]
    assert "test_span.py:" in record["exception.stacktrace"]


def test_a_bridge_parents_spans_on_the_foreign_span_it_returns(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core's ``bridge`` hook: what it returns is the parent, at a root (over a W3C parent)
    and between two spans of one trace (one LocalTrace); None leaves the obs parent."""
    assert _span.bridge is None  # off by default
    foreign: list[RemoteParent | None] = [RemoteParent(0xAB, 0xCD, False, "k=v")]
    seen: list[tuple[str, str | None]] = []

    def bridge(span: Span, parent: Span | None) -> RemoteParent | None:
        seen.append((span.name, parent.name if parent is not None else None))
        return foreign[0]

    monkeypatch.setattr(_span, "bridge", bridge)
    w3c = RemoteParent(0x11, 0x22, True, None)
    with Span("root", {}, "server", w3c) as root:
        assert (root.trace_id, root.parent_id, root.sampled) == (0xAB, 0xCD, False)
        assert root.is_root and root.local.tracestate == "k=v" and root.local.buffer == []
        foreign[0] = RemoteParent(0xAB, 0xEF, True, None)  # a foreign span of our trace
        with Span("between", {}) as between:
            assert between.parent_id == 0xEF and between.local is root.local
            assert not between.sampled  # the trace's decision, not the foreign flag
            foreign[0] = RemoteParent(0x99, 0x77, True, None)  # of another trace
            with Span("other", {}) as other:
                assert (other.trace_id, other.parent_id) == (0x99, 0x77) and other.is_root
            foreign[0] = None
            with Span("child", {}) as child:
                assert child.parent_id == between.span_id
    assert seen == [("root", None), ("between", "root"), ("other", "between"), ("child", "between")]
