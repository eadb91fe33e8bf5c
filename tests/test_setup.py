"""The process lifecycle: one shutdown deadline across hooks, backends not waited on once stopping.

End to end, in real processes (SIGTERM, uvicorn, interpreter exit): tests/system/test_shutdown.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

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
NO_SPOOL = DeliveryOptions(spool_dir=None)  # what happens without the (default) disk spool


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
    configured(exporters=[HttpExporter(hung_backend.url, delivery=NO_SPOOL)])
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
        exporters=[HttpExporter(hung_backend.url, delivery=NO_SPOOL)],
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


# -- misconfiguration is loud and safe: one warning on stderr, nothing on stdout -------------------

_EMIT = """
import sys
{prelude}
import obs_middleware as obs
from obs_middleware import _setup
with obs.span("chat", prompt="a secret prompt"):
    obs.set_user("user-42")
obs.flush(5)
print("exporters:", [e.name for e in _setup.current_config().exporters], file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("exporters", "prelude", "says"),
    [
        ("tinybird", "", "needs a token"),
        ("http", "", "needs a URL"),
        ("tinybrid", "", "unknown exporter"),
        ("prometheus:not-a-port", "", "not-a-port"),
        # The otlp extra missing: what a deployment without `pip install obs-middleware[otlp]` sees.
        ("otlp", "sys.modules['opentelemetry'] = None", "otlp"),
        ("jsonl:/nonexistent-obs-dir/out.jsonl", "", "does not exist"),
    ],
)
def test_an_exporter_that_cannot_work_warns_once_and_prints_no_record(
    tmp_path: Path, exporters: str, prelude: str, says: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "TB_", "PYTHONWARN"))}
    env |= {"OBS_EXPORTERS": exporters, "PYTHONPATH": str(Path(obs.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", _EMIT.format(prelude=prelude)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == ""  # not a pipe-fed fallback printing prompts and user ids
    warnings_seen = out.stderr.count("obs-middleware:")
    assert warnings_seen == 1, out.stderr
    assert says in out.stderr
    assert "Traceback" not in out.stderr
    built = "['jsonl']" if exporters.startswith("jsonl") else "[]"
    assert f"exporters: {built}" in out.stderr
    assert "a secret prompt" not in out.stderr


def test_a_deployment_typo_beside_a_working_exporter_keeps_the_working_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OBS_EXPORTERS", f"tinybrid, jsonl:{tmp_path / 'out.jsonl'}")
    with pytest.warns(UserWarning, match="tinybrid") as seen:
        config = _setup.build_config()
    assert len(seen) == 1
    assert [type(e).__name__ for e in config.exporters] == ["JsonlExporter"]


def test_exporters_named_in_code_still_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TB_TOKEN", raising=False)
    with pytest.raises(ValueError, match="token"):
        _setup.build_config(exporters="tinybird")
