"""The process lifecycle: one shutdown deadline across hooks, backends not waited on once stopping.

End to end, in real processes (SIGTERM, uvicorn, interpreter exit): tests/system/test_shutdown.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obs_middleware as obs
from obs_middleware import _delivery, _setup
from obs_middleware._core.config import Config, PipelineOptions
from obs_middleware._core.metrics import registry
from obs_middleware._delivery import DeliveryOptions
from obs_middleware._spool import Spool
from obs_middleware.exporters import MemoryExporter
from obs_middleware.exporters.http import HttpExporter
from obs_middleware.middleware import ObsMiddleware

if TYPE_CHECKING:
    from tests.conftest import HungBackend

Configure = Callable[..., Config]


def dropped() -> dict[tuple[str, ...], float]:
    return dict(registry.snapshot()["obs.dropped"].points)


def spans(start: int, n: int) -> None:
    for i in range(start, start + n):
        with obs.span("s", n=i):
            pass


def spooled(directory: Path) -> list[int]:
    spool = Spool(str(directory), 1 << 30, 1.0)
    found: list[int] = []
    for batch in spool.batches():
        found.extend(r["n"] for r in batch)
        spool.ack()
    return sorted(found)


def lifespan() -> None:
    """Run ``app``'s ASGI lifespan once: startup, then shutdown (a server starting and stopping)."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        pass

    asyncio.run(ObsMiddleware(inner)({"type": "lifespan"}, receive, send))


def test_shutdown_with_a_hung_backend_spools_the_queue_and_the_batch_in_flight(
    configured: Configure, hung_backend: HungBackend, tmp_path: Path
) -> None:
    exporter = HttpExporter(hung_backend.url, delivery=DeliveryOptions(spool_dir=str(tmp_path)))
    configured(exporters=[exporter])
    spans(0, 10)
    assert hung_backend.received.wait(10)  # the worker now waits on the hung backend
    spans(10, 20)  # queued behind it
    started = time.monotonic()
    assert obs.shutdown() is True
    assert time.monotonic() - started < 1.0  # a correctness bound: no request timeout waited out
    assert dropped() == {}
    assert spooled(tmp_path) == list(range(30))


def test_shutdown_without_spool_counts_everything_it_cannot_deliver(
    configured: Configure, hung_backend: HungBackend
) -> None:
    configured(exporters=[HttpExporter(hung_backend.url)])
    spans(0, 10)
    assert hung_backend.received.wait(10)
    spans(10, 20)
    assert obs.shutdown() is True
    assert dropped() == {("shutdown:http",): 30}


def test_a_lifespan_flush_and_the_exit_shutdown_share_one_deadline(
    configured: Configure, hung_backend: HungBackend
) -> None:
    deadline = 1.0
    configured(
        exporters=[HttpExporter(hung_backend.url)],
        pipeline=PipelineOptions(shutdown_timeout_s=deadline, flush_on_sigterm=False),
    )
    spans(0, 10)
    assert hung_backend.received.wait(10)
    spans(10, 20)
    started = time.monotonic()
    lifespan()  # the server stops: its flush waits on the hung backend
    obs.shutdown()  # then the exit hook
    # One deadline in all (plus scheduling slack), not one per hook.
    assert time.monotonic() - started < deadline + 0.4
    assert sum(dropped().values()) == 30


def test_a_server_started_again_gets_a_fresh_deadline_for_its_lifespan_flush(
    configured: Configure,
) -> None:
    memory = MemoryExporter()
    configured(
        exporters=[memory],
        pipeline=PipelineOptions(interval_s=60, shutdown_timeout_s=0.5, flush_on_sigterm=False),
    )
    lifespan()  # a test client's lifespan: the process goes on
    time.sleep(0.6)  # past that shutdown's deadline
    spans(0, 3)
    lifespan()  # the next test client: its shutdown flush still exports
    assert len(memory.records) == 3


def test_a_new_configuration_after_shutdown_waits_on_backends_again(
    configured: Configure,
) -> None:
    configured(exporters=[MemoryExporter()])
    obs.shutdown()
    assert _delivery.exiting()
    configured(exporters=[MemoryExporter()])
    assert not _delivery.exiting()
    assert _setup._deadline is None
