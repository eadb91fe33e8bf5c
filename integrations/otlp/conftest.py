"""rotel (OTLP/HTTP and gRPC) forwarding to Arize Phoenix, as .ci/backends/otlp.sh starts them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions
from obs_middleware._core.metrics import registry
from obs_middleware._pipeline import Exporter


@pytest.fixture
def otlp_peers() -> dict[str, str]:
    """rotel's OTLP/HTTP and gRPC URLs, Phoenix's URL, rotel's log: skip without, fail under CI."""
    names = ("OBS_OTLP_URL", "OBS_OTLP_GRPC_URL", "OBS_PHOENIX_URL", "OBS_ROTEL_LOG")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        reason = (
            f"{', '.join(missing)} not set: no rotel/Phoenix (run .ci/run or source "
            ".ci/backends/otlp.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return {n: os.environ[n] for n in names}


@contextmanager
def exporting_to(*exporters: Exporter, **options: object) -> Iterator[None]:
    """Configure ``exporters`` (real clock and ids) for a block; restore the previous setup."""
    registry.reset()
    pipeline = PipelineOptions(interval_s=0.05, flush_on_sigterm=False)
    config = _setup.build_config(exporters=list(exporters), pipeline=pipeline, **options)
    with _setup.scoped(config, shutdown_timeout=5.0):
        yield
