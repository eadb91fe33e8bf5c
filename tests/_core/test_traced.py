"""The decorators (``obs.traced``, ``@obs.span(...)``): sync, async, generator and async-generator
functions, each call a span."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

import obs_middleware as obs
from obs_middleware._core.span import Span
from obs_middleware.testing import Capture


def by_name(cap: Capture) -> dict[str, dict]:
    return {r["name"]: r for r in cap.spans}


def test_traced_sync_function_is_a_span_named_by_qualname(obs_capture: Capture) -> None:
    @obs.traced
    def resize(n: int) -> int:
        return n * 2

    assert resize(21) == 42
    assert obs_capture.names == [resize.__qualname__]
    assert resize.__name__ == "resize"


def test_traced_with_name_and_static_attributes(obs_capture: Capture) -> None:
    @obs.traced(name="render", model="sdxl")
    def render() -> None:
        pass

    render()
    render()
    first, second = obs_capture.spans
    assert first["name"] == second["name"] == "render"
    assert first["model"] == second["model"] == "sdxl"
    assert first["span_id"] != second["span_id"]


async def test_traced_async_function_nests_across_await(obs_capture: Capture) -> None:
    @obs.traced(name="inner")
    async def inner() -> str:
        await asyncio.sleep(0)
        return "ok"

    async with obs.span("outer"):
        assert await inner() == "ok"
    spans = by_name(obs_capture)
    assert spans["inner"]["parent_id"] == spans["outer"]["span_id"]
    assert spans["inner"]["trace_id"] == spans["outer"]["trace_id"]


def test_traced_generator_times_the_whole_iteration_and_passes_return_value(
    obs_capture: Capture,
) -> None:
    @obs.traced(name="frames")
    def frames():
        yield 1
        yield 2
        return "done"

    def consume():
        result = yield from frames()
        return result

    gen = consume()
    assert next(gen) == 1
    assert next(gen) == 2
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    assert obs_capture.names == ["frames"]
    assert obs_capture.span("frames")["status"] == "ok"


def test_traced_generator_closed_early_is_cancelled(obs_capture: Capture) -> None:
    @obs.traced(name="frames")
    def frames():
        yield 1
        yield 2

    gen = frames()
    next(gen)
    gen.close()
    assert obs_capture.span("frames")["status"] == "cancelled"


async def test_traced_async_generator_times_the_whole_iteration(obs_capture: Capture) -> None:
    @obs.traced(name="tokens")
    async def tokens():
        for t in ("a", "b"):
            await asyncio.sleep(0)
            yield t

    assert [t async for t in tokens()] == ["a", "b"]
    assert obs_capture.names == ["tokens"]


def test_traced_generator_does_not_become_parent_of_callers_spans(obs_capture: Capture) -> None:
    @obs.traced(name="frames")
    def frames():
        yield 1
        yield 2

    def run() -> Span:
        with obs.span("caller") as caller:
            for _ in frames():
                assert obs.current_span() is caller
                with obs.span("process"):
                    pass
        return caller

    caller = contextvars.copy_context().run(run)  # a leaked span stays in this test
    spans = obs_capture.spans
    assert {s["parent_id"] for s in spans if s["name"] == "process"} == {f"{caller.span_id:016x}"}


async def test_traced_async_generator_does_not_become_parent_of_callers_spans(
    obs_capture: Capture,
) -> None:
    @obs.traced(name="tokens")
    async def tokens():
        yield "a"
        yield "b"

    async with obs.span("caller") as caller:
        async for _ in tokens():
            assert obs.current_span() is caller
            with obs.span("process"):
                pass
    spans = obs_capture.spans
    assert {s["parent_id"] for s in spans if s["name"] == "process"} == {f"{caller.span_id:016x}"}


def test_traced_exception_is_recorded_and_reraised(obs_capture: Capture) -> None:
    @obs.traced
    def fail() -> None:
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError):
        fail()
    assert obs_capture.spans[0]["error_type"] == "RuntimeError"


def test_span_as_decorator_makes_a_fresh_span_per_call(obs_capture: Capture) -> None:
    @obs.span("step", stage="a")
    def step() -> int:
        obs.current_span().set(call=True)  # type: ignore[union-attr]
        return 1

    assert step() + step() == 2
    first, second = obs_capture.spans
    assert first["name"] == second["name"] == "step"
    assert first["span_id"] != second["span_id"]
    assert first["stage"] == "a" and first["call"] is True


async def test_span_as_decorator_on_async_function(obs_capture: Capture) -> None:
    @obs.span("step")
    async def step() -> int:
        await asyncio.sleep(0)
        return 1

    assert await step() == 1
    assert obs_capture.names == ["step"]
