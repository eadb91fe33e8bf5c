"""The logging integration: trace ids on every LogRecord made inside a span, "" outside."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

import obs_middleware as obs
from obs_middleware.integrations import _registry
from obs_middleware.integrations import logging as obs_logging
from obs_middleware.testing import Capture


@pytest.fixture
def instrumented() -> Iterator[None]:
    report = obs.instrument_all(only=["logging"])
    assert report.patched == ["logging"]
    yield
    obs.uninstrument_all()


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("test.obs.logging")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)


def log(message: str) -> None:
    logging.getLogger("test.obs.logging").info(message)


def test_log_record_inside_a_span_carries_its_ids(
    obs_capture: Capture, instrumented: None, records: list[logging.LogRecord]
) -> None:
    with obs.span("request") as outer:
        obs.set_user("u9")
        with obs.span("child") as inner:
            log("inside")
    (record,) = records
    assert record.trace_id == f"{outer.trace_id:032x}"  # type: ignore[attr-defined]
    assert record.span_id == f"{inner.span_id:016x}"  # type: ignore[attr-defined]
    assert record.user_id == "u9"  # type: ignore[attr-defined]
    assert record.request_id == ""  # type: ignore[attr-defined]


def test_log_record_outside_a_span_has_empty_ids(
    instrumented: None, records: list[logging.LogRecord]
) -> None:
    log("outside")
    (record,) = records
    assert (record.trace_id, record.span_id, record.request_id, record.user_id) == (  # type: ignore[attr-defined]
        "",
        "",
        "",
        "",
    )


def test_format_string_with_trace_id_works_inside_and_outside(
    obs_capture: Capture, instrumented: None
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(trace_id)s|%(span_id)s|%(message)s"))
    logger = logging.getLogger("test.obs.format")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("before")
        with obs.span("x"):
            logger.info("during")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue().splitlines() == [
        "||before",
        "00000000000000000000000000000001|0000000000000001|during",
    ]


def test_patch_is_idempotent_and_unpatch_restores_the_factory() -> None:
    original = logging.getLogRecordFactory()
    obs_logging.patch()
    patched = logging.getLogRecordFactory()
    obs_logging.patch()
    assert logging.getLogRecordFactory() is patched is not original
    obs_logging.unpatch()
    obs_logging.unpatch()
    assert logging.getLogRecordFactory() is original


def test_unpatch_leaves_a_factory_installed_after_ours_alone() -> None:
    original = logging.getLogRecordFactory()
    obs_logging.patch()
    ours = logging.getLogRecordFactory()

    def later(*args: object, **kwargs: object) -> logging.LogRecord:
        return ours(*args, **kwargs)

    logging.setLogRecordFactory(later)
    try:
        obs_logging.unpatch()
        assert logging.getLogRecordFactory() is later
    finally:
        logging.setLogRecordFactory(original)


def test_uninstrument_all_removes_the_ids(records: list[logging.LogRecord]) -> None:
    obs.instrument_all(only=["logging"])
    assert "logging" in obs.uninstrument_all()
    assert "logging" not in _registry._patched
    log("plain")
    assert not hasattr(records[0], "trace_id")
