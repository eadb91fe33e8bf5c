"""Sampling: head ratio, incoming flag, tail rule (errors and slow spans keep the whole trace)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import span as _span
from obs_middleware._core.config import SamplingOptions, from_env
from obs_middleware._core.context import parse_traceparent
from obs_middleware._core.metrics import registry
from obs_middleware._core.sampling import MAX_BUFFERED, RateLimiter, head_threshold
from obs_middleware.exporters import MemoryExporter
from obs_middleware.testing import capture


def test_head_threshold_extremes() -> None:
    assert head_threshold(1.0) == 1 << 64
    assert head_threshold(0.0) == 0
    assert head_threshold(0.25) == 1 << 62


@pytest.mark.parametrize(
    ("trace_id", "sampled"),
    [
        ((1 << 64) | 1, True),  # high bits are ignored
        (2**63 - 1, True),
        (2**63, False),
        ((1 << 127) | 2**63, False),
    ],
)
def test_head_decision_uses_low_64_bits_of_the_trace_id(
    monkeypatch: pytest.MonkeyPatch, trace_id: int, sampled: bool
) -> None:
    # Not fixed: the ids are this test's own, and the monkeypatch must restore the real ones.
    with capture(sampling=SamplingOptions(ratio=0.5), fixed=False):
        monkeypatch.setattr(_span, "randbits", lambda bits: trace_id if bits > 64 else 7)
        with obs.span("root") as s:
            assert s.sampled is sampled


def test_head_ratio_is_respected_over_many_trace_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    step = 2**64 // 1000
    ids = iter(range(0, 1000 * step, step))
    kept = 0
    # Not fixed: the ids are this test's own, and the monkeypatch must restore the real ones.
    with capture(sampling=SamplingOptions(ratio=0.25), fixed=False):
        monkeypatch.setattr(_span, "randbits", lambda bits: next(ids) if bits > 64 else 7)
        for _ in range(1000):
            with obs.span("root") as s:
                kept += s.sampled
    assert 249 <= kept <= 251


def test_ratio_zero_exports_nothing() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("root"), obs.span("child"):
            obs.emit("inside")
        obs.emit("outside")  # not part of any trace: always exported
        assert cap.names == ["outside"]


def test_error_keeps_the_whole_unsampled_trace() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("root"):
            with obs.span("ok-child"):
                pass
            with pytest.raises(RuntimeError), obs.span("failing-child"):
                raise RuntimeError
        with obs.span("other-trace"):
            pass
        assert cap.names == ["ok-child", "failing-child", "root"]
        assert len({r["trace_id"] for r in cap.spans}) == 1


def test_error_event_keeps_the_whole_unsampled_trace() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("root"):
            obs.emit("job.failed", status="error")
        assert cap.names == ["job.failed", "root"]


def test_keep_errors_false_drops_failed_unsampled_traces() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0, keep_errors=False)) as cap:
        with pytest.raises(RuntimeError), obs.span("root"):
            raise RuntimeError
        assert cap.names == []


def test_slow_trace_is_kept_whole_with_deterministic_clock() -> None:
    # The capture clock advances 1 ms per reading: a root around three children lasts 7 ms.
    with capture(sampling=SamplingOptions(ratio=0.0, slow_ms=5)) as cap:
        with obs.span("fast-root"):
            pass
        with obs.span("slow-root"):
            for name in ("a", "b", "c"):
                with obs.span(name):
                    pass
        assert cap.names == ["a", "b", "c", "slow-root"]
        assert cap.span("slow-root")["duration_ms"] == 7.0


def test_slow_child_keeps_a_fast_root() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0, slow_ms=50)) as cap:
        with obs.span("root"):
            child = obs.span("slow-child").start()
            child.end(end_ns=child.start_ns + 60_000_000)
        assert cap.names == ["slow-child", "root"]
        assert cap.span("root")["duration_ms"] < 50


def test_span_ending_after_its_kept_root_is_still_exported() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("root"):
            late = obs.span("late").start()
            late.deactivate()
            with pytest.raises(RuntimeError), obs.span("boom"):
                raise RuntimeError
        late.end()
        assert cap.names == ["boom", "root", "late"]


def test_span_ending_after_its_dropped_root_is_dropped() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with obs.span("root"):
            late = obs.span("late").start()
            late.deactivate()
        late.end()
        assert cap.names == []


def test_incoming_unsampled_flag_is_honoured_at_ratio_one() -> None:
    remote = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    with capture() as cap:
        with _span.Span("server", {}, "server", remote) as s:
            assert s.sampled is False
        assert cap.names == []


def test_incoming_sampled_flag_is_honoured_at_ratio_zero() -> None:
    remote = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with _span.Span("server", {}, "server", remote):
            pass
        assert cap.names == ["server"]


def test_tail_buffer_overflow_is_counted_as_dropped() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        with pytest.raises(RuntimeError), obs.span("root"):
            for _ in range(MAX_BUFFERED + 5):
                with obs.span("child"):
                    pass
            raise RuntimeError
        assert len(cap.spans) == MAX_BUFFERED + 1
        assert cap.metrics["obs.dropped"].points == {("tail_buffer_full",): 5}


def test_without_exporters_nothing_is_queued_and_no_worker_starts(
    configured: Callable[..., object],
) -> None:
    configured(exporters="none")
    with obs.span("root"):
        obs.emit("job.completed")
    pipeline = _setup.current_pipeline()
    assert pipeline is not None
    assert not pipeline.queue and not pipeline.started


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _start_traces(n: int) -> None:
    for _ in range(n):
        with obs.span("t"):
            pass


def test_rate_limiter_samples_everything_below_its_limit_and_the_limit_above_it(
    configured: Callable[..., object],
) -> None:
    configured(exporters=[])  # the traces only count: nothing exported to the console
    clock = _Clock()
    saved = _span.sample_threshold
    try:
        limiter = RateLimiter(100, clock=clock)
        _start_traces(50)
        clock.now += 1.0
        limiter.tick()  # 50 traces/s: under the limit
        assert limiter.in_force == 1.0 and _span.sample_threshold == head_threshold(1.0)
        _start_traces(400)
        clock.now += 1.0
        limiter.tick()  # 400 traces/s: a quarter keeps the export at 100/s
        assert limiter.in_force == pytest.approx(0.25, rel=0.05)
        assert _span.sample_threshold == head_threshold(limiter.in_force)
        _start_traces(10)
        clock.now += 0.05
        limiter.tick()  # too short a window to judge: nothing changes
        assert limiter.in_force == pytest.approx(0.25, rel=0.05)
    finally:
        _span.sample_threshold = saved


def test_rate_limiter_multiplies_a_fixed_ratio(configured: Callable[..., object]) -> None:
    configured(exporters=[])
    clock = _Clock()
    saved = _span.sample_threshold
    try:
        limiter = RateLimiter(100, ratio=0.5, clock=clock)
        _start_traces(400)
        clock.now += 1.0
        limiter.tick()
        assert limiter.in_force == pytest.approx(0.125, rel=0.05)
    finally:
        _span.sample_threshold = saved


def test_adaptive_export_keeps_every_error_trace_at_ten_times_the_limit_and_counts_the_rest(
    configured: Callable[..., object],
) -> None:
    memory = MemoryExporter()
    limit = 50
    configured(exporters=[memory], sampling=SamplingOptions(traces_per_s=limit))
    errors = ok = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # ~10x the limit in errors, many more ok traces
        for _ in range(20):
            with obs.span("ok"):
                pass
            ok += 1
        with pytest.raises(ValueError), obs.span("fails"):
            raise ValueError("x")
        errors += 1
        time.sleep(0.002)
    assert obs.flush(5)
    roots = [r for r in memory.records if r["parent_id"] is None]
    exported_errors = [r for r in roots if r["name"] == "fails"]
    exported_ok = [r for r in roots if r["name"] == "ok"]
    assert errors >= 10 * limit
    assert len(exported_errors) == errors  # the tail rule keeps every error trace
    assert len(exported_ok) < ok / 2  # the limit took hold
    sampled_out = registry.snapshot()["obs.traces.sampled_out"].points[()]
    assert len(exported_ok) + sampled_out == ok  # nothing left out silently
    # Once the limiter acts, exported roots say by how much, for re-weighting.
    assert any(0 < r.get("sampling.ratio", 1.0) < 1.0 for r in exported_ok)


def test_no_limit_exports_every_trace(configured: Callable[..., object]) -> None:
    memory = MemoryExporter()
    configured(exporters=[memory], sampling=SamplingOptions(traces_per_s=0))
    _start_traces(3000)
    assert obs.flush(5)
    assert len(memory.records) == 3000
    assert all("sampling.ratio" not in r for r in memory.records)


def test_traces_per_s_is_read_from_the_environment() -> None:
    assert from_env({"OBS_TRACES_PER_S": "25"}).sampling.traces_per_s == 25.0
    assert SamplingOptions().traces_per_s == 100.0  # adaptive export is the default
    with pytest.raises(ValueError, match="traces_per_s"):
        SamplingOptions(traces_per_s=-1)


def test_export_test_answers_as_the_finisher_decides() -> None:
    with capture(sampling=SamplingOptions(ratio=0.0, slow_ms=5)), obs.span("root") as root:
        start = root.start_ns
        assert not _span.may_export(root, start + 4_000_000)  # fast, ok, unsampled
        assert _span.may_export(root, start + 5_000_000)  # slow
        root.status = "error"
        assert _span.may_export(root, start)
        root.status = "ok"
        root.keep()
        assert _span.may_export(root, start)
    with capture(sampling=SamplingOptions(ratio=0.0, keep_errors=False)), obs.span("r") as root:
        root.status = "error"
        assert not _span.may_export(root, root.start_ns)
    with capture() as cap, obs.span("root") as root:  # sampled
        assert _span.may_export(root, root.start_ns)
    assert cap.names == ["root"]


def test_without_exporters_nothing_may_be_exported(configured: Callable[..., object]) -> None:
    configured(exporters="none")
    with obs.span("root") as root:
        assert not _span.may_export(root, root.start_ns + 10**12)


def test_held_spans_are_built_only_for_a_kept_trace_and_a_failing_builder_is_counted() -> None:
    built: list[str] = []

    def build(parent: _span.Span, name: str) -> _span.Span:
        built.append(name)
        if name == "broken":
            raise ValueError("builder bug")
        return _span.child_span(parent, name, {}, "client", parent.start_ns, parent.start_ns + 1)

    def hold(names: list[str], fail: bool) -> None:
        with obs.span("root") as root:
            buffer = root.local.buffer
            assert buffer is not None
            buffer.extend((build, root, name) for name in names)
            if fail:
                root.status = "error"

    with capture(sampling=SamplingOptions(ratio=0.0)) as cap:
        hold(["forgotten"], fail=False)
        assert built == []
        dropped_before = registry.snapshot()["obs.dropped"].points.get(("internal_error",), 0)
        hold(["q1", "broken", "q2"], fail=True)
        assert built == ["q1", "broken", "q2"]
        assert cap.names == ["q1", "q2", "root"]
        q1, _, root = cap.spans
        assert q1["parent_id"] == root["span_id"] and q1["trace_id"] == root["trace_id"]
        dropped = registry.snapshot()["obs.dropped"].points[("internal_error",)]
        assert dropped == dropped_before + 1
