"""A fixture set of calls with known usage, priced end to end through the real SDKs against the
emulators: each cost equals the value computed by hand from ``pricing.json`` (exactly, after the
10-decimal rounding ``cost.estimate`` applies), the request's total is the sum of its calls, and
an unpriced model yields ``cost.unknown``, never 0."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import fal_client
import openai
import pytest
import replicate

import obs_middleware as obs
from obs_middleware.integrations import fal as obs_fal
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.integrations import replicate as obs_replicate
from obs_middleware.integrations._ai import ai_call
from obs_middleware.testing import Capture
from obs_middleware.testing.emulators.fal import FalEmulator
from obs_middleware.testing.emulators.openai import OpenAIEmulator
from obs_middleware.testing.emulators.replicate import DEFAULT_MODELS, ModelSpec, ReplicateEmulator

SDXL = f"stability-ai/sdxl:{DEFAULT_MODELS['stability-ai/sdxl'].version}"
HI = [{"role": "user", "content": "Say hi"}]

# (label, expected USD computed by hand from pricing.json version 2026-01-15)
EXPECTED = {
    # gpt-4o: 1000 input of which 400 cached, 300 output of which 100 reasoning:
    # 600 * $2.50 + 400 * $1.25 + 300 * $10.00 per 1M tokens (reasoning at the output rate).
    "chat gpt-4o cached+reasoning": 0.005,
    # dall-e-3 1024x1792 hd: $0.12 per image, 2 images (one call each: dall-e-3 takes n=1).
    "dall-e-3 1024x1792 hd": 0.12,
    # dall-e-2 512x512: $0.018 per image, 3 images.
    "dall-e-2 512x512 x3": 0.054,
    # stability-ai/sdxl: predict_time 4.2 s on nvidia-l40s at $0.000975/s.
    "replicate sdxl predict_time": 0.004095,
    # fal-ai/flux/dev: 3 billable units at $0.025 (units win over megapixels).
    "fal flux/dev 3 units": 0.075,
    # modal A100-80GB x2 for 2.5 s at $0.000694/s (the emulator's run time is measured, not
    # fixed, so this row goes through the shared AI layer with a known duration).
    "modal A100-80GB x2 2.5s": 0.00347,
}


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    for module in (obs_openai, obs_replicate, obs_fal):
        module.patch()
    yield
    for module in (obs_openai, obs_replicate, obs_fal):
        module.unpatch()


@pytest.fixture
def oai() -> Iterator[openai.OpenAI]:
    emu = OpenAIEmulator(
        prompt_tokens=1000, completion_tokens=300, cached_tokens=400, reasoning_tokens=100
    )
    with emu, openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0) as c:
        yield c


@pytest.fixture
def rep() -> Iterator[replicate.Client]:
    # An unlisted model that runs and reports predict_time, yet has no price.
    with ReplicateEmulator(models={"acme/unlisted-model": ModelSpec(predict_time=1.0)}) as emu:
        client = replicate.Client(api_token="r8_test", base_url=emu.url)
        client.poll_interval = 0.005
        yield client


@pytest.fixture
def fal() -> Iterator[FalEmulator]:
    with FalEmulator(queue_s=0.0, run_s=0.0, billable_units=3) as emu, emu.use():
        yield emu


def run_fixture_calls(oai: openai.OpenAI, rep: replicate.Client) -> list[str]:
    """Make every call of the fixture set; returns the labels in span-end order."""
    oai.chat.completions.create(model="gpt-4o", messages=HI)
    oai.images.generate(model="dall-e-3", prompt="a fox", size="1024x1792", quality="hd")
    oai.images.generate(model="dall-e-2", prompt="a fox", size="512x512", n=3)
    rep.run(SDXL, input={"prompt": "a fox"})
    fal_client.run("fal-ai/flux/dev", {"prompt": "a fox"})
    with ai_call("modal", "call", "images.render") as call:
        call.set_compute(2.5, gpu="A100-80GB", gpu_count=2)
    return list(EXPECTED)


def test_fixture_calls_cost_exactly_the_hand_computed_prices_and_sum_on_the_root(
    oai: openai.OpenAI, rep: replicate.Client, fal: FalEmulator, obs_capture: Capture
) -> None:
    with obs.span("request"):
        labels = run_fixture_calls(oai, rep)
    calls = [s for s in obs_capture.spans if s["name"] == "ai.request"]
    assert len(calls) == len(labels)
    got = {label: span.get("cost.usd") for label, span in zip(labels, calls, strict=True)}
    assert got == EXPECTED
    assert all("cost.unknown" not in span for span in calls)
    root = obs_capture.span("request")
    assert math.isclose(root["cost.usd"], sum(got.values()), rel_tol=1e-12)
    assert math.isclose(root["cost.usd"], sum(EXPECTED.values()), rel_tol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda oai, rep: oai.chat.completions.create(
                model="ft:gpt-4o-mini:acme::x1", messages=HI
            ),
            id="openai-fine-tuned",
        ),
        pytest.param(
            lambda oai, rep: oai.chat.completions.create(model="my-local-llm", messages=HI),
            id="openai-unknown",
        ),
        pytest.param(
            lambda oai, rep: rep.run("acme/unlisted-model", input={"prompt": "a fox"}),
            id="replicate-unknown",
        ),
    ],
)
def test_unknown_model_yields_cost_unknown_not_zero(
    call: Any, oai: openai.OpenAI, rep: replicate.Client, obs_capture: Capture
) -> None:
    with obs.span("request"):
        call(oai, rep)
        oai.images.generate(model="dall-e-2", prompt="a fox", size="256x256")
    unknown, priced = [s for s in obs_capture.spans if s["name"] == "ai.request"]
    assert "cost.usd" not in unknown
    assert unknown["cost.unknown"]
    assert priced["cost.usd"] == 0.016
    root = obs_capture.span("request")
    assert root["cost.usd"] == 0.016  # the known part still sums
    assert root["cost.unknown"]  # and the root says it is incomplete
