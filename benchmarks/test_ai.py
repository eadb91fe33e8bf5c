"""OpenAI SDK chat completion against the loopback emulator: bare vs obs vs dd-trace-py; 15 µs."""

from __future__ import annotations

import statistics

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import AI_BUDGET_US, PLAN, RESULTS, Gate

pytestmark = pytest.mark.benchmark(
    group="ai: openai chat.completions.create, CPU per call", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["ai"][3])
def test_ai_call(benchmark, config):
    _suite.table_run(benchmark, "ai", config)


def test_ai_overhead_cpu_pairs():
    # Reported beside the instruction gate: 15 µs is ~1 % of a ~1 ms call, below CPU-time noise.
    pairs = RESULTS.paired("ai", PLAN.ai_pairs)
    assert all(b.emitted_per_iter == 0 and o.emitted_per_iter == 1 for b, o in pairs), (
        "not every call span was exported"
    )
    assert all(o.dropped == 0 for _, o in pairs), "obs-middleware dropped records"


@pytest.mark.callgrind
def test_gate_ai_overhead_instructions():
    o = _suite.instr_overhead("ai")
    pairs = RESULTS.pairs.get("ai")
    cpu = (
        f"CPU median of {len(pairs)} interleaved pairs "
        f"{statistics.median((x.median - b.median) * 1e6 for b, x in pairs):+.1f} µs"
        if pairs
        else f"CPU-time table difference {_suite.cpu_overhead_us('ai'):+.1f} µs"
    )
    gate = RESULTS.gate(
        Gate(
            "OpenAI call overhead, instructions as µs",
            o.us,
            AI_BUDGET_US,
            "us",
            f"callgrind slope per call (emulator in another process, not counted); {o.how()}; "
            f"{cpu}",
            o.us <= AI_BUDGET_US,
        )
    )
    assert gate.passed, (
        f"obs-middleware adds {o.over:,.0f} instructions (~{o.us:.1f} µs) per OpenAI call "
        f"(budget {AI_BUDGET_US} µs); {cpu}"
    )
