"""The Prometheus server .ci/backends/prometheus.sh starts, and promtool."""

from __future__ import annotations

import os
import shutil

import pytest


def need(value: str | None, reason: str) -> str:
    """``value``, else skip with ``reason`` (fail under ``CI=true``: the server must be there)."""
    if not value:
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return value


@pytest.fixture
def prometheus_url() -> str:
    return need(
        os.environ.get("OBS_PROMETHEUS_URL"),
        "OBS_PROMETHEUS_URL is not set: no Prometheus (run .ci/run or source "
        ".ci/backends/prometheus.sh)",
    )


@pytest.fixture
def promtool() -> str:
    return need(shutil.which("promtool"), "promtool is not installed (apt-get install prometheus)")
