"""The public face of AI calls: ``obs.ai_call`` as a context manager and a decorator (sync and
async), ``obs.current_ai_call``, ``obs.ai_cache``; priced from the table or explicitly, rolled
up to the root like a built-in call."""

from __future__ import annotations

import asyncio

import pytest

import obs_middleware as obs
from obs_middleware._core.config import PricingOptions
from obs_middleware.integrations._ai import ai_call as builtin_call
from obs_middleware.testing import Capture, capture

PRICES = {"models": {"a1111": {"sdxl": {"per_image": {"*": 0.002}}}}}


def test_a_custom_image_call_is_priced_from_the_table_and_rolled_up_to_its_root() -> None:
    with capture(pricing=PricingOptions(prices=PRICES)) as cap:
        with obs.span("POST /images") as root:
            root.set(**{"http.route": "/images"})
            obs.set_user("u1", "pro")
            with obs.ai_call("a1111", "sdxl", operation="txt2img", modality="image") as call:
                assert isinstance(call, obs.AICall)
                call.set_images(4, width=1024, height=1024)
                call.set_image_params(steps=30, seed=2**40, sampler="Euler a", guidance=7.0)
                call.set_units(4)
        record = cap.span("ai.request")
        assert {k: v for k, v in record.items() if k.startswith(("ai.", "cost.usd"))} == {
            "ai.provider": "a1111",
            "ai.operation": "txt2img",
            "ai.modality": "image",
            "ai.model": "sdxl",
            "ai.image_count": 4,
            "ai.width": 1024,
            "ai.height": 1024,
            "ai.image.steps": 30,
            "ai.image.seed": 2**40,
            "ai.image.sampler": "Euler a",
            "ai.image.guidance": 7.0,
            "ai.billable_units": 4.0,
            "cost.usd": 0.008,
        }
        assert cap.span("POST /images")["cost.usd"] == 0.008
        assert cap.metrics["ai.cost_usd"].points == {
            ("a1111", "sdxl", "txt2img", "/images", "pro"): 0.008
        }
        assert cap.metrics["ai.requests"].points == {("a1111", "sdxl", "txt2img"): 1}


def test_an_explicit_cost_wins_and_an_unpriced_model_says_why(obs_capture: Capture) -> None:
    with obs.ai_call("my-gpu", "llama-3-8b", operation="chat") as call:
        call.set_tokens(input=10, cached=4, output=5)
        call.set_cost(0.0123)
    with obs.ai_call("my-gpu", "llama-3-8b", operation="chat") as call:
        call.set_tokens(input=10, output=5)
    priced, unpriced = obs_capture.spans
    assert (priced["cost.usd"], priced["cost.pricing_version"]) == (0.0123, "provider")
    assert (priced["ai.modality"], priced["ai.cached_tokens"]) == ("text", 4)
    assert "cost.usd" not in unpriced and unpriced["cost.unknown"]


def test_as_a_decorator_each_call_of_a_sync_function_is_one_new_ai_call(
    obs_capture: Capture,
) -> None:
    @obs.ai_call("my-gpu", "whisper", operation="transcribe", modality="audio")
    def transcribe(seconds: float) -> str:
        call = obs.current_ai_call()
        assert call is not None
        call.set_compute(seconds, gpu="L4")
        return "text"

    assert transcribe.__name__ == "transcribe"
    assert [transcribe(1.5), transcribe(2.0)] == ["text", "text"]
    first, second = obs_capture.spans
    assert first["span_id"] != second["span_id"]
    assert [(s["ai.modality"], s["ai.gpu_seconds"]) for s in (first, second)] == [
        ("audio", 1.5),
        ("audio", 2.0),
    ]
    assert obs.current_ai_call() is None


def test_as_a_decorator_of_an_async_function_the_call_spans_the_await(
    obs_capture: Capture,
) -> None:
    @obs.ai_call("my-gpu", "bge-m3", operation="embed", modality="embedding")
    async def embed(text: str) -> list[float]:
        await asyncio.sleep(0)
        call = obs.current_ai_call("my-gpu")
        assert call is not None
        call.set_tokens(input=len(text))
        return [0.0]

    assert asyncio.run(embed("four")) == [0.0]
    (record,) = obs_capture.spans
    assert (record["ai.modality"], record["ai.input_tokens"]) == ("embedding", 4)


def test_an_exception_in_a_decorated_function_fails_the_call_and_is_reraised(
    obs_capture: Capture,
) -> None:
    @obs.ai_call("my-gpu", "sdxl", modality="image")
    def generate() -> None:
        raise TimeoutError("worker gone")

    with pytest.raises(TimeoutError):
        generate()
    (record,) = obs_capture.spans
    assert (record["status"], record["error_type"]) == ("error", "TimeoutError")
    assert obs_capture.metrics["ai.errors"].points == {
        ("my-gpu", "sdxl", "generate", "TimeoutError"): 1
    }


def test_a_content_violation_is_a_user_error_never_a_failure(obs_capture: Capture) -> None:
    with obs.ai_call("my-gpu", "sdxl", modality="image") as call:
        call.set_content_safety(flagged=2, categories=["nsfw", "violence", "nsfw"])
    (record,) = obs_capture.spans
    assert {k: record[k] for k in ("status", "ai.content_violation", "ai.nsfw_flagged")} == {
        "status": "content_violation",
        "ai.content_violation": True,
        "ai.nsfw_flagged": 2,
    }
    assert record["ai.content_flags"] == "nsfw,violence"
    assert obs_capture.metrics["ai.errors"].points == {}
    assert obs_capture.metrics["ai.user_errors"].points == {
        ("my-gpu", "sdxl", "generate", "content_violation"): 1
    }


def test_a_clean_safety_check_is_recorded_and_leaves_the_status(obs_capture: Capture) -> None:
    with obs.ai_call("my-gpu", "sdxl", modality="image") as call:
        call.set_content_safety(False)
    (record,) = obs_capture.spans
    assert (record["status"], record["ai.content_violation"]) == ("ok", False)


def test_ai_cache_marks_the_running_call_else_the_current_span(obs_capture: Capture) -> None:
    assert obs.ai_cache(True) is False  # nothing to mark
    with obs.span("POST /images"):
        assert obs.ai_cache(False) is True
        with obs.ai_call("my-gpu", "sdxl", modality="image") as call:
            assert obs.ai_cache(True, provider="my-gpu") is True
            call.set_cost(0.0)
    ai, root = obs_capture.spans
    assert (ai["ai.cache_status"], ai["cost.usd"]) == ("hit", 0.0)
    assert root["ai.cache_status"] == "miss"


def test_a_rewritten_prompt_is_sanitized_and_private_when_the_call_is(
    obs_capture: Capture,
) -> None:
    with obs.ai_call("my-gpu", "sdxl", modality="image") as call:
        call.set_inputs("a fox")
        call.set_prompt_transformed(prompt="a fox, key sk-abcdefghijklmnopqrstuvwx, 4k")
    with obs.ai_call("my-gpu", "sdxl", modality="image", private=True) as call:
        call.set_prompt_transformed(prompt="a secret fox")
    public, private = obs_capture.spans
    assert public["ai.prompt.transformed"] is True
    assert "sk-abcdefghijklmnopqrstuvwx" not in public["ai.prompt.revised"]
    assert private["ai.prompt.revised"] == "[PRIVATE]"


def test_image_parameters_of_the_wrong_type_are_left_out(obs_capture: Capture) -> None:
    with obs.ai_call("my-gpu", "sdxl", modality="image") as call:
        call.set_image_params(width="wide", steps=True, seed=2**70, sampler=3)  # type: ignore[arg-type]
        call.set_image_params_from({"num_inference_steps": 20, "guidance_scale": 3.5, "x": 1})
    (record,) = obs_capture.spans
    assert {k: v for k, v in record.items() if k.startswith("ai.image.")} == {
        "ai.image.steps": 20,
        "ai.image.guidance": 3.5,
    }


def test_inside_a_builtin_call_of_the_same_provider_it_joins_it(obs_capture: Capture) -> None:
    with (
        builtin_call("fal", "subscribe", "fal-ai/flux/dev", modality="image"),
        obs.ai_call("fal", "fal-ai/flux/dev", operation="inner") as call,
    ):
        call.set_cache(True)
    (record,) = obs_capture.spans
    assert (record["ai.operation"], record["ai.cache_status"]) == ("subscribe", "hit")
