"""The openai SDK's real code against the emulator: one ``ai.request`` span per call, with model,
ids, usage and cost; streams, the ``.stream()`` double-count trap, failures, privacy."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions
from obs_middleware.cli.report import figures, report
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.testing import Capture, capture
from obs_middleware.testing.emulators.openai import OpenAIEmulator, error_body

from .._ai_checks import ai_spans, only_ai_span, pick

HI = [{"role": "user", "content": "Say hi"}]
WORDS = ["", "Hello", " from", " the", " emulator."]
USAGE = {"include_usage": True}


# -- chat ----------------------------------------------------------------------------------------
def test_chat_completion_is_one_span_with_model_ids_usage_and_cost(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    with obs.span("request"):
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=HI, temperature=0.2, max_tokens=50
        )
    assert completion.choices[0].message.content == "Hello from the emulator."
    record = only_ai_span(obs_capture)
    assert record["parent_id"] == obs_capture.span("request")["span_id"]
    assert pick(
        record,
        "span.kind",
        "status",
        "ai.provider",
        "ai.operation",
        "ai.model",
        "ai.response_model",
        "ai.prompt",
        "ai.input.temperature",
        "ai.input.max_tokens",
        "ai.request_id",
        "ai.response_id",
        "ai.input_tokens",
        "ai.cached_tokens",
        "ai.output_tokens",
        "ai.finish_reason",
        "cost.usd",
    ) == {
        "span.kind": "client",
        "status": "ok",
        "ai.provider": "openai",
        "ai.operation": "chat",
        "ai.model": "gpt-4o-mini",  # as requested: the one name metrics and reports use
        "ai.response_model": "gpt-4o-mini-2024-07-18",  # the snapshot, priced as gpt-4o-mini
        "ai.prompt": "Say hi",
        "ai.input.temperature": 0.2,
        "ai.input.max_tokens": 50,
        "ai.request_id": completion._request_id,
        "ai.response_id": completion.id,
        "ai.input_tokens": 20,
        "ai.cached_tokens": 0,
        "ai.output_tokens": 10,
        "ai.finish_reason": "stop",
        "cost.usd": 9e-06,  # (20 x $0.15 + 10 x $0.60) / 1M
    }
    assert obs_capture.metrics["ai.requests"].points == {("openai", "gpt-4o-mini", "chat"): 1}


async def test_async_chat_completion(aclient: openai.AsyncOpenAI, obs_capture: Capture) -> None:
    completion = await aclient.chat.completions.create(model="gpt-4o", messages=HI)
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.model", "ai.response_model", "ai.response_id", "cost.usd") == {
        "ai.model": "gpt-4o",
        "ai.response_model": "gpt-4o-2024-08-06",
        "ai.response_id": completion.id,
        "cost.usd": 0.00015,  # (20 x $2.50 + 10 x $10) / 1M
    }


def test_cached_and_reasoning_tokens_are_priced_at_their_rates(
    client: openai.OpenAI, emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    emu.cached_tokens, emu.reasoning_tokens = 5, 4
    client.chat.completions.create(model="o4-mini", messages=HI)
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.cached_tokens", "ai.reasoning_tokens") == {
        "ai.cached_tokens": 5,
        "ai.reasoning_tokens": 4,
    }
    # o4-mini: 15 x $1.10 + 5 cached x $0.275 + 10 out (reasoning included) x $4.40, per 1M
    assert record["cost.usd"] == pytest.approx(61.875e-6)


def test_parse_is_one_span(client: openai.OpenAI, obs_capture: Capture) -> None:
    client.chat.completions.parse(model="gpt-4o-mini", messages=HI)
    assert only_ai_span(obs_capture)["ai.operation"] == "chat"


# -- streams -------------------------------------------------------------------------------------
def test_stream_yields_unchanged_chunks_and_one_span_with_final_usage(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options=USAGE
    )
    assert isinstance(stream, openai.Stream)
    assert ai_spans(obs_capture) == []  # open until the stream ends
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks if c.choices][:5] == WORDS
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.input_tokens", "ai.output_tokens", "ai.stream_end", "cost.usd") == {
        "ai.input_tokens": 20,
        "ai.output_tokens": 10,
        "ai.stream_end": "done",
        "cost.usd": 9e-06,
    }
    assert record["ai.request_id"].startswith("req_emu_")


async def test_async_stream(aclient: openai.AsyncOpenAI, obs_capture: Capture) -> None:
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options=USAGE
    )
    assert isinstance(stream, openai.AsyncStream)
    words = [c.choices[0].delta.content async for c in stream if c.choices]
    assert words[:5] == WORDS
    record = only_ai_span(obs_capture)
    assert (record["ai.output_tokens"], record["cost.usd"]) == (10, 9e-06)


def test_stream_helper_is_one_span_not_two(client: openai.OpenAI, obs_capture: Capture) -> None:
    # .stream() calls .create(stream=True): the trap that would count the call twice
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=HI, stream_options=USAGE
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from the emulator."
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.prompt", "ai.output_tokens", "cost.usd") == {
        "ai.operation": "chat",
        "ai.prompt": "Say hi",
        "ai.output_tokens": 10,
        "cost.usd": 9e-06,
    }


def test_stream_helper_left_early_ends_at_exit(client: openai.OpenAI, obs_capture: Capture) -> None:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HI) as stream:
        for _event in stream:
            break
    assert only_ai_span(obs_capture)["ai.stream_end"] == "close"


async def test_async_stream_helper_is_one_span(
    aclient: openai.AsyncOpenAI, obs_capture: Capture
) -> None:
    async with aclient.chat.completions.stream(
        model="gpt-4o-mini", messages=HI, stream_options=USAGE
    ) as stream:
        await stream.get_final_completion()
    record = only_ai_span(obs_capture)
    assert (record["ai.output_tokens"], record["cost.usd"]) == (10, 9e-06)


def test_stream_closed_early(client: openai.OpenAI, obs_capture: Capture) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    next(iter(stream))
    stream.close()
    record = only_ai_span(obs_capture)
    assert (record["status"], record["ai.stream_end"]) == ("ok", "close")


def test_stream_dropped_is_ended_by_garbage_collection(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    next(stream)
    del stream
    gc.collect()
    assert only_ai_span(obs_capture)["ai.stream_end"] == "gc"


async def test_async_stream_closed_early(aclient: openai.AsyncOpenAI, obs_capture: Capture) -> None:
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    await stream.__anext__()
    await stream.close()
    assert only_ai_span(obs_capture)["ai.stream_end"] == "close"


def test_stream_without_include_usage_has_an_unknown_cost(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    for _chunk in client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
        pass
    record = only_ai_span(obs_capture)
    assert "cost.usd" not in record
    assert record["cost.unknown"] == "usage not reported for per_token"


# -- responses, images, embeddings ---------------------------------------------------------------
def test_responses_create_and_stream_helper_are_one_span_each(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    response = client.responses.create(model="gpt-4o", input="Say hi")
    with client.responses.stream(model="gpt-4o", input="Say hi again") as stream:
        streamed = stream.get_final_response()
    assert response.output_text == streamed.output_text == "Hello from the emulator."
    first, second = ai_spans(obs_capture)
    for record, resp in ((first, response), (second, streamed)):
        keys = ("ai.operation", "ai.model", "ai.response_model", "ai.response_id", "cost.usd")
        assert pick(record, *keys) == {
            "ai.operation": "responses",
            "ai.model": "gpt-4o",
            "ai.response_model": "gpt-4o-2024-08-06",
            "ai.response_id": resp.id,
            "cost.usd": 0.00015,
        }
    assert second["ai.prompt"] == "Say hi again"


def test_dalle_images_are_priced_per_image_by_size_and_quality(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    result = client.images.generate(
        model="dall-e-3", prompt="a red fox", size="1024x1792", quality="hd", n=2
    )
    assert len(result.data) == 2
    record = only_ai_span(obs_capture)
    assert pick(
        record, "ai.operation", "ai.image_count", "ai.width", "ai.height", "ai.image_quality"
    ) == {
        "ai.operation": "images.generate",
        "ai.image_count": 2,
        "ai.width": 1024,
        "ai.height": 1792,
        "ai.image_quality": "hd",
    }
    assert record["cost.usd"] == pytest.approx(0.24)  # 2 x $0.12


def test_default_image_model_and_gpt_image_token_pricing(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    client.images.generate(prompt="a cat")
    client.images.generate(model="gpt-image-1", prompt="a cat")
    dalle2, gpt_image = ai_spans(obs_capture)
    assert (dalle2["ai.model"], dalle2["cost.usd"]) == ("dall-e-2", 0.02)
    # gpt-image-1: (20 x $5 + 10 x $40) / 1M
    assert gpt_image["cost.usd"] == pytest.approx(0.0005)


async def test_async_embeddings_priced_per_input_token(
    aclient: openai.AsyncOpenAI, obs_capture: Capture
) -> None:
    result = await aclient.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.prompt", "ai.input_tokens", "cost.usd") == {
        "ai.operation": "embeddings",
        "ai.prompt": "a",
        "ai.input_tokens": 20,
        "cost.usd": 4e-07,  # 20 x $0.02 / 1M
    }


# -- failures ------------------------------------------------------------------------------------
def test_moderation_refusal_is_a_content_violation_a_user_error_not_a_failure(
    client: openai.OpenAI, emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    emu.fail("/chat/completions", 400, error_body("refused", code="content_policy_violation"))
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    record = only_ai_span(obs_capture)
    assert pick(
        record, "status", "error_type", "ai.http_status", "ai.request_id", "ai.content_violation"
    ) == {
        "status": "content_violation",
        "error_type": "BadRequestError",
        "ai.http_status": 400,
        "ai.request_id": raised.value.request_id,
        "ai.content_violation": True,
    }
    assert obs_capture.metrics["ai.errors"].points == {}
    assert obs_capture.metrics["ai.user_errors"].points == {
        ("openai", "gpt-4o-mini", "chat", "content_violation"): 1
    }


def test_server_error_fails_the_span_and_counts(
    client: openai.OpenAI, emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    emu.fail("/chat/completions", 500, error_body("boom", type_="server_error"))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    record = only_ai_span(obs_capture)
    assert (record["status"], record["ai.http_status"]) == ("error", 500)
    assert record["cost.unknown"] == "usage not reported for per_token"
    assert obs_capture.metrics["ai.errors"].points == {
        ("openai", "gpt-4o-mini", "chat", "InternalServerError"): 1
    }


def test_failed_and_answered_calls_are_one_model_with_a_true_error_rate(
    client: openai.OpenAI, emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    # The emulator answers with the dated snapshot, as the API does; one call in four fails.
    for i in range(8):
        if i % 4 == 0:
            emu.fail("/chat/completions", 500, error_body("busy", type_="server_error"), times=1)
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    metrics = obs_capture.metrics
    assert metrics["ai.requests"].points == {("openai", "gpt-4o-mini", "chat"): 8}
    assert metrics["ai.errors"].points == {
        ("openai", "gpt-4o-mini", "chat", "InternalServerError"): 2
    }
    spans = ai_spans(obs_capture)
    assert {s["ai.model"] for s in spans} == {"gpt-4o-mini"}
    assert [s.get("ai.response_model") for s in spans if s["status"] == "ok"] == [
        "gpt-4o-mini-2024-07-18"
    ] * 6


def test_a_snapshot_with_its_own_price_is_priced_by_it(
    emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    prices = {
        "models": {"openai": {"gpt-4o-2024-05-13": {"per_token": {"input": 5, "output": 15}}}}
    }
    emu.snapshots = {"gpt-4o": "gpt-4o-2024-05-13"}
    with (
        capture(pricing=obs.PricingOptions(prices=prices)) as cap,
        openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0) as c,
    ):
        c.chat.completions.create(model="gpt-4o", messages=HI)
    record = only_ai_span(cap)
    assert (record["ai.model"], record["ai.response_model"]) == ("gpt-4o", "gpt-4o-2024-05-13")
    assert record["cost.usd"] == pytest.approx(2.5e-4)  # (20 x $5 + 10 x $15) / 1M, not gpt-4o's


def test_connection_error_fails_the_span(obs_capture: Capture) -> None:
    with OpenAIEmulator() as gone:
        url = gone.url
    c = openai.OpenAI(api_key="sk-test", base_url=url + "/v1", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert only_ai_span(obs_capture)["error_type"] == "APIConnectionError"


# -- privacy, cost roll-up, patch lifecycle --------------------------------------------------------
SECRET = "the launch code is 0000 for Alice"


def test_private_request_exports_no_prompt_anywhere(
    client: openai.OpenAI, emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    emu.fail("/chat/completions", 400, error_body(f"cannot answer: {SECRET}"), times=1)
    with obs.span("request"):
        obs.mark_private()
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET}]
            )
        for _chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET}], stream=True
        ):
            pass
        client.images.generate(model="dall-e-3", prompt=SECRET)
    exported = json.dumps(obs_capture.records, default=str)
    assert "Alice" not in exported
    prompts = {s["ai.prompt"] for s in ai_spans(obs_capture)}
    assert prompts == {"[PRIVATE]"}


async def test_root_span_of_a_request_carries_the_summed_cost(
    emu: OpenAIEmulator, obs_capture: Capture
) -> None:
    async def generate(request: Request) -> JSONResponse:
        obs.set_user("u-1", tier="pro")
        async with openai.AsyncOpenAI(
            api_key="sk-test", base_url=emu.url + "/v1", max_retries=0
        ) as ai:
            await ai.chat.completions.create(model="gpt-4o-mini", messages=HI)
            await ai.images.generate(model="dall-e-3", prompt="a fox")
        return JSONResponse({"ok": True})

    app = obs.ObsMiddleware(Starlette(routes=[Route("/generate", generate, methods=["POST"])]))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        assert (await http.post("/generate")).status_code == 200
    root = obs_capture.span("POST /generate")
    assert root["cost.usd"] == pytest.approx(9e-06 + 0.04)
    assert {s["trace_id"] for s in ai_spans(obs_capture)} == {root["trace_id"]}
    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {
        ("openai", "gpt-4o-mini", "chat", "/generate", "pro"): pytest.approx(9e-06),
        ("openai", "dall-e-3", "images.generate", "/generate", "pro"): pytest.approx(0.04),
    }


def test_raw_response_accessor_made_after_patch_is_one_span(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from the emulator."
    record = only_ai_span(obs_capture)
    assert record["ai.request_id"] == raw.headers["x-request-id"]


def test_unpatch_restores_the_sdk(client: openai.OpenAI, obs_capture: Capture) -> None:
    obs_openai.unpatch()
    obs_openai.unpatch()  # idempotent
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HI) as stream:
        stream.until_done()
    assert ai_spans(obs_capture) == []
    obs_openai.patch()
    obs_openai.patch()  # idempotent: still one span per call
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert len(ai_spans(obs_capture)) == 1


def test_instrument_all_registers_openai(client: openai.OpenAI, obs_capture: Capture) -> None:
    obs_openai.unpatch()
    report = obs.instrument_all(only=["openai"])
    try:
        assert [(o.name, o.status) for o in report] == [("openai", "patched")]
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert len(ai_spans(obs_capture)) == 1
    finally:
        obs.uninstrument_all()


# -- a hostile provider's usage ------------------------------------------------------------------
# What the SDK hands over for each reported value (it coerces "12"), and whether it is a count.
HOSTILE_USAGE = [
    pytest.param(10**400, False, id="10**400"),
    pytest.param(-5, False, id="negative"),
    pytest.param("12", True, id="numeric-string"),
    pytest.param(1e308, False, id="1e308"),
    pytest.param(None, None, id="null"),
]


@pytest.mark.parametrize(("reported", "valid"), HOSTILE_USAGE)
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_hostile_usage_never_breaks_the_trace_nor_prices_negative(
    emu: OpenAIEmulator,
    client: openai.OpenAI,
    obs_capture: Capture,
    reported: Any,
    valid: bool | None,
    stream: bool,
) -> None:
    emu.prompt_tokens = emu.completion_tokens = reported
    emu.cached_tokens = emu.reasoning_tokens = reported

    def call() -> Any:
        if not stream:
            return client.chat.completions.create(model="gpt-4o-mini", messages=HI).usage
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=HI, stream=True, stream_options=USAGE
            )
        )
        return chunks[-1].usage

    obs_openai.unpatch()
    expected = call()  # what the SDK alone returns
    obs_openai.patch()
    with obs.span("request"):
        usage = call()
        with obs.span("after"):
            pass
    assert usage == expected
    assert obs.current_span() is None
    request = obs_capture.span("request")
    record = only_ai_span(obs_capture)
    assert record["parent_id"] == obs_capture.span("after")["parent_id"] == request["span_id"]
    assert record["status"] == "ok"
    tokens = pick(record, "ai.input_tokens", "ai.cached_tokens", "ai.output_tokens")
    if valid:
        assert tokens == {"ai.input_tokens": 12, "ai.cached_tokens": 12, "ai.output_tokens": 12}
        assert record["cost.usd"] > 0
    else:
        assert tokens == dict.fromkeys(tokens)
        assert "cost.usd" not in record and record["cost.unknown"]
    if valid is False:
        assert (
            record["ai.usage.invalid"]
            == "input_tokens,cached_tokens,output_tokens,reasoning_tokens"
        )
        assert obs_capture.metrics["obs.dropped"].points == {("invalid_usage:openai",): 4}
    costs = [s["cost.usd"] for s in obs_capture.spans if s.get("cost.usd") is not None]
    costs += obs_capture.metrics["ai.cost_usd"].points.values()
    assert all(0 <= usd < 1 for usd in costs), costs


# -- latency: time to first token and output tokens per second (issue 17 item 10) ---------------
DELAY_MS = 120.0


@pytest.fixture
def slow_emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(first_chunk_delay_s=DELAY_MS / 1000) as emulator:
        yield emulator


@pytest.fixture
def timed_capture() -> Iterator[Capture]:
    """A capture on the real clock (``obs_capture``'s deterministic clock ticks per read)."""
    with capture(fixed=False) as cap:
        yield cap


def slow_client(emu: OpenAIEmulator) -> openai.OpenAI:
    # Plain calls first: the connection is open and the SDK's lazily built types
    # are ready (its first responses stream costs tens of ms) before the measured stream.
    c = openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0)
    c.chat.completions.create(model="gpt-4o-mini", messages=HI)
    c.responses.create(model="gpt-4o-mini", input="Say hi")
    return c


async def slow_aclient(emu: OpenAIEmulator) -> openai.AsyncOpenAI:
    c = openai.AsyncOpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0)
    await c.chat.completions.create(model="gpt-4o-mini", messages=HI)
    await c.responses.create(model="gpt-4o-mini", input="Say hi")
    return c


def assert_first_token_and_rate(cap: Capture, streams: int = 1) -> list[dict[str, Any]]:
    """The streams' spans carry a time to first token past the scripted delay (within 50 ms:
    the loaded CI machine) and a rate; one histogram observation per stream."""
    records = [s for s in ai_spans(cap) if "ai.stream_end" in s]
    assert len(records) == streams
    for record in records:
        assert DELAY_MS <= record["ai.time_to_first_token_ms"] <= DELAY_MS + 50
        assert record["ai.output_tokens_per_s"] > 0
    labels = (records[0]["ai.provider"], records[0]["ai.model"], records[0]["ai.operation"])
    assert cap.metrics["ai.time_to_first_token"].points[labels].count == streams
    assert cap.metrics["ai.output_tokens_per_s"].points[labels].count == streams
    return records


def test_chat_stream_records_time_to_first_token_and_tokens_per_second(
    slow_emu: OpenAIEmulator, timed_capture: Capture
) -> None:
    seen_ms = []  # what the app saw: from the call to its first chunk
    with slow_client(slow_emu) as c:
        for _ in range(3):
            began = time.perf_counter()
            stream = c.chat.completions.create(
                model="gpt-4o-mini", messages=HI, stream=True, stream_options=USAGE
            )
            chunks = iter(stream)
            next(chunks)
            seen_ms.append((time.perf_counter() - began) * 1000)
            list(chunks)
    records = assert_first_token_and_rate(timed_capture, streams=3)
    ttfts = [r["ai.time_to_first_token_ms"] for r in records]
    # Read inside the app's own window, and within 5 ms of the scripted delay (the best of three:
    # the shared CPU may delay one; the emulator's loopback round trip is ~3 ms of it).
    assert all(t <= seen for t, seen in zip(ttfts, seen_ms, strict=True)), (ttfts, seen_ms)
    assert min(ttfts) <= DELAY_MS + 5, ttfts
    rates = [r["ai.output_tokens_per_s"] for r in records]
    assert all(r["ai.output_tokens"] == 10 for r in records) and min(rates) > 0


async def test_async_chat_stream_records_time_to_first_token(
    slow_emu: OpenAIEmulator, timed_capture: Capture
) -> None:
    async with await slow_aclient(slow_emu) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o-mini", messages=HI, stream=True, stream_options=USAGE
        )
        async for _chunk in stream:
            pass
    assert_first_token_and_rate(timed_capture)


def test_responses_stream_records_time_to_first_token(
    slow_emu: OpenAIEmulator, timed_capture: Capture
) -> None:
    with slow_client(slow_emu) as c:
        for _event in c.responses.create(model="gpt-4o-mini", input="Say hi", stream=True):
            pass
    assert_first_token_and_rate(timed_capture)


async def test_async_responses_stream_records_time_to_first_token(
    slow_emu: OpenAIEmulator, timed_capture: Capture
) -> None:
    async with await slow_aclient(slow_emu) as c:
        stream = await c.responses.create(model="gpt-4o-mini", input="Say hi", stream=True)
        async for _event in stream:
            pass
    assert_first_token_and_rate(timed_capture)


def test_a_call_that_is_not_streamed_has_no_first_token(
    client: openai.OpenAI, obs_capture: Capture
) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    record = only_ai_span(obs_capture)
    assert "ai.time_to_first_token_ms" not in record and "ai.output_tokens_per_s" not in record
    assert "ai.time_to_first_token" not in obs_capture.metrics or not (
        obs_capture.metrics["ai.time_to_first_token"].points
    )


def test_time_to_first_token_and_tokens_per_second_appear_in_obs_report(
    slow_emu: OpenAIEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "obs.db"
    config = _setup.build_config(
        service="svc",
        exporters=[SqliteExporter(path)],
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
    )
    with _setup.scoped(config):
        with slow_client(slow_emu) as c:
            list(
                c.chat.completions.create(
                    model="gpt-4o-mini", messages=HI, stream=True, stream_options=USAGE
                )
            )
        assert obs.flush(10.0)
    store = Store(path)
    try:
        data = figures(store, Filters())
    finally:
        store.close()
    (row,) = data["ai_latency"]
    assert (row["provider"], row["model"], row["streams"]) == ("openai", "gpt-4o-mini", 1)
    assert DELAY_MS <= row["ttft_p50"] <= DELAY_MS + 50 and row["tokens_per_s_p50"] > 0
    out = io.StringIO()
    report(str(path), Filters(), out)
    text = out.getvalue()
    assert "AI latency by provider and model" in text
    assert "first token p50 ms" in text and "tokens/s p50" in text
    assert f"{round(row['ttft_p50'], 2):,.2f}" in text
