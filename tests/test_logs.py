"""Stdlib logging: the JSON formatter, WARNING+ records as span events, and records exported
through the pipeline (``LogHandler``, ``configure(logs=)``)."""

from __future__ import annotations

import inspect
import io
import json
import logging
import logging.handlers
import os
import queue
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.config import Config, SamplingOptions
from obs_middleware._core.context import EXPORTING
from obs_middleware.exporters import MemoryExporter
from obs_middleware.integrations import logging as obs_logging
from obs_middleware.logs import JsonFormatter, LogHandler, SpanEventHandler
from obs_middleware.testing import Capture, capture

Configure = Callable[..., Config]


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


# -- LogHandler: records exported through the pipeline --------------------------------------------
@pytest.fixture
def exported() -> Iterator[logging.Logger]:
    """A logger whose records reach a ``LogHandler`` (and nothing else)."""
    log = logging.getLogger("test.obs.exported")
    handler = LogHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.removeHandler(handler)


def logs(cap: Capture) -> list[dict[str, Any]]:
    return [r for r in cap.events if r["name"] == "log"]


def test_a_warning_is_exported_as_a_log_event_of_the_current_span(
    obs_capture: Capture, exported: logging.Logger
) -> None:
    with obs.span("request") as span:
        span.local.request_id = "req-1"
        obs.set_user("u-1")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        exported.warning("quota at %d%%", 95)
    (record,) = logs(obs_capture)
    assert record["code.line.number"] == line
    assert {k: v for k, v in record.items() if k not in ("start", "code.line.number")} == {
        "type": "event",
        "name": "log",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000001",
        "parent_id": None,
        "service": "app",
        "environment": "development",
        "duration_ms": None,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": "u-1",
        "tier": None,
        "request_id": "req-1",
        "host.name": "test-host",
        "service.instance.id": "0" * 16,
        "log.level": "WARNING",
        "log.logger": "test.obs.exported",
        "log.message": "quota at 95%",
        "code.file.path": __file__,
        "code.function.name": "test_a_warning_is_exported_as_a_log_event_of_the_current_span",
    }
    assert obs_capture.span("request")  # the span itself is exported apart, without the log
    assert "events" not in obs_capture.span("request")


def test_an_exception_is_exported_as_a_failed_span_carries_it(
    obs_capture: Capture, exported: logging.Logger
) -> None:
    with obs.span("request"):
        try:
            raise ConnectionError("upstream said Bearer abcdefgh12345678 is bad")
        except ConnectionError:
            exported.exception("render failed")
    (record,) = logs(obs_capture)
    assert (record["log.level"], record["log.message"]) == ("ERROR", "render failed")
    assert record["exception.type"] == "ConnectionError"
    assert record["exception.message"] == "upstream said [REDACTED] is bad"
    stack = record["exception.stacktrace"]
    assert stack.endswith("in test_an_exception_is_exported_as_a_failed_span_carries_it")
    assert "raise ConnectionError" not in stack  # frames only, no source lines


def test_outside_a_span_the_log_has_no_trace(
    obs_capture: Capture, exported: logging.Logger
) -> None:
    exported.error("startup: no GPU")
    (record,) = logs(obs_capture)
    assert (record["trace_id"], record["span_id"], record["log.message"]) == (
        None,
        None,
        "startup: no GPU",
    )


def test_below_the_level_nothing_is_exported(obs_capture: Capture) -> None:
    log = logging.getLogger("test.obs.level")
    handler = LogHandler("error")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        with obs.span("request"):
            log.info("info")
            log.warning("warning")
            log.error("error")
    finally:
        log.removeHandler(handler)
    assert [r["log.message"] for r in logs(obs_capture)] == ["error"]
    with pytest.raises(ValueError, match="unknown log level"):
        LogHandler("loud")


def test_a_log_of_a_sampled_out_trace_is_still_exported(exported: logging.Logger) -> None:
    with capture(sampling=SamplingOptions(ratio=0.0, traces_per_s=0)) as cap:
        with obs.span("request"), obs.span("inner"):
            exported.warning("disk almost full")
        (record,) = cap.records  # the trace is forgotten, its log is not
        assert record["name"] == "log" and record["trace_id"] == "00000000000000000000000000000001"
        assert record["log.message"] == "disk almost full"
        assert cap.metrics["obs.traces.sampled_out"].points == {(): 1}


def test_a_log_of_a_trace_kept_later_is_exported_once(exported: logging.Logger) -> None:
    with capture(sampling=SamplingOptions(ratio=0.0, traces_per_s=0)) as cap:
        with pytest.raises(RuntimeError), obs.span("request"):
            exported.warning("retrying")
            raise RuntimeError  # the tail rule keeps the trace
        assert sorted(r["name"] for r in cap.records) == ["log", "request"]


def test_secrets_in_the_message_are_scrubbed_and_private_requests_export_none(
    obs_capture: Capture, exported: logging.Logger
) -> None:
    with obs.span("public"):
        exported.warning("calling with api_key=sk-abcdefghijklmnopqrstuvwx for bob")
        exported.warning(
            "callback failed: %s",
            "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
            "[SQL: INSERT INTO users VALUES (?)]\n[parameters: ('bob@example.com',)]",
        )
        exported.warning("x" * 5000)
    with obs.span("private"):
        obs.mark_private()
        try:
            raise ValueError("the prompt was: my diary")
        except ValueError:
            exported.exception("moderation rejected %r", "my diary entry")
    public, sql, long, private = logs(obs_capture)
    assert public["log.message"] == "calling with [REDACTED] for bob"
    assert "bob@example.com" not in sql["log.message"]
    assert sql["log.message"].endswith("[parameters: [REDACTED]]")
    assert long["log.message"] == "x" * 1024 + "…"
    assert (private["log.message"], private["exception.message"]) == ("[PRIVATE]", "[PRIVATE]")
    assert (private["log.level"], private["log.logger"], private["exception.type"]) == (
        "ERROR",
        "test.obs.exported",
        "ValueError",
    )


def test_a_private_exception_outside_a_private_request_keeps_its_message_private(
    obs_capture: Capture, exported: logging.Logger
) -> None:
    from obs_middleware._core.span import mark_private_exception  # noqa: PLC0415

    with obs.span("request"):
        try:
            error = ValueError("echoes the prompt")
            mark_private_exception(error)
            raise error
        except ValueError:
            exported.exception("call failed")
    (record,) = logs(obs_capture)
    assert (record["log.message"], record["exception.message"]) == ("call failed", "[PRIVATE]")


def test_our_own_loggers_and_records_logged_while_exporting_are_skipped(
    obs_capture: Capture,
) -> None:
    handler = LogHandler()
    ours = logging.getLogger("obs_middleware.test")
    ours.addHandler(handler)
    ours.propagate = False
    app = logging.getLogger("obs_middlewarez")  # a name that only starts like ours
    app.addHandler(handler)
    app.propagate = False
    try:
        ours.warning("internal")
        token = EXPORTING.set(True)  # a library logging inside an export (urllib3, a driver)
        try:
            app.warning("while exporting")
        finally:
            EXPORTING.reset(token)
        app.warning("the app's")
    finally:
        ours.removeHandler(handler)
        app.removeHandler(handler)
    assert [r["log.message"] for r in logs(obs_capture)] == ["the app's"]


def test_a_record_that_cannot_be_exported_is_counted_and_never_raises(
    obs_capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    handler = LogHandler()  # called directly: pytest's own capture handler would raise first
    for msg, args in ((Unprintable(), ("arg",)), ("%d items", ("not a number",))):
        # the first: neither getMessage() nor str(msg) works; the second: the format is kept
        handler.handle(
            logging.LogRecord("test.obs.bad", logging.WARNING, "f.py", 1, msg, args, None)
        )
    messages = [r["log.message"] for r in logs(obs_capture)]
    assert messages == ["%d items"]
    assert obs_capture.metrics["obs.dropped"].points == {("log_failed",): 1}
    assert "Traceback" not in capsys.readouterr().err  # no handleError printout


def test_event_handlers_see_log_events_and_one_that_logs_cannot_feed_itself(
    obs_capture: Capture, exported: logging.Logger, handlers: Callable[..., None]
) -> None:
    seen: list[str] = []

    def on_log(name: str, fields: dict[str, Any]) -> None:
        seen.append(fields["log.message"])
        exported.warning("handled %s", fields["log.message"])  # on the handler's thread

    handlers("log-watcher", "log", on_log)
    exported.warning("first")
    assert obs.flush(5)
    assert seen == ["first"]
    assert [r["log.message"] for r in logs(obs_capture)] == ["first", "handled first"]


def test_configure_logs_puts_one_handler_on_the_root_logger(configure_logs: Configure) -> None:
    root = logging.getLogger()
    memory = MemoryExporter()
    configure_logs(exporters=[memory], logs="WARNING")
    configure_logs(exporters=[memory], logs="error")
    ours = [h for h in root.handlers if isinstance(h, LogHandler)]
    assert len(ours) == 1 and ours[0].level == logging.ERROR
    logging.getLogger("test.obs.root").warning("below")
    logging.getLogger("test.obs.root").error("above")
    assert obs.flush(5)
    assert [r["log.message"] for r in memory.records] == ["above"]
    configure_logs(exporters=[memory])  # OBS_LOGS unset: off
    assert not any(isinstance(h, LogHandler) for h in root.handlers)


def test_obs_logs_from_the_environment_and_a_bad_value(
    configure_logs: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBS_LOGS", "Info")
    assert configure_logs(exporters="none").logs == "info"
    assert [h.level for h in logging.getLogger().handlers if isinstance(h, LogHandler)] == [20]
    monkeypatch.setenv("OBS_LOGS", "verbose")
    with pytest.warns(UserWarning, match="OBS_LOGS='verbose'"):
        assert configure_logs(exporters="none").logs == "off"
    monkeypatch.delenv("OBS_LOGS")
    with pytest.raises(ValueError, match="logs must be one of"):
        obs.configure(logs="verbose")


def test_shutdown_takes_the_handler_off(configure_logs: Configure) -> None:
    configure_logs(exporters="none", logs="warning")
    assert any(isinstance(h, LogHandler) for h in logging.getLogger().handlers)
    obs.shutdown(1.0)
    assert not any(isinstance(h, LogHandler) for h in logging.getLogger().handlers)


def test_basic_config_after_configure_still_configures_the_root_logger(
    configure_logs: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process (pytest adds its own)
    out = io.StringIO()
    configure_logs(exporters="none", logs="warning")
    logging.basicConfig(stream=out, format="%(message)s")
    logging.getLogger("test.obs.basic").warning("printed")
    kinds = sorted(type(h).__name__ for h in root.handlers)
    assert (kinds, out.getvalue()) == (["LogHandler", "StreamHandler"], "printed\n")
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "root": {"handlers": [], "level": "WARNING"},
        }
    )
    assert [type(h).__name__ for h in root.handlers] == ["LogHandler"]  # a root config keeps it
    configure_logs(exporters="none")
    assert logging.basicConfig.__module__ == "logging"  # unwrapped once off
    assert not hasattr(logging.config.dictConfig, "__wrapped__")


def test_alone_on_the_root_logger_it_still_prints_warnings_to_stderr(
    configure_logs: Configure, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without handlers, stdlib logging prints WARNING+ to stderr: ours must not silence that
    (our own warnings included)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    configure_logs(exporters="none", logs="info")
    logging.getLogger("test.obs.alone").warning("still on stderr")
    logging.getLogger("test.obs.alone").info("not printed, as before")
    logging.getLogger("obs_middleware").warning("obs-middleware: ours too")
    assert capsys.readouterr().err == "still on stderr\nobs-middleware: ours too\n"


@pytest.fixture
def configure_logs(configured: Configure) -> Iterator[Configure]:
    """``configured`` that also restores the logging functions and root handlers it changes."""
    import logging.config  # noqa: PLC0415

    root = logging.getLogger()
    saved = (list(root.handlers), logging.basicConfig, logging.config.dictConfig, root.level)
    yield configured
    _setup.restore(None, None)
    root.handlers[:] = saved[0]
    logging.basicConfig, logging.config.dictConfig = saved[1], saved[2]
    root.setLevel(saved[3])


def test_a_capture_can_export_logs_and_takes_its_handler_off_after() -> None:
    root = logging.getLogger()
    with capture(logs="warning") as cap:
        obs.configure(service="app-under-test")  # an app module configuring: logs stay on
        with obs.span("request"):
            logging.getLogger("test.obs.capture").warning("seen by the test")
        assert [r["log.message"] for r in logs(cap)] == ["seen by the test"]
    assert not any(isinstance(h, LogHandler) for h in root.handlers)
