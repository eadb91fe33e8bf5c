"""The emulator, the patch, and a real client pointed at the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import replicate

from obs_middleware.integrations import replicate as obs_replicate
from obs_middleware.testing.emulators.replicate import ReplicateEmulator


@pytest.fixture
def emu() -> Iterator[ReplicateEmulator]:
    with ReplicateEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_replicate.patch()
    yield
    obs_replicate.unpatch()


@pytest.fixture
def client(emu: ReplicateEmulator) -> replicate.Client:
    c = replicate.Client(api_token="r8_test", base_url=emu.url)
    c.poll_interval = 0.005
    return c
