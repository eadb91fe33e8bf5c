"""The webuiapi client's real code against the A1111 emulator: one ``ai.request`` span per
txt2img, img2img or upscale, with image count, size, steps, seed, sampler and cost; failures."""

from __future__ import annotations

import logging
import socket
import sys

import pytest
import requests
import webuiapi
from PIL import Image

import obs_middleware as obs
from obs_middleware._core.config import PricingOptions
from obs_middleware.integrations import a1111 as obs_a1111
from obs_middleware.testing import Capture, capture
from obs_middleware.testing.emulators.a1111 import A1111Emulator

from .._ai_checks import ai_spans, only_ai_span, pick

FIELDS = (
    "span.kind",
    "status",
    "ai.provider",
    "ai.operation",
    "ai.model",
    "ai.response_model",
    "ai.prompt",
    "ai.image_count",
    "ai.width",
    "ai.height",
    "ai.steps",
    "ai.seed",
    "ai.sampler",
    "cost.usd",
    "cost.unknown",
)


# -- txt2img -------------------------------------------------------------------------------------
def test_txt2img_is_one_span_with_count_size_steps_resolved_seed_sampler_and_unknown_cost(
    api: webuiapi.WebUIApi, obs_capture: Capture
) -> None:
    result = api.txt2img(
        prompt="a lighthouse at dusk",
        width=640,
        height=384,
        steps=12,
        sampler_name="DPM++ 2M",
        batch_size=2,
    )
    assert len(result.images) == 2 and result.image.size == (640, 384)
    record = only_ai_span(obs_capture)
    assert pick(record, *FIELDS) == {
        "span.kind": "client",
        "status": "ok",
        "ai.provider": "a1111",
        "ai.operation": "txt2img",
        "ai.model": "v1-5-pruned-emaonly",  # none asked for: the checkpoint that ran
        "ai.response_model": "v1-5-pruned-emaonly",
        "ai.prompt": "a lighthouse at dusk",
        "ai.image_count": 2,
        "ai.width": 640,
        "ai.height": 384,
        "ai.steps": 12,
        "ai.seed": 1234567890,  # the request's -1, resolved by the webui
        "ai.sampler": "DPM++ 2M",
        "cost.usd": None,
        "cost.unknown": "no price for a1111 model v1-5-pruned-emaonly",
    }
    assert pick(record, "ai.input.steps", "ai.input.sampler_name", "ai.input.batch_size") == {
        "ai.input.steps": 12,
        "ai.input.sampler_name": "DPM++ 2M",
        "ai.input.batch_size": 2,
    }
    asked = ("ai.modality", "ai.image.width", "ai.image.height", "ai.image.steps")
    assert pick(record, *asked, "ai.image.sampler", "ai.image.count") == {
        "ai.modality": "image",
        "ai.image.width": 640,
        "ai.image.height": 384,
        "ai.image.steps": 12,
        "ai.image.sampler": "DPM++ 2M",
        "ai.image.count": 2,
    }


def test_txt2img_checkpoint_override_is_the_model_and_is_priced_from_the_table(
    api: webuiapi.WebUIApi,
) -> None:
    prices = {"models": {"a1111": {"sd_xl_base_1.0": {"per_image": {"*": 0.002}}}}}
    with capture(pricing=PricingOptions(prices=prices)) as cap:
        api.txt2img(
            prompt="x",
            seed=7,
            n_iter=3,
            override_settings={"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"},
        )
        record = only_ai_span(cap)
        cost = cap.metrics["ai.cost_usd"].points
    assert pick(record, "ai.model", "ai.seed", "ai.image_count", "cost.usd") == {
        "ai.model": "sd_xl_base_1.0",
        "ai.seed": 7,
        "ai.image_count": 3,
        "cost.usd": 0.006,
    }
    assert cost == {("a1111", "sd_xl_base_1.0", "txt2img", "", ""): pytest.approx(0.006)}


# -- img2img and upscale -------------------------------------------------------------------------
def test_img2img_is_one_span_with_the_result_size(
    api: webuiapi.WebUIApi, obs_capture: Capture
) -> None:
    source = Image.new("RGB", (256, 256), (10, 20, 30))
    result = api.img2img(images=[source], prompt="oil painting", width=512, height=768, steps=8)
    assert result.image.size == (512, 768)
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.image_count", "ai.width", "ai.height", "ai.steps") == {
        "ai.operation": "img2img",
        "ai.image_count": 1,
        "ai.width": 512,
        "ai.height": 768,
        "ai.steps": 8,
    }
    assert "[BASE64]" not in str(record)  # the init image is never an attribute


def test_upscale_is_one_span_named_by_its_upscaler_with_the_output_size(
    api: webuiapi.WebUIApi, obs_capture: Capture
) -> None:
    source = Image.new("RGB", (300, 200))
    result = api.extra_single_image(
        image=source, upscaler_1=webuiapi.Upscaler.ESRGAN_4x, upscaling_resize=4
    )
    assert result.image.size == (1200, 800)
    record = only_ai_span(obs_capture)
    assert pick(
        record, "ai.operation", "ai.model", "ai.image_count", "ai.width", "ai.height", "status"
    ) == {
        "ai.operation": "upscale",
        "ai.model": "R-ESRGAN 4x+",
        "ai.image_count": 1,
        "ai.width": 1200,
        "ai.height": 800,
        "status": "ok",
    }
    assert record["ai.input.upscaling_resize"] == 4


async def test_use_async_returns_a_future_and_is_one_span(
    api: webuiapi.WebUIApi, obs_capture: Capture
) -> None:
    with obs.span("request") as parent:
        result = await api.txt2img(prompt="async", steps=5, use_async=True)
    assert result.image.size == (512, 512)
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.steps", "status") == {
        "ai.operation": "txt2img",
        "ai.steps": 5,
        "status": "ok",
    }
    assert record["parent_id"] == f"{parent.span_id:016x}"


# -- failures ------------------------------------------------------------------------------------
def test_webui_rejection_is_an_invalid_input_span_and_the_app_gets_its_error(
    api: webuiapi.WebUIApi, emu: A1111Emulator, obs_capture: Capture
) -> None:
    emu.fail("txt2img", 422, {"detail": [{"msg": "bad sampler"}]})
    with pytest.raises(RuntimeError) as raised:
        api.txt2img(prompt="x")
    assert raised.value.args[0] == 422
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "error_type", "ai.http_status") == {
        "status": "invalid_input",
        "error_type": "RuntimeError",
        "ai.http_status": 422,
    }


def test_server_error_is_an_error_span_and_the_app_gets_its_error(
    api: webuiapi.WebUIApi, emu: A1111Emulator, obs_capture: Capture
) -> None:
    emu.fail("img2img", 500, {"error": "OutOfMemoryError", "detail": "CUDA out of memory"})
    with pytest.raises(RuntimeError):
        api.img2img(images=[Image.new("RGB", (64, 64))], prompt="x")
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "ai.http_status", "ai.operation") == {
        "status": "error",
        "ai.http_status": 500,
        "ai.operation": "img2img",
    }
    assert obs_capture.metrics["ai.errors"].points


def test_unreachable_webui_is_an_error_span_and_the_app_gets_requests_error(
    obs_capture: Capture,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = webuiapi.WebUIApi(baseurl=f"http://127.0.0.1:{port}/sdapi/v1")
    with pytest.raises(requests.ConnectionError):
        api.txt2img(prompt="x")
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "error_type") == {
        "status": "error",
        "error_type": "ConnectionError",
    }


# -- patching ------------------------------------------------------------------------------------
def test_unpatch_restores_the_client_and_patch_works_again(
    api: webuiapi.WebUIApi, obs_capture: Capture
) -> None:
    obs_a1111.unpatch()
    assert not hasattr(webuiapi.WebUIApi.txt2img, "__wrapped__")
    api.txt2img(prompt="x")
    assert ai_spans(obs_capture) == []
    obs_a1111.patch()
    api.txt2img(prompt="x")
    assert len(ai_spans(obs_capture)) == 1


def test_missing_webuiapi_warns_once_and_patches_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    obs_a1111.unpatch()
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    monkeypatch.setattr("obs_middleware._core.internal._warned", set())
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        obs_a1111.patch()
        obs_a1111.patch()
    warnings = [r.getMessage() for r in caplog.records if "a1111" in r.getMessage()]
    assert warnings == [
        "obs-middleware: not instrumenting a1111: webuiapi is not installed "
        "(pip install 'obs-middleware[a1111]')"
    ]
    assert not hasattr(webuiapi.WebUIApi.txt2img, "__wrapped__")


def test_instrument_all_patches_an_imported_webuiapi(
    api: webuiapi.WebUIApi, obs_capture: Capture
) -> None:
    obs_a1111.unpatch()
    assert "webuiapi" in sys.modules
    report = obs.instrument_all(only=["a1111"])
    try:
        assert [(o.name, o.status) for o in report] == [("a1111", "patched")]
        api.txt2img(prompt="x")
    finally:
        obs.uninstrument_all()
    assert only_ai_span(obs_capture)["ai.operation"] == "txt2img"
