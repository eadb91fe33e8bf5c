"""The emulator, the patch, and a real ``webuiapi`` client pointed at the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import webuiapi

from obs_middleware.integrations import a1111 as obs_a1111
from obs_middleware.testing.emulators.a1111 import A1111Emulator


@pytest.fixture
def emu() -> Iterator[A1111Emulator]:
    with A1111Emulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_a1111.patch()
    yield
    obs_a1111.unpatch()


@pytest.fixture
def api(emu: A1111Emulator) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=emu.url + "/sdapi/v1")
