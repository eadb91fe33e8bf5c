"""Secrets in prompts sent through the real openai SDK (emulated API) never reach an exported
record, nor does the client's key; a private trace or call exports no part of the prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

import obs_middleware as obs
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.testing import Capture
from obs_middleware.testing.emulators.openai import OpenAIEmulator, error_body

KEY = "sk-proj-Zq8XvT3LmN5pR7sW9yB2cD4fG6hJ"
SECRETS = {
    "openai": "sk-Ab3De5Gh7Jk9Mn2Pq4St6Vw8Yz0Bc",
    "replicate": "r8_Kx7Lm9Np2Qr4St6Uv8Wx0Yz1Ab3Cd5Ef",
    "bearer": "Bearer Tk9Xz.Wq7-Lm3Np5Rs",
    "fal": "1b4e28ba-2fa1-11d2-883f-0016d3cca427:9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlX3Rlc3Q",
}
WORDS = "qxzebrafly describes qxmoonlit garden"


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_openai.patch()
    yield
    obs_openai.unpatch()


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.mark.parametrize("private", ["none", "mark_private"])
@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_prompt_secrets_and_client_key_are_never_exported(
    emu: OpenAIEmulator, obs_capture: Capture, kind: str, private: str
) -> None:
    secret = SECRETS[kind]
    prompt = f"{WORDS}: use {secret} then"
    emu.fail("/chat/completions", 400, error_body(f"refused: {prompt}"), times=1)
    with (
        openai.OpenAI(api_key=KEY, base_url=emu.url + "/v1", max_retries=0) as client,
        obs.span("request"),
    ):
        if private == "mark_private":
            obs.mark_private()
        messages = [{"role": "user", "content": prompt}]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, user=secret)
        for _chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        ):
            pass
    exported = json.dumps(obs_capture.records, ensure_ascii=False, default=str)
    token = secret.removeprefix("Bearer ")
    assert token not in exported
    assert KEY not in exported
    calls = [s for s in obs_capture.spans if s["name"] == "ai.request"]
    assert len(calls) == 3
    if private == "mark_private":
        assert "qxzebrafly" not in exported and "qxmoonlit" not in exported
        assert {c["ai.prompt"] for c in calls} == {"[PRIVATE]"}
    else:
        assert all("qxzebrafly" in c["ai.prompt"] for c in calls)
