"""Realistic request (W2: 5 SQLAlchemy queries + 50-item JSON) vs peers (diagnostic)."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import PLAN, RESULTS

pytestmark = pytest.mark.benchmark(
    group="real: realistic request, CPU per request", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["real"][3])
def test_real_request(benchmark, config):
    _suite.table_run(benchmark, "real", config)


def test_real_overhead_cpu_pairs():
    # Subprocess pairs, reported: the W2 gates in test_overhead.py judge this request in-process.
    pairs = RESULTS.paired("real", PLAN.real_pairs)
    assert all(b.emitted_per_iter == 0 and o.emitted_per_iter >= 1 for b, o in pairs)
    assert all(o.dropped == 0 for _, o in pairs), "obs-middleware dropped records"


def test_hot_spots_real():
    rows = RESULTS.hot_spots("real")
    assert rows, "profile found no obs-middleware function"
