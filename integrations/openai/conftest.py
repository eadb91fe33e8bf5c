"""The emulator, the patch, and real clients pointed at the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from obs_middleware.integrations import openai as obs_openai
from obs_middleware.testing.emulators.openai import OpenAIEmulator


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_openai.patch()
    yield
    obs_openai.unpatch()


@pytest.fixture
def client(emu: OpenAIEmulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(emu: OpenAIEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0) as c:
        yield c
