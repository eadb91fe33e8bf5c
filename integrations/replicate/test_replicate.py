"""The replicate SDK's real code against the emulator: one ``ai.request`` span per run/stream,
carrying the prediction id, queue time, predict time and cost; double-count traps; failures."""

from __future__ import annotations

import gc
import json

import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

import obs_middleware as obs
from obs_middleware._core.config import PricingOptions
from obs_middleware.integrations import replicate as obs_replicate
from obs_middleware.testing import Capture, capture
from obs_middleware.testing.emulators.replicate import DEFAULT_MODELS, ModelSpec, ReplicateEmulator

from .._ai_checks import ai_spans, only_ai_span, pick

FLUX = "black-forest-labs/flux-schnell"
SDXL = f"stability-ai/sdxl:{DEFAULT_MODELS['stability-ai/sdxl'].version}"
LLAMA = "meta/meta-llama-3-8b-instruct"
LLAMA_VERSION = DEFAULT_MODELS[LLAMA].version


def polls(emu: ReplicateEmulator) -> int:
    return sum(r.method == "GET" and r.path.startswith("/v1/predictions/") for r in emu.requests)


# -- run -----------------------------------------------------------------------------------------
def test_run_is_one_span_carrying_the_prediction_id_queue_time_and_cost(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    output = client.run(FLUX, input={"prompt": "a red fox", "width": 1024, "height": 768})
    assert output == [f"{emu.url}/files/out-0.webp"]
    (prediction_id,) = emu.predictions
    assert polls(emu) == 2  # create → poll (processing) → poll (succeeded), all inside the span
    record = only_ai_span(obs_capture)
    assert pick(
        record,
        "span.kind",
        "status",
        "ai.provider",
        "ai.operation",
        "ai.model",
        "ai.model_version",
        "ai.request_id",
        "ai.prediction_status",
        "ai.prompt",
        "ai.input.width",
        "ai.queue_ms",
        "ai.gpu_seconds",
        "ai.image_count",
        "ai.width",
        "ai.height",
        "cost.usd",
    ) == {
        "span.kind": "client",
        "status": "ok",
        "ai.provider": "replicate",
        "ai.operation": "run",
        "ai.model": FLUX,
        "ai.model_version": DEFAULT_MODELS[FLUX].version,
        "ai.request_id": prediction_id,  # run() returns only output; the id still gets here
        "ai.prediction_status": "succeeded",
        "ai.prompt": "a red fox",
        "ai.input.width": 1024,
        "ai.queue_ms": 250.0,  # started_at - created_at
        "ai.gpu_seconds": 0.6,  # metrics.predict_time
        "ai.image_count": 1,
        "ai.width": 1024,
        "ai.height": 768,
        "cost.usd": 0.003,  # flux-schnell: $0.003 per output image
    }


def test_run_by_version_is_priced_per_gpu_second(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    client.run(SDXL, input={"prompt": "a dog"})
    assert any("/versions/" in r.path for r in emu.requests)  # the SDK's extra version lookup
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.model", "ai.queue_ms", "ai.gpu_seconds") == {
        "ai.model": "stability-ai/sdxl",
        "ai.queue_ms": 1500.0,
        "ai.gpu_seconds": 4.2,
    }
    assert record["cost.usd"] == pytest.approx(4.2 * 0.000975)  # nvidia-l40s $/s


def test_run_that_completes_within_prefer_wait_needs_no_poll(obs_capture: Capture) -> None:
    with ReplicateEmulator(wait_completes=True) as emu:
        c = replicate.Client(api_token="r8_test", base_url=emu.url)
        c.run(FLUX, input={"prompt": "x"})
        assert polls(emu) == 0
        (prediction_id,) = emu.predictions
    record = only_ai_span(obs_capture)
    assert (record["ai.request_id"], record["cost.usd"]) == (prediction_id, 0.003)


def test_run_of_an_iterator_model_ends_with_its_output_and_costs_tokens(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    output = client.run(f"{LLAMA}:{LLAMA_VERSION}", input={"prompt": "hi"})
    assert ai_spans(obs_capture) == []  # the SDK polls as the caller iterates
    assert "".join(output) == "Hello from the emulator."
    record = only_ai_span(obs_capture)
    assert pick(
        record,
        "ai.modality",
        "ai.request_id",
        "ai.output_count",
        "ai.input_tokens",
        "ai.output_tokens",
    ) == {
        "ai.modality": "text",  # an iterator model is a language model
        "ai.request_id": next(iter(emu.predictions)),
        "ai.output_count": 4,
        "ai.input_tokens": 12,
        "ai.output_tokens": 30,
    }
    assert record["cost.usd"] == pytest.approx((12 * 0.05 + 30 * 0.25) / 1e6)


async def test_async_run_is_one_span_with_the_prediction_id(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    output = await client.async_run(FLUX, input={"prompt": "a cat"})
    assert output == [f"{emu.url}/files/out-0.webp"]
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.request_id", "ai.queue_ms", "cost.usd") == {
        "ai.operation": "run",
        "ai.request_id": next(iter(emu.predictions)),
        "ai.queue_ms": 250.0,
        "cost.usd": 0.003,
    }


def test_module_alias_goes_through_the_patch(
    emu: ReplicateEmulator, obs_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = replicate.default_client
    monkeypatch.setattr(default, "_base_url", emu.url)
    monkeypatch.setattr(default, "_api_token", "r8_test")
    monkeypatch.setattr(default, "_Client__client", None)  # built lazily from the above
    monkeypatch.setattr(default, "poll_interval", 0.005)
    replicate.run(FLUX, input={"prompt": "via the alias"})
    assert only_ai_span(obs_capture)["ai.request_id"] == next(iter(emu.predictions))
    obs_replicate.unpatch()
    assert replicate.run.__func__ is replicate.Client.run  # type: ignore[attr-defined]
    replicate.run(FLUX, input={"prompt": "unpatched"})
    assert len(ai_spans(obs_capture)) == 1
    monkeypatch.setattr(default, "_Client__client", None)


# -- predictions ---------------------------------------------------------------------------------
def test_predictions_create_with_model_is_one_span_not_two(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    # Predictions.create(model=) delegates to ModelsPredictions.create: the double-count trap
    prediction = client.predictions.create(model=FLUX, input={"prompt": "x"})
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.request_id", "ai.prediction_status") == {
        "ai.operation": "predictions.create",
        "ai.request_id": prediction.id,
        "ai.prediction_status": "starting",
    }
    assert record["cost.unknown"] == "prediction still running: priced on its wait() span"


def test_create_then_wait_prices_the_wait(client: replicate.Client, obs_capture: Capture) -> None:
    prediction = client.predictions.create(model=FLUX, input={"prompt": "x"})
    prediction.wait()
    create, wait = ai_spans(obs_capture)
    assert create["ai.request_id"] == wait["ai.request_id"] == prediction.id
    assert pick(wait, "ai.operation", "ai.prediction_status", "ai.queue_ms", "cost.usd") == {
        "ai.operation": "predictions.wait",
        "ai.prediction_status": "succeeded",
        "ai.queue_ms": 250.0,
        "cost.usd": 0.003,
    }


async def test_async_create_by_version(client: replicate.Client, obs_capture: Capture) -> None:
    prediction = await client.predictions.async_create(
        version=DEFAULT_MODELS[FLUX].version, input={"prompt": "x"}
    )
    await prediction.async_wait()
    create, wait = ai_spans(obs_capture)
    assert create["ai.model"] == FLUX
    assert wait["cost.usd"] == 0.003


def test_deployment_prediction_is_grouped_by_the_deployment_and_priced_by_its_model(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    emu.fail("/deployments", 500, {"detail": "down"})
    with pytest.raises(ReplicateError):
        client.deployments.predictions.create("acme/flux-prod", input={"prompt": "x"})
    prediction = client.deployments.predictions.create("acme/flux-prod", input={"prompt": "x"})
    failed, record = ai_spans(obs_capture)
    assert pick(record, "ai.deployment", "ai.model", "ai.response_model", "ai.request_id") == {
        "ai.deployment": "acme/flux-prod",
        "ai.model": "acme/flux-prod",  # as called, failed or not: one row, a true error rate
        "ai.response_model": FLUX,  # what ran, and what the call is priced by
        "ai.request_id": prediction.id,
    }
    assert failed["ai.model"] == "acme/flux-prod"
    operation = ("replicate", "acme/flux-prod", "predictions.create")
    assert obs_capture.metrics["ai.requests"].points == {operation: 2}
    assert obs_capture.metrics["ai.errors"].points == {(*operation, "ReplicateError"): 1}


# -- streams -------------------------------------------------------------------------------------
def test_stream_yields_unchanged_events_and_one_span(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    events = list(client.stream(LLAMA, input={"prompt": "hi"}))
    assert "".join(str(e) for e in events) == "Hello from the emulator."
    assert [e.event.value for e in events][-1] == "done"
    record = only_ai_span(obs_capture)
    assert pick(
        record,
        "ai.operation",
        "ai.modality",
        "ai.request_id",
        "ai.output_count",
        "ai.prediction_status",
    ) == {
        "ai.operation": "stream",
        "ai.modality": "text",
        "ai.request_id": next(iter(emu.predictions)),
        "ai.output_count": 4,
        "ai.prediction_status": "succeeded",
    }
    assert record["ai.stream_end"] == "done"


async def test_async_stream(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    stream = await client.async_stream(LLAMA, input={"prompt": "hi"})
    text = "".join([str(e) async for e in stream])
    assert text == "Hello from the emulator."
    record = only_ai_span(obs_capture)
    assert (record["ai.request_id"], record["ai.output_count"]) == (
        next(iter(emu.predictions)),
        4,
    )


def test_stream_closed_early(client: replicate.Client, obs_capture: Capture) -> None:
    stream = client.stream(LLAMA, input={"prompt": "hi"})
    assert str(next(stream)) == "Hello"
    stream.close()
    record = only_ai_span(obs_capture)
    assert (record["ai.stream_end"], record["ai.output_count"]) == ("close", 1)


def test_stream_dropped_is_ended_by_garbage_collection(
    client: replicate.Client, obs_capture: Capture
) -> None:
    stream = client.stream(LLAMA, input={"prompt": "hi"})
    next(stream)
    del stream
    gc.collect()
    assert only_ai_span(obs_capture)["ai.stream_end"] == "gc"


async def test_async_stream_aclosed_early(client: replicate.Client, obs_capture: Capture) -> None:
    stream = await client.async_stream(LLAMA, input={"prompt": "hi"})
    await stream.__anext__()
    await stream.aclose()
    assert only_ai_span(obs_capture)["ai.stream_end"] == "close"


# -- failures ------------------------------------------------------------------------------------
def test_failed_prediction_fails_the_span_keeps_its_id_and_bills_predict_time(
    client: replicate.Client, emu: ReplicateEmulator
) -> None:
    prices = {"models": {"replicate": {"acme/broken": {"per_gpu_second": {"gpu": "nvidia-t4"}}}}}
    with capture(pricing=PricingOptions(prices=prices)) as cap:
        with pytest.raises(ModelError) as raised:
            client.run("acme/broken", input={"prompt": "x"})
        record = only_ai_span(cap)
        errors = cap.metrics["ai.errors"].points
    assert raised.value.prediction.id == next(iter(emu.predictions))
    assert pick(
        record, "status", "error_type", "error_message", "ai.request_id", "ai.prediction_status"
    ) == {
        "status": "error",
        "error_type": "ModelError",
        "error_message": "CUDA out of memory",
        "ai.request_id": raised.value.prediction.id,
        "ai.prediction_status": "failed",
    }
    assert record["cost.usd"] == pytest.approx(0.5 * 0.000225)  # failed runs are billed too
    assert record["cost.pricing_version"].endswith("+custom")
    assert errors == {("replicate", "acme/broken", "run", "ModelError"): 1}


def test_failed_stream_fails_the_span(client: replicate.Client, obs_capture: Capture) -> None:
    with pytest.raises(RuntimeError, match="CUDA"):
        list(client.stream("acme/broken", input={"prompt": "x"}))
    record = only_ai_span(obs_capture)
    assert (record["status"], record["ai.stream_end"]) == ("error", "error")


def test_nsfw_refusal_is_a_content_violation_a_user_error_not_a_failure(
    obs_capture: Capture,
) -> None:
    # What Replicate's safety checker answers: the prediction fails with this message.
    refused = ModelSpec(
        fail="NSFW content detected. Try running it again, or try a different prompt."
    )
    with ReplicateEmulator(models={"acme/safe-sdxl": refused}) as emu:
        c = replicate.Client(api_token="r8_test", base_url=emu.url)
        c.poll_interval = 0.005
        with pytest.raises(ModelError):
            c.run("acme/safe-sdxl", input={"prompt": "x", "num_inference_steps": 25, "seed": 3})
    record = only_ai_span(obs_capture)
    assert pick(
        record,
        "status",
        "ai.modality",
        "ai.content_violation",
        "ai.content_flags",
        "ai.image.steps",
        "ai.image.seed",
    ) == {
        "status": "content_violation",
        "ai.modality": "image",
        "ai.content_violation": True,
        "ai.content_flags": "nsfw",
        "ai.image.steps": 25,
        "ai.image.seed": 3,
    }
    assert obs_capture.metrics["ai.errors"].points == {}
    assert obs_capture.metrics["ai.user_errors"].points == {
        ("replicate", "acme/safe-sdxl", "run", "content_violation"): 1
    }


def test_http_error_is_invalid_input_a_user_error_not_a_failure(
    client: replicate.Client, emu: ReplicateEmulator, obs_capture: Capture
) -> None:
    emu.fail(
        "/predictions",
        422,
        {"title": "Input validation failed", "detail": "width: must be <= 1440", "status": 422},
    )
    with pytest.raises(ReplicateError) as raised:
        client.run(FLUX, input={"prompt": "x", "width": 4000, "height": 4000})
    assert raised.value.status == 422
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "error_type", "ai.http_status") == {
        "status": "invalid_input",
        "error_type": "ReplicateError",
        "ai.http_status": 422,
    }
    assert obs_capture.metrics["ai.errors"].points == {}
    assert obs_capture.metrics["ai.user_errors"].points == {
        ("replicate", FLUX, "run", "invalid_input"): 1
    }


def test_unknown_model_has_no_price(client: replicate.Client, obs_capture: Capture) -> None:
    with pytest.raises(ReplicateError):
        client.run("acme/missing", input={})
    assert only_ai_span(obs_capture)["cost.unknown"] == "no price for replicate model acme/missing"


# -- privacy and roll-up -------------------------------------------------------------------------
SECRET = "portrait of Alice at her home address"


def test_private_request_exports_no_prompt_anywhere(
    client: replicate.Client, obs_capture: Capture
) -> None:
    with obs.span("request"):
        obs.mark_private()
        client.run(FLUX, input={"prompt": SECRET, "negative_prompt": SECRET})
        list(client.stream(LLAMA, input={"prompt": SECRET}))
    assert "Alice" not in json.dumps(obs_capture.records, default=str)
    for record in ai_spans(obs_capture):
        assert record["ai.prompt"] == "[PRIVATE]"
        assert record.get("ai.input.negative_prompt", "[PRIVATE]") == "[PRIVATE]"


def test_root_span_carries_the_summed_cost(client: replicate.Client, obs_capture: Capture) -> None:
    with obs.span("request"):
        client.run(FLUX, input={"prompt": "a"})
        client.run(SDXL, input={"prompt": "b"})
    assert obs_capture.span("request")["cost.usd"] == pytest.approx(0.003 + 4.2 * 0.000975)


def test_sdk_http_calls_nest_under_the_ai_span_in_one_trace(
    client: replicate.Client, obs_capture: Capture
) -> None:
    obs_httpx = pytest.importorskip("obs_middleware.integrations.httpx")
    obs_httpx.patch()
    try:
        with obs.span("request"):
            client.run(FLUX, input={"prompt": "x"})
            list(client.stream(LLAMA, input={"prompt": "x"}))  # HTTP made inside next()
    finally:
        obs_httpx.unpatch()
    run, stream = ai_spans(obs_capture)
    request = obs_capture.span("request")
    assert run["parent_id"] == stream["parent_id"] == request["span_id"]
    http = [s for s in obs_capture.spans if s.get("span.kind") == "client" and s is not run]
    by_parent = {s["name"]: s["parent_id"] for s in http if s["parent_id"] == run["span_id"]}
    assert set(by_parent) == {"POST 127.0.0.1", "GET 127.0.0.1"}
    assert sum(s["parent_id"] == stream["span_id"] for s in http) == 2  # create + SSE GET
    assert {s["trace_id"] for s in obs_capture.spans} == {request["trace_id"]}


def test_run_records_queue_and_run_time_and_their_histograms(
    client: replicate.Client, obs_capture: Capture
) -> None:
    client.run(SDXL, input={"prompt": "x"})
    record = only_ai_span(obs_capture)
    # created → started is the queue (1.5 s), metrics.predict_time the run (4.2 s), as reported
    assert pick(record, "ai.queue_ms", "ai.run_ms") == {"ai.queue_ms": 1500.0, "ai.run_ms": 4200.0}
    labels = ("replicate", record["ai.model"], "run")
    assert obs_capture.metrics["ai.queue_time"].points[labels].sum == 1500.0
    assert obs_capture.metrics["ai.run_time"].points[labels].sum == 4200.0
