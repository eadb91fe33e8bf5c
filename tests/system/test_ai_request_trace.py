"""One Starlette request calling two providers through their real SDKs (emulated APIs) is one
trace: the server span parents both ``ai.request`` spans and carries the summed cost and tier."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import replicate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.integrations import replicate as obs_replicate
from obs_middleware.testing import Capture
from obs_middleware.testing.emulators.openai import OpenAIEmulator
from obs_middleware.testing.emulators.replicate import ReplicateEmulator

FLUX = "black-forest-labs/flux-schnell"
# pricing.json: gpt-4o-mini $0.15/$0.60 per 1M tokens (20 in, 10 out); flux-schnell $0.003/image.
CHAT_USD = (20 * 0.15 + 10 * 0.6) / 1e6
FLUX_USD = 0.003


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_openai.patch()
    obs_replicate.patch()
    yield
    obs_replicate.unpatch()
    obs_openai.unpatch()


@pytest.fixture
def emus() -> Iterator[tuple[OpenAIEmulator, ReplicateEmulator]]:
    with OpenAIEmulator() as oai, ReplicateEmulator() as rep:
        yield oai, rep


def app_for(oai: OpenAIEmulator, rep: ReplicateEmulator) -> Any:
    async def generate(request: Request) -> JSONResponse:
        obs.set_user("u1", tier="pro")
        async with openai.AsyncOpenAI(
            api_key="sk-test", base_url=oai.url + "/v1", max_retries=0
        ) as ai:
            chat = await ai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Name a fox"}]
            )
        images = replicate.Client(api_token="r8_test", base_url=rep.url)
        images.poll_interval = 0.005
        output = await images.async_run(FLUX, input={"prompt": chat.choices[0].message.content})
        return JSONResponse({"images": [str(o) for o in output]})

    return obs.ObsMiddleware(Starlette(routes=[Route("/generate", generate, methods=["POST"])]))


async def test_request_calling_two_providers_is_one_trace_with_cost_and_tier_on_the_root(
    emus: tuple[OpenAIEmulator, ReplicateEmulator], obs_capture: Capture
) -> None:
    transport = httpx.ASGITransport(app=app_for(*emus))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        response = await http.post("/generate")
    assert response.status_code == 200, response.text

    spans = obs_capture.spans
    assert len({s["trace_id"] for s in spans}) == 1, [(s["name"], s["trace_id"]) for s in spans]
    root = obs_capture.span("POST /generate")
    assert root["parent_id"] is None
    calls = {s["ai.provider"]: s for s in spans if s["name"] == "ai.request"}
    assert sorted(calls) == ["openai", "replicate"]
    assert {s["parent_id"] for s in calls.values()} == {root["span_id"]}

    assert calls["openai"]["cost.usd"] == round(CHAT_USD, 10)
    assert calls["replicate"]["cost.usd"] == FLUX_USD
    assert math.isclose(
        root["cost.usd"],
        calls["openai"]["cost.usd"] + calls["replicate"]["cost.usd"],
        rel_tol=1e-12,
    )
    assert "cost.unknown" not in root
    assert (root["user_id"], root["tier"]) == ("u1", "pro")

    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {
        ("openai", calls["openai"]["ai.model"], "chat", "/generate", "pro"): calls["openai"][
            "cost.usd"
        ],
        ("replicate", FLUX, "run", "/generate", "pro"): FLUX_USD,
    }
