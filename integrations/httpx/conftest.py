"""A downstream Starlette service under uvicorn in its own process, and jsonl export here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions
from obs_middleware._core.metrics import registry

DOWNSTREAM = Path(__file__).with_name("downstream.py")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@dataclass
class Downstream:
    url: str
    jsonl: Path
    process: subprocess.Popen[bytes]

    def records(self) -> list[dict[str, Any]]:
        """Stop the service (SIGTERM: uvicorn's graceful shutdown flushes) and read its spans."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)
        return read_jsonl(self.jsonl)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def downstream(tmp_path: Path) -> Iterator[Downstream]:
    """The downstream service on a free loopback port, ready to answer."""
    port = free_port()
    jsonl = tmp_path / "downstream.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBS_")}
    process = subprocess.Popen([sys.executable, str(DOWNSTREAM), str(port), str(jsonl)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            # urllib is not instrumented: readiness probes leave no client spans behind.
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"downstream service did not start (exit code {process.poll()})")
            time.sleep(0.1)
    service = Downstream(url, jsonl, process)
    yield service
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture
def upstream_jsonl(tmp_path: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Export this process's spans as service "upstream" to jsonl; returns a reader (flushes)."""
    registry.reset()
    path = tmp_path / "upstream.jsonl"
    config = _setup.build_config(
        service="upstream",
        exporters=[f"jsonl:{path}"],
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
    )

    def records() -> list[dict[str, Any]]:
        _setup.flush(5.0)
        return read_jsonl(path)

    with _setup.scoped(config):
        yield records
    registry.reset()
