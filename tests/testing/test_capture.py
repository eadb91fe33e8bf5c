"""The capture helper and ``obs_capture`` fixture: deterministic ids and clock, isolation."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import span as _span
from obs_middleware._core.metrics import registry
from obs_middleware.testing import Capture, capture, deterministic


def test_fixture_gives_sequential_ids_and_a_millisecond_clock(obs_capture: Capture) -> None:
    with obs.span("a"), obs.span("b"):
        pass
    with obs.span("c"):
        pass
    assert [
        (r["name"], r["trace_id"][-1], r["span_id"][-1], r["start"]) for r in obs_capture.spans
    ] == [
        ("b", "1", "2", "2026-01-01T00:00:00.002000Z"),
        ("a", "1", "1", "2026-01-01T00:00:00.001000Z"),
        ("c", "2", "3", "2026-01-01T00:00:00.005000Z"),
    ]


def test_whole_trace_snapshot_with_event_and_user(obs_capture: Capture) -> None:
    with obs.span("job.run", _kind="consumer", **{"job.id": "j1"}):
        obs.set_user("u1", tier="pro")
        obs.emit("job.progress", **{"job.progress": 0.5})
    base = {
        "trace_id": "00000000000000000000000000000001",
        "service": "app",
        "environment": "development",
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": "u1",
        "tier": "pro",
        "request_id": None,
        "host.name": "test-host",
        "service.instance.id": "0000000000000000",
    }
    assert obs_capture.records == [
        {
            "type": "event",
            "name": "job.progress",
            "span_id": "0000000000000001",
            "parent_id": None,
            "start": "2026-01-01T00:00:00.002000Z",
            "duration_ms": None,
            **base,
            "job.progress": 0.5,
        },
        {
            "type": "span",
            "name": "job.run",
            "span_id": "0000000000000001",
            "parent_id": None,
            "start": "2026-01-01T00:00:00.001000Z",
            "duration_ms": 2.0,
            **base,
            "span.kind": "consumer",
            "job.id": "j1",
        },
    ]


def test_span_lookup_and_names(obs_capture: Capture) -> None:
    with obs.span("x"):
        obs.emit("e")
    assert obs_capture.names == ["e", "x"]
    assert obs_capture.span("x")["type"] == "span"
    with pytest.raises(AssertionError, match="expected one span 'missing'"):
        obs_capture.span("missing")


def test_clear_forgets_records_and_metrics(obs_capture: Capture) -> None:
    registry.counter("test.capture.clear", ()).add(())
    with obs.span("x"):
        pass
    obs_capture.clear()
    assert obs_capture.records == []
    assert obs_capture.metrics["test.capture.clear"].points == {}


def test_capture_restores_the_previous_configuration_and_clock() -> None:
    saved = (_setup.current_pipeline(), _span.clock_ns, _span.randbits)
    with capture() as outer:
        with capture() as inner, obs.span("inner"):
            pass
        with obs.span("outer"):
            pass
        assert inner.names == ["inner"]
        assert outer.names == ["outer"]
    assert (_setup.current_pipeline(), _span.clock_ns, _span.randbits) == saved


def test_capture_resets_metrics_on_entry() -> None:
    registry.counter("test.capture.reset", ()).add(())
    with capture() as cap:
        assert cap.metrics["test.capture.reset"].points == {}


def test_capture_not_fixed_uses_real_ids() -> None:
    with capture(fixed=False) as cap:
        with obs.span("x"):
            pass
        assert cap.span("x")["trace_id"] != "00000000000000000000000000000001"


def test_deterministic_alone_restores_on_exit() -> None:
    saved = (_span.clock_ns, _span.randbits, _span.wall_anchor_ns)
    with deterministic():
        assert _span.clock_ns() == 1_000_000
        assert _span.clock_ns() == 2_000_000
        assert _span.randbits(128) == 1
        assert _span.randbits(64) == 1
    assert (_span.clock_ns, _span.randbits, _span.wall_anchor_ns) == saved


def test_capture_passes_configure_options_through() -> None:
    with capture(service="svc", environment="test") as cap:
        with obs.span("x"):
            pass
        record = cap.span("x")
    assert (record["service"], record["environment"]) == ("svc", "test")


APP_MODULE = """
import obs_middleware as obs

obs.configure(
    service="shop",
    exporters=["jsonl:{path}"],
    sampling=obs.SamplingOptions(ratio=0.0, keep_errors=False),
)


def handle():
    with obs.span("checkout"):
        pass
"""


def _import_app(tmp_path: Path) -> ModuleType:
    source = tmp_path / "shop_app.py"
    source.write_text(APP_MODULE.format(path=tmp_path / "app.jsonl"))
    spec = importlib.util.spec_from_file_location("shop_app", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_capture_wins_over_configure_called_by_an_app_module_imported_in_the_test(
    obs_capture: Capture, tmp_path: Path
) -> None:
    _import_app(tmp_path).handle()  # configure() at import: its own exporter, 0 % sampling
    assert [(r["name"], r["service"]) for r in obs_capture.spans] == [("checkout", "shop")]
    assert not (tmp_path / "app.jsonl").exists()  # the app's exporter was never built


def test_a_configure_inside_a_capture_ends_with_it(tmp_path: Path) -> None:
    saved = _setup.current_pipeline()
    with capture(service="pinned") as cap:
        made = _import_app(tmp_path)
        assert _setup.current_pipeline() is not saved
        made.handle()
        assert [r["service"] for r in cap.spans] == ["pinned"]  # given to capture(): kept
    assert _setup.current_pipeline() is saved


def test_names_and_metrics_are_properties_and_the_old_calls_warn(obs_capture: Capture) -> None:
    with obs.span("x"):
        pass
    assert obs_capture.names == ["x"]
    assert "obs.dropped" in obs_capture.metrics
    with pytest.warns(DeprecationWarning, match=r"Capture.names\(\) is deprecated"):
        assert obs_capture.names() == ["x"]
    with pytest.warns(DeprecationWarning, match=r"Capture.metrics\(\) is deprecated"):
        assert obs_capture.metrics() == obs_capture.metrics
