"""The emulator (queue and run APIs, SSE), ``fal_client`` pointed at it, and the patch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obs_middleware.integrations import fal as obs_fal
from obs_middleware.testing.emulators.fal import FalEmulator


@pytest.fixture
def emu() -> Iterator[FalEmulator]:
    with FalEmulator(queue_s=0.03, run_s=0.03) as emulator, emulator.use():
        yield emulator


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_fal.patch()
    yield
    obs_fal.unpatch()
