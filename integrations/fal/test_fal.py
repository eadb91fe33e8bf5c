"""fal_client's real code against the emulator: one ``ai.request`` span per run, subscribe,
submit, stream and result (sync and async), carrying the request id, queue position and time,
run time, billable units and cost; the subscribe → submit → get trap; failures; the aliases."""

from __future__ import annotations

import asyncio
from typing import Any

import fal_client
import pytest

import obs_middleware as obs
from obs_middleware.integrations import fal as obs_fal
from obs_middleware.testing import Capture
from obs_middleware.testing.emulators.fal import FalEmulator

from .._ai_checks import ai_spans, only_ai_span, pick

FLUX = "fal-ai/flux/dev"
POLL = 0.005


# -- run -----------------------------------------------------------------------------------------
def test_run_alias_is_one_span_with_request_id_images_units_and_cost(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    with obs.span("request"):
        result = fal_client.run(FLUX, {"prompt": "a red fox", "num_images": 2, "seed": 7})
    assert len(result["images"]) == 2
    record = only_ai_span(obs_capture)
    assert record["parent_id"] == obs_capture.span("request")["span_id"]
    assert pick(
        record,
        "span.kind",
        "status",
        "ai.provider",
        "ai.operation",
        "ai.modality",
        "ai.model",
        "ai.prompt",
        "ai.input.num_images",
        "ai.input.seed",
        "ai.image.count",
        "ai.image.seed",
        "ai.request_id",
        "ai.image_count",
        "ai.width",
        "ai.height",
        "ai.billable_units",
        "ai.run_ms",
        "cost.usd",
    ) == {
        "span.kind": "client",
        "status": "ok",
        "ai.provider": "fal",
        "ai.operation": "run",
        "ai.modality": "image",
        "ai.model": FLUX,
        "ai.prompt": "a red fox",
        "ai.input.num_images": 2,
        "ai.input.seed": 7,
        "ai.image.count": 2,  # what was asked for
        "ai.image.seed": 7,
        "ai.request_id": "00000000-0000-4000-8000-000000000001",
        "ai.image_count": 2,
        "ai.width": 1024,
        "ai.height": 768,
        "ai.billable_units": 2.0,  # two images of one (whole) megapixel each
        "ai.run_ms": 30.0,
        "cost.usd": 0.05,  # 2 units x $0.025
    }
    assert record["ai.output_bytes"] > 0
    assert obs_capture.span("request")["cost.usd"] == 0.05


def test_nsfw_flagged_images_are_a_content_violation_a_user_error_not_a_failure(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    image = {"url": "https://f/1.png", "width": 1024, "height": 1024}
    flagged = {"images": [image, image], "has_nsfw_concepts": [True, False], "seed": 1}
    emu.app("fal-ai/flux/schnell", lambda arguments: flagged)
    fal_client.run(
        "fal-ai/flux/schnell", {"prompt": "x", "image_size": {"width": 1024, "height": 1024}}
    )
    record = only_ai_span(obs_capture)
    assert pick(
        record,
        "status",
        "ai.content_violation",
        "ai.nsfw_flagged",
        "ai.content_flags",
        "ai.image.width",
    ) == {
        "status": "content_violation",
        "ai.content_violation": True,
        "ai.nsfw_flagged": 1,
        "ai.content_flags": "nsfw",
        "ai.image.width": 1024,
    }
    assert obs_capture.metrics["ai.errors"].points == {}
    assert obs_capture.metrics["ai.user_errors"].points == {
        ("fal", "fal-ai/flux/schnell", "run", "content_violation"): 1
    }


def test_run_on_a_client_instance_is_traced_too(emu: FalEmulator, obs_capture: Capture) -> None:
    fal_client.SyncClient(key="id:secret").run(FLUX, {"prompt": "x"})
    assert only_ai_span(obs_capture)["ai.operation"] == "run"


def test_custom_app_without_images_reports_units_and_an_unknown_price(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    emu.app("fal-ai/kling-video", lambda arguments: {"video": {"url": "https://v/1.mp4"}})
    emu.billable_units = 5
    result = fal_client.run("fal-ai/kling-video/v2/master", {"prompt": "x", "duration": 5})
    assert result == {"video": {"url": "https://v/1.mp4"}}
    record = only_ai_span(obs_capture)
    assert "ai.image_count" not in record
    assert pick(record, "ai.billable_units", "ai.input.duration", "cost.unknown") == {
        "ai.billable_units": 5.0,
        "ai.input.duration": 5,
        "cost.unknown": "no price for fal model fal-ai/kling-video/v2/master",
    }


# -- subscribe (the double-count trap) -----------------------------------------------------------
def test_subscribe_is_one_span_carrying_the_request_id_and_queue(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    enqueued: list[str] = []
    updates: list[Any] = []
    result = fal_client.subscribe(
        FLUX,
        {"prompt": "a red fox", "image_size": "square_hd"},
        with_logs=True,
        interval=POLL,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )
    assert result["images"][0]["width"] == 1024
    assert any(isinstance(u, fal_client.Queued) for u in updates)
    record = only_ai_span(obs_capture)  # submit and handle.get joined it
    assert pick(record, "ai.operation", "ai.request_id", "ai.queue_position", "ai.run_ms") == {
        "ai.operation": "subscribe",
        "ai.request_id": enqueued[0],
        "ai.queue_position": 3,
        "ai.run_ms": 30.0,
    }
    assert record["ai.queue_ms"] > 0
    labels = ("fal", record["ai.model"], "subscribe")  # queue time from the queue updates
    assert obs_capture.metrics["ai.queue_time"].points[labels].count == 1
    assert obs_capture.metrics["ai.run_time"].points[labels].sum == 30.0
    assert pick(record, "ai.image_count", "ai.width", "ai.height", "ai.billable_units") == {
        "ai.image_count": 1,
        "ai.width": 1024,
        "ai.height": 1024,
        "ai.billable_units": 2.0,  # 1024x1024 = 1.05 MP, billed as 2 whole megapixels
    }
    names = [e["name"] for e in record["events"]]
    assert names[0] == "fal.queued" and "fal.in_progress" in names
    assert record["cost.usd"] == 0.05


def test_subscribe_without_queue_updates_still_measures_the_queue(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    fal_client.subscribe(FLUX, {"prompt": "x"}, interval=POLL)
    record = only_ai_span(obs_capture)
    assert record["ai.request_id"] and record["ai.queue_ms"] > 0


def test_subscribe_with_a_client_timeout_is_one_span_too(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    # fal runs this subscribe in its thread pool: the submit and polls must still join it.
    enqueued: list[str] = []
    fal_client.subscribe(
        FLUX, {"prompt": "x"}, interval=POLL, client_timeout=5, on_enqueue=enqueued.append
    )
    record = only_ai_span(obs_capture)
    assert (record["ai.operation"], record["ai.request_id"]) == ("subscribe", enqueued[0])


def test_submit_then_get_are_two_spans_sharing_the_request_id(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    handle = fal_client.submit(FLUX, {"prompt": "x"})
    handle.get(interval=POLL)
    submit, get = ai_spans(obs_capture)
    assert pick(submit, "ai.operation", "ai.model", "ai.request_id", "cost.unknown") == {
        "ai.operation": "submit",
        "ai.model": FLUX,
        "ai.request_id": handle.request_id,
        "cost.unknown": "usage not reported for per_unit/per_megapixel",
    }
    assert pick(get, "ai.operation", "ai.model", "ai.request_id", "cost.usd") == {
        "ai.operation": "result",
        "ai.model": FLUX,  # remembered from the submit
        "ai.request_id": handle.request_id,
        "cost.usd": 0.025,
    }
    assert get["ai.queue_ms"] >= 0


def test_result_by_request_id_is_one_span(emu: FalEmulator, obs_capture: Capture) -> None:
    handle = fal_client.submit(FLUX, {"prompt": "x"})
    obs_capture.clear()
    fal_client.result(FLUX, handle.request_id)
    record = only_ai_span(obs_capture)  # result → handle.get joined it
    assert pick(record, "ai.operation", "ai.request_id", "ai.image_count") == {
        "ai.operation": "result",
        "ai.request_id": handle.request_id,
        "ai.image_count": 1,
    }


# -- streams -------------------------------------------------------------------------------------
def test_stream_span_ends_with_the_iteration(emu: FalEmulator, obs_capture: Capture) -> None:
    with obs.span("request"):
        stream = fal_client.stream(FLUX, {"prompt": "x"})
        assert ai_spans(obs_capture) == []  # no HTTP until the first event
        events = list(stream)
    assert len(events) == 3
    record = only_ai_span(obs_capture)
    assert record["parent_id"] == obs_capture.span("request")["span_id"]
    assert pick(
        record, "ai.operation", "ai.request_id", "ai.stream_events", "ai.stream_end", "cost.usd"
    ) == {
        "ai.operation": "stream",
        "ai.request_id": "00000000-0000-4000-8000-000000000001",
        "ai.stream_events": 3,
        "ai.stream_end": "done",
        "cost.usd": 0.025,
    }


def test_stream_closed_early_ends_its_span(emu: FalEmulator, obs_capture: Capture) -> None:
    stream = fal_client.stream(FLUX, {"prompt": "x"})
    next(iter(stream))
    stream.close()
    assert pick(only_ai_span(obs_capture), "ai.stream_events", "ai.stream_end") == {
        "ai.stream_events": 1,
        "ai.stream_end": "close",
    }


# -- async ---------------------------------------------------------------------------------------
async def test_async_run_subscribe_and_stream_are_one_span_each(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    client = fal_client.AsyncClient(key="id:secret")
    await client.run(FLUX, {"prompt": "x"})
    enqueued: list[str] = []
    await client.subscribe(FLUX, {"prompt": "y"}, interval=POLL, on_enqueue=enqueued.append)
    events = [event async for event in client.stream(FLUX, {"prompt": "z"})]
    assert len(events) == 3
    run, subscribe, stream = ai_spans(obs_capture)
    assert [run["ai.operation"], subscribe["ai.operation"], stream["ai.operation"]] == [
        "run",
        "subscribe",
        "stream",
    ]
    assert subscribe["ai.request_id"] == enqueued[0]
    assert subscribe["ai.queue_ms"] > 0
    assert stream["ai.stream_end"] == "done"
    assert all(s["status"] == "ok" and s["cost.usd"] == 0.025 for s in (run, subscribe, stream))


async def test_async_aliases_are_traced(emu: FalEmulator, obs_capture: Capture) -> None:
    await fal_client.subscribe_async(FLUX, {"prompt": "x"}, interval=POLL)
    handle = await fal_client.submit_async(FLUX, {"prompt": "x"})
    await handle.get(interval=POLL)
    assert [s["ai.operation"] for s in ai_spans(obs_capture)] == ["subscribe", "submit", "result"]


async def test_concurrent_async_subscribes_keep_their_own_request_ids(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    client = fal_client.AsyncClient(key="id:secret")
    ids: list[list[str]] = [[], []]
    await asyncio.gather(
        *(
            client.subscribe(FLUX, {"prompt": str(i)}, interval=POLL, on_enqueue=ids[i].append)
            for i in range(2)
        )
    )
    by_prompt = {s["ai.prompt"]: s["ai.request_id"] for s in ai_spans(obs_capture)}
    assert by_prompt == {"0": ids[0][0], "1": ids[1][0]}


# -- failures ------------------------------------------------------------------------------------
def test_http_error_is_an_error_span_with_status_and_request_id(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    emu.fail(
        "/run/",
        422,
        {"detail": "prompt is required", "error_type": "validation_error"},
        headers={"x-fal-request-id": "req-failed"},
    )
    with pytest.raises(fal_client.FalClientHTTPError):
        fal_client.run(FLUX, {})
    record = only_ai_span(obs_capture)
    assert pick(
        record,
        "status",
        "error_type",
        "error_message",
        "http.status_code",
        "ai.provider_error",
        "ai.request_id",
    ) == {
        "status": "error",
        "error_type": "FalClientHTTPError",
        "error_message": "prompt is required",
        "http.status_code": 422,
        "ai.provider_error": "validation_error",
        "ai.request_id": "req-failed",
    }
    metrics = obs_capture.metrics
    assert metrics["ai.errors"].points == {("fal", FLUX, "run", "FalClientHTTPError"): 1}


def test_failed_queued_request_is_an_error_span(emu: FalEmulator, obs_capture: Capture) -> None:
    emu.fail_request("fal-ai/broken", "CUDA out of memory", error_type="runtime_error")
    with pytest.raises(fal_client.FalClientHTTPError):
        fal_client.subscribe("fal-ai/broken/v1", {"prompt": "x"}, interval=POLL)
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "error_message", "ai.provider_error", "http.status_code") == {
        "status": "error",
        "error_message": "CUDA out of memory",
        "ai.provider_error": "runtime_error",
        "http.status_code": 500,
    }
    assert record["ai.request_id"]


# -- privacy -------------------------------------------------------------------------------------
def test_private_trace_exports_no_prompt_and_no_key(emu: FalEmulator, obs_capture: Capture) -> None:
    with obs.span("request"):
        obs.mark_private()
        fal_client.run(FLUX, {"prompt": "my secret prompt", "key": "fal-key-value"})
    record = only_ai_span(obs_capture)
    assert record["ai.prompt"] == "[PRIVATE]"
    assert "ai.input.key" not in record
    assert "secret prompt" not in str(obs_capture.records)


# -- patch lifecycle -----------------------------------------------------------------------------
def test_unpatch_restores_aliases_and_stops_tracing(emu: FalEmulator, obs_capture: Capture) -> None:
    obs_fal.patch()  # idempotent
    fal_client.run(FLUX, {"prompt": "x"})
    obs_fal.unpatch()
    assert fal_client.run.__func__ is fal_client.SyncClient.run  # type: ignore[attr-defined]
    fal_client.run(FLUX, {"prompt": "x"})
    assert len(ai_spans(obs_capture)) == 1
    obs_fal.patch()
    fal_client.run(FLUX, {"prompt": "x"})
    assert len(ai_spans(obs_capture)) == 2


def test_instrument_all_patches_fal_within_its_supported_range(
    emu: FalEmulator, obs_capture: Capture
) -> None:
    report = obs.instrument_all(only=["fal"])
    try:
        assert [(o.name, o.status, o.supported) for o in report] == [("fal", "patched", ">=1.0,<2")]
        fal_client.run(FLUX, {"prompt": "x"})
    finally:
        obs.uninstrument_all()
    assert only_ai_span(obs_capture)["ai.operation"] == "run"
