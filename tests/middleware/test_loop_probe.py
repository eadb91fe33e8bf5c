"""The ASGI middleware starts the event-loop delay probe (``_core/runtime.py``) once per loop: on
lifespan startup or the first request, and stops it on lifespan shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from obs_middleware._core import runtime
from obs_middleware.middleware import ObsMiddleware
from obs_middleware.testing import Capture, capture

from .test_asgi import call, routed, scope_for

Message = dict[str, Any]


@pytest.fixture
def obs_capture() -> Iterator[Capture]:
    """A capture with runtime metrics on (``capture()`` leaves them off by default)."""
    with capture(runtime_metrics=True) as cap:
        yield cap


async def test_a_plain_capture_leaves_runtime_metrics_off() -> None:
    with capture():
        assert not runtime.enabled and not runtime.probe_wanted
        await call(ObsMiddleware(routed("/")), scope_for("/"))
        assert runtime._probe is None


async def test_the_first_request_starts_one_probe_on_its_loop(obs_capture: Capture) -> None:
    runtime.unwatch_loop()
    assert runtime.enabled and runtime.probe_wanted
    app = ObsMiddleware(routed("/"))
    await call(app, scope_for("/"))
    probe = runtime._probe
    assert probe is not None and probe.alive()
    assert probe._loop() is asyncio.get_running_loop()
    assert not runtime.probe_wanted  # later requests read one False global
    await call(app, scope_for("/"))
    assert runtime._probe is probe
    runtime.unwatch_loop()


async def test_lifespan_starts_and_stops_the_probe(obs_capture: Capture) -> None:
    runtime.unwatch_loop()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    seen: list[runtime.LoopProbe | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        seen.append(runtime._probe)
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        pass

    await ObsMiddleware(app)({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    probe = seen[0]
    assert probe is not None and probe.stopped  # started at startup, stopped at shutdown
    assert runtime._probe is None and runtime.probe_wanted  # a next server's loop gets one


async def test_no_probe_when_runtime_metrics_are_off(obs_capture: Capture) -> None:
    runtime.unwatch_loop()
    runtime.enable(False)
    try:
        await call(ObsMiddleware(routed("/")), scope_for("/"))
        assert runtime._probe is None
    finally:
        runtime.enable(True)
