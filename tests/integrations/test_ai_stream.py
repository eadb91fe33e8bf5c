"""Streams attached to an AI call: transparent proxies that end the call when the stream ends
(exhausted, closed, collected, failed), sync and async, re-entered by lazy SDK generators."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import obs_middleware as obs
from obs_middleware._core.span import current_span
from obs_middleware.integrations import _ai
from obs_middleware.integrations._ai import AICall, ai_call, current_call
from obs_middleware.testing import Capture


def chunks(usages: list[int | None]) -> Iterator[dict[str, Any]]:
    for i, usage in enumerate(usages):
        yield {"i": i, "usage": usage}


def take_usage(call: AICall, item: dict[str, Any]) -> None:
    if item["usage"] is not None:
        call.set_tokens(input=item["usage"], output=item["usage"])


def test_stream_ends_when_exhausted_with_usage_of_the_last_usage_chunk(
    obs_capture: Capture,
) -> None:
    with obs.span("request"):
        with ai_call("openai", "chat", "gpt-4o-mini") as call:
            stream = call.wrap_stream(chunks([5, None, 20, None]), take_usage)
        assert current_span() is not None and current_span().name == "request"  # type: ignore[union-attr]
        assert obs_capture.spans == []
        items = list(stream)
    assert [i["i"] for i in items] == [0, 1, 2, 3]
    record = obs_capture.span("ai.request")
    assert (record["ai.input_tokens"], record["ai.output_tokens"]) == (20, 20)  # not 25
    assert record["ai.stream_end"] == "done"
    assert record["status"] == "ok"


def test_stream_closed_early_ends_the_span(obs_capture: Capture) -> None:
    with ai_call("p", "op") as call:
        stream = call.wrap_stream(chunks([1, 2, 3]))
    next(stream)
    stream.close()
    assert obs_capture.span("ai.request")["ai.stream_end"] == "close"
    with pytest.raises(StopIteration):
        next(stream)  # a closed generator stays closed: behaviour unchanged
    assert len(obs_capture.spans) == 1


def test_stream_collected_unfinished_ends_the_span(obs_capture: Capture) -> None:
    with ai_call("p", "op") as call:
        stream = call.wrap_stream(chunks([1, 2, 3]))
    next(stream)
    del stream
    gc.collect()
    assert obs_capture.span("ai.request")["ai.stream_end"] == "gc"


def test_stream_error_mid_way_fails_the_span(obs_capture: Capture) -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ConnectionError("reset")

    with ai_call("p", "op") as call:
        stream = call.wrap_stream(broken())
    with pytest.raises(ConnectionError):
        list(stream)
    record = obs_capture.span("ai.request")
    assert (record["status"], record["error_type"], record["ai.stream_end"]) == (
        "error",
        "ConnectionError",
        "error",
    )


def test_stream_proxy_keeps_type_attributes_and_context_manager(obs_capture: Capture) -> None:
    class SdkStream:
        def __init__(self) -> None:
            self.response = "raw"
            self.closed = False

        def __next__(self) -> int:
            raise StopIteration

        def __iter__(self) -> Iterator[int]:
            return self

        def __enter__(self) -> SdkStream:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

        def close(self) -> None:
            self.closed = True

    raw = SdkStream()
    with ai_call("p", "op") as call:
        stream = call.wrap_stream(raw)
        assert call.wrap_stream(raw) is raw  # only the first stream is wrapped
    assert isinstance(stream, SdkStream)
    assert stream.response == "raw"
    with stream as entered:
        assert entered is stream
    assert raw.closed
    assert obs_capture.span("ai.request")["ai.stream_end"] == "close"


def test_reentered_stream_joins_inner_calls_and_nests_spans(obs_capture: Capture) -> None:
    def lazy_sdk_generator() -> Iterator[str]:
        # what replicate.stream does on its first next(): create the prediction
        with ai_call("replicate", "predictions.create") as inner:
            inner.set_request_id("p-42")
            with obs.span("POST /v1/predictions"):
                pass
        yield "token"

    with obs.span("request"):
        with ai_call("replicate", "stream", "a/b") as call:
            stream = call.wrap_stream(lazy_sdk_generator(), reenter=True)
        assert list(stream) == ["token"]
        assert current_span().name == "request"  # type: ignore[union-attr]
    http, ai, request = obs_capture.spans
    assert ai["ai.request_id"] == "p-42"
    assert (ai["span_id"], ai["parent_id"]) == ("0000000000000002", request["span_id"])
    assert http["parent_id"] == ai["span_id"]
    assert current_call() is None


async def test_async_stream_ends_when_exhausted(obs_capture: Capture) -> None:
    async def agen() -> AsyncIterator[dict[str, Any]]:
        for item in chunks([None, 7]):
            yield item

    with ai_call("p", "op", "m") as call:
        stream = call.wrap_stream(agen(), take_usage)
    assert [item["i"] async for item in stream] == [0, 1]
    record = obs_capture.span("ai.request")
    assert (record["ai.input_tokens"], record["ai.stream_end"]) == (7, "done")


async def test_async_stream_aclose_and_gc(obs_capture: Capture) -> None:
    async def agen() -> AsyncIterator[int]:
        for i in range(5):
            yield i
            await asyncio.sleep(0)

    with ai_call("p", "first") as call:
        first = call.wrap_stream(agen())
    with ai_call("p", "second") as call:
        second = call.wrap_stream(agen())
    assert await first.__anext__() == 0
    await first.aclose()
    assert await second.__anext__() == 0
    del second
    gc.collect()
    ends = {s["ai.operation"]: s["ai.stream_end"] for s in obs_capture.spans}
    assert ends == {"first": "close", "second": "gc"}


def test_collection_inside_our_own_metric_update_is_deferred(obs_capture: Capture) -> None:
    with ai_call("p", "orphan") as call:
        stream = call.wrap_stream(chunks([1]))
    _ai._tls.busy = True  # as if the collector ran while this thread recorded AI metrics
    try:
        del stream
        gc.collect()
        assert len(_ai._orphans) == 1
    finally:
        _ai._tls.busy = False
    with ai_call("p", "next"):
        pass
    assert not _ai._orphans
    assert {s["ai.operation"] for s in obs_capture.spans} == {"orphan", "next"}


# -- latency: time to first token, output tokens per second ---------------------------------------
def test_stream_records_time_to_first_token_and_output_tokens_per_second(
    obs_capture: Capture,
) -> None:
    # The capture's clock advances 1 ms per reading: start, first item, end of generation.
    with ai_call("openai", "chat", "gpt-4o-mini") as call:
        stream = call.wrap_stream(chunks([None, None, 20]), take_usage)
    list(stream)
    record = obs_capture.span("ai.request")
    assert (record["ai.time_to_first_token_ms"], record["ai.output_tokens_per_s"]) == (1.0, 20000.0)
    points = obs_capture.metrics["ai.time_to_first_token"].points
    assert points[("openai", "gpt-4o-mini", "chat")].sum == 1.0
    rates = obs_capture.metrics["ai.output_tokens_per_s"].points
    assert rates[("openai", "gpt-4o-mini", "chat")].count == 1


def test_stream_reads_the_clock_once_for_its_items_whatever_their_number(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from obs_middleware._core import span as _span  # noqa: PLC0415

    with ai_call("p", "op") as call:
        stream = call.wrap_stream(chunks([None] * 500))
    reads = 0
    clock = _span.clock_ns

    def counting() -> int:
        nonlocal reads
        reads += 1
        return clock()

    monkeypatch.setattr(_span, "clock_ns", counting)
    it = iter(stream)
    for _ in range(499):
        next(it)
    assert reads == 1  # the first item only: no per-chunk clock reads


async def test_async_stream_records_time_to_first_token(obs_capture: Capture) -> None:
    async def agen() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    with ai_call("p", "op") as call:
        stream = call.wrap_stream(agen())
    assert [i async for i in stream] == [0, 1, 2]
    record = obs_capture.span("ai.request")
    assert record["ai.time_to_first_token_ms"] == 1.0
    assert "ai.output_tokens_per_s" not in record  # no output tokens reported: no rate


def test_stream_ended_before_any_item_has_no_time_to_first_token(obs_capture: Capture) -> None:
    with ai_call("p", "op") as call:
        stream = call.wrap_stream(chunks([]))
    assert list(stream) == []
    record = obs_capture.span("ai.request")
    assert "ai.time_to_first_token_ms" not in record
    assert not obs_capture.metrics["ai.time_to_first_token"].points
