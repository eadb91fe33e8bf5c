"""Starlette request (W3): bare vs obs-middleware vs OpenTelemetry vs dd-trace-py (diagnostic)."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import PLAN, RESULTS

pytestmark = pytest.mark.benchmark(
    group="asgi: Starlette request, CPU per request", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["asgi"][3])
def test_asgi_request(benchmark, config):
    _suite.table_run(benchmark, "asgi", config)


def test_asgi_overhead_cpu_pairs():
    # A diagnostic since issue 15 (the W3 gate in test_overhead.py judges this request in-process).
    pairs = RESULTS.paired("asgi", PLAN.asgi_pairs)
    assert all(o.dropped == 0 and o.emitted_per_iter == 1 for _, o in pairs), (
        "not every request span was exported"
    )


def test_hot_spots_asgi():
    rows = RESULTS.hot_spots("asgi")
    assert rows, "profile found no obs-middleware function"
