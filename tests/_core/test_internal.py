"""Our own failures: logged once per place with the traceback, never raised."""

from __future__ import annotations

import logging
import uuid

import pytest

from obs_middleware._core.internal import internal_error, once, warn_once


def fresh(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def test_internal_error_logs_the_handled_exception_once_per_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    where = fresh("test place")
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        for _ in range(3):
            try:
                raise KeyError("boom")
            except KeyError:
                internal_error(where, "query")
    [record] = [r for r in caplog.records if where in r.getMessage()]
    assert record.getMessage() == f"obs-middleware: internal error in {where} (query unaffected)"
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_internal_error_says_the_request_is_unaffected_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    where = fresh("test place")
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        internal_error(where)
    assert caplog.records[-1].getMessage().endswith("(request unaffected)")


def test_warn_once_formats_its_message_once_per_key_on_the_given_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = fresh("test key")
    logger = logging.getLogger("obs_middleware.test_internal")
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        warn_once(key, "%s is %d", "x", 1, logger=logger)
        warn_once(key, "%s is %d", "x", 2, logger=logger)
    [record] = [r for r in caplog.records if r.name == logger.name]
    assert record.getMessage() == "obs-middleware: x is 1"
    assert record.exc_info is None


def test_once_is_true_only_the_first_time() -> None:
    key = fresh("test key")
    assert [once(key), once(key), once(key)] == [True, False, False]
