"""What LogHandler and ExportLogs share: our loggers, the export worker and re-entry skipped,
the rate limit."""

from __future__ import annotations

import threading

import pytest

import obs_middleware as obs
from obs_middleware import _log_events
from obs_middleware._core.config import Config
from obs_middleware._core.metrics import registry
from obs_middleware._log_events import export_log, is_ours, log_failed, skipped_here
from obs_middleware._setup import build_config
from obs_middleware.testing import Capture, capture


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


def test_a_flood_is_cut_at_the_rate_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    with capture(logs_per_s=5) as cap:
        clock = [1000.0]
        monkeypatch.setattr(_log_events.time, "monotonic", lambda: clock[0])
        _log_events.set_log_rate(5)  # its bucket starts full at the patched clock
        for i in range(12):
            export_log("WARNING", "app", f"flood {i}")
        clock[0] += 0.5  # two and a half more tokens
        for i in range(3):
            export_log("ERROR", "app", f"later {i}")
        obs.flush()
        messages = [r["log.message"] for r in cap.events]
    assert messages == [f"flood {i}" for i in range(5)] + ["later 0", "later 1"]
    assert registry.snapshot()["obs.dropped"].points == {("log_rate",): 8}


def test_no_limit_at_zero_and_each_configuration_starts_with_a_full_bucket() -> None:
    with capture(logs_per_s=0) as cap:
        for i in range(500):
            export_log("WARNING", "app", f"{i}")
        obs.flush()
        assert len(cap.events) == 500
    with capture(logs_per_s=3) as cap:
        for i in range(5):
            export_log("WARNING", "app", f"{i}")
        obs.flush()
        assert len(cap.events) == 3


def test_logs_per_s_is_checked_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="logs_per_s"):
        Config(logs_per_s=-1)
    monkeypatch.setenv("OBS_LOGS_PER_S", "2.5")
    assert build_config().logs_per_s == 2.5
