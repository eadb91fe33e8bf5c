"""The OpenTelemetry bridge, with the real OpenTelemetry SDK: obs spans and OpenTelemetry spans
continue each other's traces, nested either way, in threads and asyncio tasks alike."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

import obs_middleware as obs
from obs_middleware._core import internal
from obs_middleware._core import span as _span
from obs_middleware._core.config import SamplingOptions
from obs_middleware.integrations import opentelemetry as bridge
from obs_middleware.testing import Capture, capture


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """What the OpenTelemetry SDK exports (its own in-memory exporter)."""
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider.get_tracer("test")


@pytest.fixture
def bridged() -> Iterator[None]:
    report = obs.instrument_all(only=["opentelemetry"])
    assert report.patched == ["opentelemetry"]
    yield
    obs.uninstrument_all()


def ids(span: Any) -> tuple[int, int]:
    """(trace id, span id) of an OpenTelemetry span."""
    found = span.get_span_context()
    return found.trace_id, found.span_id


def parent_of(span: Any) -> int:
    """The parent span id of a finished OpenTelemetry SDK span (0: a root)."""
    assert isinstance(span, ReadableSpan)
    return span.parent.span_id if span.parent is not None else 0


def record(cap: Capture, name: str) -> dict[str, Any]:
    obs.flush()
    return cap.span(name)


def test_obs_span_inside_an_otel_span_continues_its_trace(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("otel.request") as outer, obs.span("obs.work") as inner:
        pass
    trace_id, span_id = ids(outer)
    assert (inner.trace_id, inner.parent_id) == (trace_id, span_id)
    assert inner.sampled and inner.is_root  # the first of its trace in obs: a local root
    exported = record(obs_capture, "obs.work")
    assert exported["trace_id"] == f"{trace_id:032x}"
    assert exported["parent_id"] == f"{span_id:016x}"


def test_otel_span_inside_an_obs_span_continues_ours(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with obs.span("obs.request") as outer, tracer.start_as_current_span("otel.call") as inner:
        assert trace.get_current_span() is inner
    (finished,) = exported.get_finished_spans()
    assert ids(finished)[0] == outer.trace_id
    assert parent_of(finished) == outer.span_id
    assert finished.get_span_context().trace_flags.sampled
    assert record(obs_capture, "obs.request")["span_id"] == f"{outer.span_id:016x}"


def test_otel_sees_the_obs_span_as_its_current_span(obs_capture: Capture, bridged: None) -> None:
    assert trace.get_current_span() is trace.INVALID_SPAN
    with obs.span("obs.request") as ours:
        seen = trace.get_current_span()
        assert isinstance(seen, bridge.ObsSpan)
        assert ids(seen) == (ours.trace_id, ours.span_id)
        assert not seen.is_recording()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # what an OpenTelemetry HTTP client instrumentation sends
        assert carrier["traceparent"] == f"00-{ours.trace_id:032x}-{ours.span_id:016x}-01"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_obs_otel_obs_otel_each_continues_the_innermost(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with obs.span("obs.1") as obs1:
        with tracer.start_as_current_span("otel.2") as otel2:
            with obs.span("obs.3") as obs3, tracer.start_as_current_span("otel.4") as otel4:
                pass
            with obs.span("obs.5") as obs5:  # a sibling of obs.3: still under otel.2
                pass
        with obs.span("obs.6") as obs6:  # otel.2 ended: back under obs.1
            pass
    finished = {s.name: s for s in exported.get_finished_spans()}
    assert {ids(otel2)[0], ids(otel4)[0], obs3.trace_id, obs5.trace_id} == {obs1.trace_id}
    assert parent_of(finished["otel.2"]) == obs1.span_id
    assert obs3.parent_id == obs5.parent_id == ids(otel2)[1]
    assert parent_of(finished["otel.4"]) == obs3.span_id
    assert obs6.parent_id == obs1.span_id
    # one trace in obs: the spans under otel.2 share obs.1's LocalTrace (user, tail decision)
    assert obs3.local is obs5.local is obs6.local is obs1.local
    assert not obs3.is_root
    records = {r["name"]: r for r in obs_capture.spans}
    assert records["obs.3"]["parent_id"] == f"{ids(otel2)[1]:016x}"


def test_otel_obs_otel_obs_each_continues_the_innermost(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("otel.1") as otel1:
        with obs.span("obs.2") as obs2:
            with obs.span("obs.2a") as obs2a:  # otel.1 is older than obs.2: under obs.2
                pass
            with tracer.start_as_current_span("otel.3") as otel3, obs.span("obs.4") as obs4:
                pass
            with tracer.start_as_current_span("otel.5"):  # otel.3 ended: under obs.2 again
                pass
        with tracer.start_as_current_span("otel.6"):  # obs.2 ended: under otel.1
            pass
    finished = {s.name: s for s in exported.get_finished_spans()}
    trace_id = ids(otel1)[0]
    assert {obs2.trace_id, obs4.trace_id} | {ids(s)[0] for s in finished.values()} == {trace_id}
    assert obs2.parent_id == ids(otel1)[1]
    assert obs2a.parent_id == obs2.span_id and obs2a.local is obs2.local
    assert parent_of(finished["otel.3"]) == obs2.span_id
    assert obs4.parent_id == ids(otel3)[1]
    assert parent_of(finished["otel.5"]) == obs2.span_id
    assert parent_of(finished["otel.6"]) == ids(otel1)[1]


def test_asyncio_tasks_continue_the_innermost_of_their_own_context(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    seen: dict[str, _span.Span] = {}

    async def obs_then_otel(name: str) -> None:
        with obs.span(name) as mine:
            seen[name] = mine
            await asyncio.sleep(0)  # the other tasks run here, in their own contexts
            with tracer.start_as_current_span(name + ".otel"):
                await asyncio.sleep(0)
                with obs.span(name + ".leaf") as leaf:
                    seen[name + ".leaf"] = leaf

    async def main() -> None:
        with tracer.start_as_current_span("otel.root"):
            await asyncio.gather(*(obs_then_otel(f"task{i}") for i in range(3)))

    asyncio.run(main())
    finished = {s.name: s for s in exported.get_finished_spans()}
    root_trace, root_id = ids(finished["otel.root"])
    for i in range(3):
        task, leaf, otel = seen[f"task{i}"], seen[f"task{i}.leaf"], finished[f"task{i}.otel"]
        assert (task.trace_id, task.parent_id) == (root_trace, root_id)
        assert parent_of(otel) == task.span_id
        assert (leaf.trace_id, leaf.parent_id) == (root_trace, ids(otel)[1])
        assert leaf.local is task.local


def test_an_obs_span_keeps_the_otel_sampled_flag_and_tracestate(
    obs_capture: Capture, bridged: None
) -> None:
    remote = SpanContext(
        0x1234,
        0x99,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
        trace_state=TraceState([("vendor", "abc")]),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with obs.span("obs.unsampled") as ours:
            pass
    finally:
        otel_context.detach(token)
    assert (ours.trace_id, ours.parent_id, ours.sampled) == (0x1234, 0x99, False)
    assert ours.local.tracestate == "vendor=abc"
    obs.flush()
    assert obs_capture.spans == []  # sampled out upstream, fast and ok: not exported


def test_an_otel_span_keeps_the_obs_sampled_flag_and_tracestate(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    unsampled = SamplingOptions(traces_per_s=0, ratio=0.0)
    with (
        capture(sampling=unsampled),
        obs.span("obs.unsampled") as ours,
        tracer.start_as_current_span("otel.child") as child,
    ):
        assert ids(child)[0] == ours.trace_id
        assert not child.get_span_context().trace_flags.sampled
        assert not child.is_recording()  # the SDK's ParentBased sampler followed ours
    assert exported.get_finished_spans() == ()
    carrier = {"traceparent": f"00-{0xAB:032x}-{0xCD:016x}-01", "tracestate": "vendor=abc"}
    with (
        obs.job("j1", service_type="render", context=obs.extract(carrier)),
        tracer.start_as_current_span("otel.job_child") as child,
    ):
        assert ids(child)[0] == 0xAB
        assert child.get_span_context().trace_state.to_header() == "vendor=abc"


def test_an_unrecorded_otel_span_between_two_obs_spans_is_skipped(
    obs_capture: Capture, bridged: None
) -> None:
    # A tracer that records nothing stands for an OpenTelemetry span sampled out by its rules.
    silent = TracerProvider(sampler=ALWAYS_OFF).get_tracer("silent")
    with obs.span("obs.1") as obs1, silent.start_as_current_span("otel.off") as off:
        assert not off.is_recording() and ids(off)[0] == obs1.trace_id
        with obs.span("obs.2") as obs2:
            pass
    assert obs2.parent_id == obs1.span_id  # never an unexported parent


def test_an_explicit_otel_context_is_left_alone(
    obs_capture: Capture, bridged: None, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with (
        obs.span("obs.request") as ours,
        tracer.start_as_current_span("otel.fresh", context=Context()) as fresh,
    ):
        assert ids(fresh)[0] != ours.trace_id  # asked for a new trace: gets one
        with obs.span("obs.inner") as inner:  # and our span inside it continues that
            pass
    assert (inner.trace_id, inner.parent_id) == ids(fresh)
    assert parent_of(exported.get_finished_spans()[0]) == 0


def test_spans_started_before_the_bridge_stay_apart_and_uninstrument_restores(
    obs_capture: Capture, tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    runtime = otel_context._RUNTIME_CONTEXT
    assert _span.bridge is None
    with tracer.start_as_current_span("otel.off") as off, obs.span("obs.off") as apart:
        assert apart.trace_id != ids(off)[0] and apart.parent_id == 0
    obs.instrument_all(only=["opentelemetry"])
    assert otel_context._RUNTIME_CONTEXT is not runtime and _span.bridge is not None
    with obs.span("obs.on") as ours, tracer.start_as_current_span("otel.on") as child:
        assert ids(child)[0] == ours.trace_id
    assert obs.uninstrument_all() == ["opentelemetry"]
    assert otel_context._RUNTIME_CONTEXT is runtime and _span.bridge is None
    with obs.span("obs.after") as ours, tracer.start_as_current_span("otel.after") as child:
        assert ids(child)[0] != ours.trace_id
        assert trace.get_current_span() is child


def test_a_failing_bridge_logs_once_and_the_span_starts_as_a_root(
    obs_capture: Capture,
    bridged: None,
    tracer: trace.Tracer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def get_current(self) -> Context:
            raise RuntimeError("context store gone")

    runtime = otel_context._RUNTIME_CONTEXT
    assert isinstance(runtime, bridge._Bridged)
    with tracer.start_as_current_span("otel.request") as outer:
        monkeypatch.setattr(internal, "_warned", set())
        monkeypatch.setattr(runtime, "inner", Broken())
        with caplog.at_level(logging.WARNING, "obs_middleware"), obs.span("obs.root") as ours:
            pass
        monkeypatch.undo()
    assert ours.parent_id == 0 and ours.trace_id != ids(outer)[0]
    assert "internal error in opentelemetry span start" in caplog.text


def test_a_failing_context_lookup_returns_opentelemetrys_own(
    obs_capture: Capture,
    bridged: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(internal, "_warned", set())
    with obs.span("obs.request") as ours:
        ours.foreign = ("torn",)  # what a bug would leave there
        with caplog.at_level(logging.WARNING, "obs_middleware"):
            assert trace.get_current_span() is trace.INVALID_SPAN
    assert "internal error in opentelemetry get_current" in caplog.text


def test_without_an_sdk_otel_spans_carry_our_ids_and_hide_nothing(
    obs_capture: Capture, bridged: None
) -> None:
    """With the OpenTelemetry API alone, its spans are non-recording (with the parent's context)
    or invalid: either way ours stays the one propagated and the parent of our spans."""
    with obs.span("obs.request") as ours:
        for made in (
            trace.NoOpTracer().start_as_current_span("otel.noop"),
            trace.use_span(trace.INVALID_SPAN),
        ):
            with made as theirs:
                assert not theirs.is_recording()
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                assert carrier["traceparent"] == f"00-{ours.trace_id:032x}-{ours.span_id:016x}-01"
                with obs.span("obs.inner") as inner:
                    pass
                assert inner.parent_id == ours.span_id
