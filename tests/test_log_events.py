"""What LogHandler and ExportLogs share: our loggers, the export worker and re-entry skipped."""

from __future__ import annotations

import threading

import pytest

from obs_middleware import _log_events
from obs_middleware._core.metrics import registry
from obs_middleware._log_events import export_log, is_ours, log_failed, skipped_here
from obs_middleware.testing import Capture


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("obs_middleware", True),
        ("obs_middleware.exporters.otlp", True),
        ("obs_middlewarex", False),
        ("app.obs_middleware", False),
        ("", False),
        (None, False),
    ],
)
def test_is_ours(name: str | None, ours: bool) -> None:
    assert is_ours(name) is ours


def test_the_export_worker_and_a_record_being_exported_are_skipped() -> None:
    seen: list[bool] = []
    worker = threading.Thread(target=lambda: seen.append(skipped_here()), name="obs-export")
    worker.start()
    worker.join()
    assert seen == [True]
    assert skipped_here() is False
    _log_events._state.busy = True
    try:
        assert skipped_here() is True
    finally:
        _log_events._state.busy = False


def test_export_log_leaves_no_flag_behind_when_it_fails(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("redaction bug")

    monkeypatch.setattr(_log_events, "scrub_error", broken)
    with pytest.raises(RuntimeError):
        export_log("WARNING", "app", "text")
    assert skipped_here() is False  # the next record is exported
    log_failed()
    assert registry.snapshot()["obs.dropped"].points == {("log_failed",): 1}
    monkeypatch.undo()
    export_log("WARNING", "app", "text", code=("app.py", 7, "render"))
    (record,) = obs_capture.events
    assert (record["code.file.path"], record["code.line.number"]) == ("app.py", 7)
