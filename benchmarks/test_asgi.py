"""Starlette request: bare vs obs-middleware vs OpenTelemetry vs dd-trace-py; the 4 µs gate."""

from __future__ import annotations

import statistics

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import ASGI_BUDGET_US, PLAN, RESULTS, Gate

pytestmark = pytest.mark.benchmark(
    group="asgi: Starlette request, CPU per request", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["asgi"][3])
def test_asgi_request(benchmark, config):
    _suite.table_run(benchmark, "asgi", config)


def test_gate_asgi_overhead_cpu():
    pairs = RESULTS.paired("asgi", PLAN.asgi_pairs)
    assert all(o.dropped == 0 and o.emitted_per_iter == 1 for _, o in pairs), (
        "not every request span was exported"
    )
    diffs = [(o.median - b.median) * 1e6 for b, o in pairs]
    over = statistics.median(diffs)
    gate = RESULTS.gate(
        Gate(
            "Starlette request overhead, CPU",
            over,
            ASGI_BUDGET_US,
            "us",
            f"median of {len(pairs)} interleaved bare/obs process-pair differences "
            f"({PLAN.pair_repeats} repeats each)",
            over <= ASGI_BUDGET_US,
        )
    )
    assert gate.passed, (
        f"obs-middleware adds {over:.2f} µs CPU per Starlette request "
        f"(budget {ASGI_BUDGET_US} µs); "
        f"pair differences: {[round(d, 2) for d in diffs]}. Hot spots: see the report."
    )


@pytest.mark.callgrind
def test_gate_asgi_overhead_instructions():
    o = _suite.instr_overhead("asgi")
    bare, over, bare_us = o.base, o.over, o.base_us
    # The µs budget in instructions, at the bare request's own instructions per µs of user CPU.
    budget = ASGI_BUDGET_US * bare / bare_us
    gate = RESULTS.gate(
        Gate(
            "Starlette request overhead, instructions",
            over,
            budget,
            "instr",
            f"callgrind slope; budget = {ASGI_BUDGET_US} µs x bare {bare:,.0f} instr / "
            f"{bare_us:.2f} µs user CPU ({o.base_cpu_us:.2f} µs with system time)",
            over <= budget,
        )
    )
    assert gate.passed, (
        f"obs-middleware adds {over:,.0f} instructions per Starlette request "
        f"(~{over / bare * bare_us:.2f} µs); budget {budget:,.0f} (= {ASGI_BUDGET_US} µs)"
    )


def test_hot_spots_asgi():
    rows = RESULTS.hot_spots("asgi")
    assert rows, "profile found no obs-middleware function"
