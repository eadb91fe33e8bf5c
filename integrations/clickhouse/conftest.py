"""The ClickHouse server .ci/backends/clickhouse.sh starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions
from obs_middleware._core.metrics import registry
from obs_middleware._pipeline import Exporter


@pytest.fixture
def clickhouse_url() -> str:
    """``http://127.0.0.1:port``: skip without it, fail under ``CI=true``."""
    url = os.environ.get("OBS_CLICKHOUSE_URL")
    if not url:
        reason = (
            "OBS_CLICKHOUSE_URL is not set: no ClickHouse server (run .ci/run or source "
            ".ci/backends/clickhouse.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return url


@contextmanager
def exporting_to(*exporters: Exporter, **configure_kw: Any) -> Iterator[None]:
    """Configure ``exporters`` (real clock and ids; more ``configure`` options) for a block;
    restore the previous setup."""
    registry.reset()
    options = PipelineOptions(interval_s=0.05, flush_on_sigterm=False)
    config = _setup.build_config(exporters=list(exporters), pipeline=options, **configure_kw)
    with _setup.scoped(config, shutdown_timeout=5.0):
        yield
