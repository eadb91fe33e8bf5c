"""Log correlation for stdlib logging: the JSON formatter and WARNING+ records as span events."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import queue
from collections.abc import Iterator

import pytest

import obs_middleware as obs
from obs_middleware.integrations import logging as obs_logging
from obs_middleware.logs import JsonFormatter, SpanEventHandler
from obs_middleware.testing import Capture


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.obs.logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, out
    log.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_line_carries_the_ids_of_the_current_span(
    obs_capture: Capture, logger: tuple[logging.Logger, io.StringIO]
) -> None:
    log, out = logger
    with obs.span("request") as span:
        span.local.request_id = "req-7"
        obs.set_user("u42")
        log.info("made %d images", 3, extra={"model": "sdxl", "weird": {1, 2}})
    (line,) = lines(out)
    assert isinstance(line.pop("time"), str)
    assert line == {
        "level": "INFO",
        "logger": "test.obs.logs",
        "message": "made 3 images",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000001",
        "request_id": "req-7",
        "user_id": "u42",
        "model": "sdxl",
        "weird": "{1, 2}",
    }


def test_json_line_outside_a_span_has_null_ids_and_exception_details(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    try:
        raise ValueError("bad size")
    except ValueError:
        log.exception("render failed")
    (line,) = lines(out)
    assert [line[k] for k in ("trace_id", "span_id", "request_id", "user_id")] == [None] * 4
    assert (line["level"], line["exc_type"], line["exc_message"]) == (
        "ERROR",
        "ValueError",
        "bad size",
    )
    assert "Traceback" in str(line["stack"])


def test_ids_are_taken_when_the_record_is_made_with_the_integration(obs_capture: Capture) -> None:
    """A QueueHandler formats later, elsewhere: the ids must be those of the logging call."""
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    log = logging.getLogger("test.obs.queue")
    log.addHandler(logging.handlers.QueueHandler(records))
    log.setLevel(logging.INFO)
    obs_logging.patch()
    try:
        with obs.span("request"):
            log.info("queued")
    finally:
        obs_logging.unpatch()
        log.handlers.clear()
    line = json.loads(JsonFormatter().format(records.get_nowait()))
    assert (line["trace_id"], line["span_id"], line["request_id"]) == (
        "00000000000000000000000000000001",
        "0000000000000001",
        None,
    )


def test_warnings_become_events_of_the_current_span(obs_capture: Capture) -> None:
    log = logging.getLogger("test.obs.events")
    handler = SpanEventHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.warning("outside any span")
        with obs.span("request"):
            log.info("not forwarded")
            log.warning("quota at %d%% for key sk-abcdefghijklmnopqrstuvwx", 95)
            try:
                raise TimeoutError
            except TimeoutError:
                log.exception("provider timed out")
    finally:
        log.removeHandler(handler)
    (record,) = obs_capture.spans
    assert [{k: v for k, v in e.items() if k != "time"} for e in record["events"]] == [
        {
            "name": "log",
            "level": "WARNING",
            "logger": "test.obs.events",
            "message": "quota at 95% for key [REDACTED]",
        },
        {
            "name": "log",
            "level": "ERROR",
            "logger": "test.obs.events",
            "message": "provider timed out",
            "exc_type": "TimeoutError",
        },
    ]


def test_logged_error_text_is_cleaned_like_an_exception_message(obs_capture: Capture) -> None:
    log = logging.getLogger("test.obs.cleaned")
    handler = SpanEventHandler()
    log.addHandler(handler)
    try:
        with obs.span("request"):
            log.warning(
                "callback failed: %s",
                "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
                "[SQL: INSERT INTO users VALUES (?)]\n[parameters: ('bob@example.com',)]",
            )
            log.warning("fetching https://cb.example/done?code=abc123&state=1")
    finally:
        log.removeHandler(handler)
    assert [e["message"] for e in obs_capture.span("request")["events"]] == [
        "callback failed: (sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
        "[SQL: INSERT INTO users VALUES (?)]\n[parameters: [REDACTED]]",
        "fetching https://cb.example/done?code=&state=",
    ]


def test_a_private_requests_logs_keep_level_and_logger_but_not_the_message(
    obs_capture: Capture,
) -> None:
    log = logging.getLogger("test.obs.private")
    handler = SpanEventHandler()
    log.addHandler(handler)
    try:
        with obs.span("request"):
            obs.mark_private()
            try:
                raise ValueError
            except ValueError:
                log.exception("moderation rejected prompt %r", "my diary entry")
    finally:
        log.removeHandler(handler)
    (event,) = obs_capture.span("request")["events"]
    assert {k: v for k, v in event.items() if k != "time"} == {
        "name": "log",
        "level": "ERROR",
        "logger": "test.obs.private",
        "message": "[PRIVATE]",
        "exc_type": "ValueError",
    }


def test_json_line_keeps_values_orjson_refuses_as_text(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    log.info("snowflake", extra={"account": 1 << 70})
    (line,) = lines(out)
    assert line["message"] == "snowflake" and line["account"] == str(1 << 70)


def test_json_line_replaces_lone_surrogates_in_message_and_fields(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    name = os.fsdecode(b"photo-\xe9.jpg")  # a Latin-1 name listed on a UTF-8 system
    log.warning("cannot read %s", name, extra={"file": name, "files": {name: 1}})
    (line,) = lines(out)
    assert line["message"] == "cannot read photo-\ufffd.jpg"
    assert (line["file"], line["files"]) == ("photo-\ufffd.jpg", {"photo-\ufffd.jpg": 1})
