"""OpenAI SDK chat completion against the loopback emulator: bare vs obs vs ddtrace (diagnostic)."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import PLAN, RESULTS

pytestmark = pytest.mark.benchmark(
    group="ai: openai chat.completions.create, CPU per call", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["ai"][3])
def test_ai_call(benchmark, config):
    _suite.table_run(benchmark, "ai", config)


def test_ai_overhead_cpu_pairs():
    # Subprocess pairs, reported: the W1 gates in test_overhead.py judge the call in a request.
    pairs = RESULTS.paired("ai", PLAN.ai_pairs)
    assert all(b.emitted_per_iter == 0 and o.emitted_per_iter == 1 for b, o in pairs), (
        "not every call span was exported"
    )
    assert all(o.dropped == 0 for _, o in pairs), "obs-middleware dropped records"
