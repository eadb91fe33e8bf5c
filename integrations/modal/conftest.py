"""The Modal emulator (gRPC on loopback) with deployed functions, the environment pointing the
SDK at it — never at Modal's servers — and the patch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import modal
import pytest

from obs_middleware.integrations import modal as obs_modal
from obs_middleware.testing.emulators.modal import (
    ModalEmulator,
    RemoteInternalFailure,
    RemoteTimeout,
)


class Rejected(Exception):
    """Raised by the deployed ``reject`` function; the client re-raises it."""


def render(prompt: str, steps: int = 4) -> list[str]:
    return [f"{prompt}:{i}" for i in range(steps)]


def frames(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield bytes([i]) * 8


def reject(prompt: str) -> None:
    raise Rejected(f"refused: {prompt}")


def too_slow() -> None:
    raise RemoteTimeout("ran past 300s")


def crashed() -> None:
    raise RemoteInternalFailure("worker lost")


@pytest.fixture
def emu() -> Iterator[ModalEmulator]:
    with ModalEmulator(queue_s=0.01, latency_s=0.01) as emulator, emulator.use():
        assert os.environ["MODAL_SERVER_URL"].startswith("http://127.0.0.1:")
        emulator.register("images", "render", render, gpu="A100-80GB")
        emulator.register("images", "render_h100", render, gpu="H100", gpu_count=2)
        emulator.register("images", "frames", frames, cpu=2.0)
        emulator.register("images", "reject", reject)
        emulator.register("images", "too_slow", too_slow)
        emulator.register("images", "crashed", crashed)
        yield emulator


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a test that forgets the emulator cannot reach Modal: a closed loopback port."""
    monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-offline")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-offline")


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_modal.patch()
    yield
    obs_modal.unpatch()


@pytest.fixture
def lookup(emu: ModalEmulator) -> Any:
    return lambda name: modal.Function.from_name("images", name)
