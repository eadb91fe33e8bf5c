"""structlog processors as plain callables: trace ids on the event dict, WARNING+ as span events."""

from __future__ import annotations

import logging

import pytest

import obs_middleware as obs
from obs_middleware.logs import SpanEvents, add_trace_context
from obs_middleware.testing import Capture


def test_ids_are_added_inside_a_span_and_explicit_keys_win(obs_capture: Capture) -> None:
    with obs.span("request"):
        obs.set_user(7)
        event = add_trace_context(None, "info", {"event": "hi", "request_id": "mine"})
    assert event == {
        "event": "hi",
        "request_id": "mine",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000001",
        "user_id": "7",
    }


def test_nothing_is_added_outside_a_span() -> None:
    assert add_trace_context(None, "info", {"event": "hi"}) == {"event": "hi"}


@pytest.mark.parametrize(
    ("level", "methods", "forwarded"),
    [
        ("warning", ["info", "warning", "error"], ["WARNING", "ERROR"]),
        (logging.ERROR, ["warning", "error", "critical"], ["ERROR", "CRITICAL"]),
        ("debug", ["debug", "msg"], ["DEBUG", "INFO"]),
    ],
)
def test_events_at_or_above_the_level_go_to_the_span(
    obs_capture: Capture, level: str | int, methods: list[str], forwarded: list[str]
) -> None:
    processor = SpanEvents(level)
    with obs.span("request"):
        for method in methods:
            event = {"event": f"{method} happened", "logger": "svc"}
            assert processor(None, method, dict(event)) == event  # passes through unchanged
    (record,) = obs_capture.spans
    assert [e["level"] for e in record["events"]] == forwarded


def test_exception_type_is_kept_and_secrets_are_scrubbed(obs_capture: Capture) -> None:
    processor = SpanEvents()
    with obs.span("request"):
        try:
            raise ConnectionResetError
        except ConnectionResetError:
            processor(None, "error", {"event": "token=hunter22 rejected", "exc_info": True})
        processor(None, "warning", {"event": "retrying", "exc_info": TimeoutError()})
    events = [{k: v for k, v in e.items() if k != "time"} for e in obs_capture.spans[0]["events"]]
    assert events == [
        {
            "name": "log",
            "level": "ERROR",
            "message": "[REDACTED] rejected",
            "exc_type": "ConnectionResetError",
        },
        {"name": "log", "level": "WARNING", "message": "retrying", "exc_type": "TimeoutError"},
    ]


def test_outside_a_span_events_are_dropped_silently(obs_capture: Capture) -> None:
    SpanEvents()(None, "error", {"event": "no span"})
    assert obs_capture.records == []


def test_a_private_requests_events_keep_their_level_but_not_the_message(
    obs_capture: Capture,
) -> None:
    with obs.span("request"):
        obs.mark_private()
        SpanEvents()(None, "warning", {"event": "prompt was: my diary entry", "logger": "svc"})
    (event,) = obs_capture.spans[0]["events"]
    assert {k: v for k, v in event.items() if k != "time"} == {
        "name": "log",
        "level": "WARNING",
        "logger": "svc",
        "message": "[PRIVATE]",
    }
