"""Litestar request: bare vs ObsPlugin vs OpenTelemetryPlugin; Litestar - Starlette ≤ 1 µs."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import LITESTAR_BUDGET_US, RESULTS, Gate

pytestmark = pytest.mark.benchmark(
    group="litestar: Litestar request, CPU per request", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["litestar"][3])
def test_litestar_request(benchmark, config):
    m = _suite.table_run(benchmark, "litestar", config)
    if config == "obs":
        assert m.dropped == 0 and m.emitted_per_iter == 1, "not every request span was exported"


@pytest.mark.callgrind
def test_gate_litestar_minus_starlette_instructions():
    lite = _suite.instr_overhead("litestar")
    star = _suite.instr_overhead("asgi")
    value = lite.us - star.us
    cpu = _suite.cpu_overhead_us("litestar") - _suite.cpu_overhead_us("asgi")
    gate = RESULTS.gate(
        Gate(
            "Litestar obs overhead - Starlette obs overhead, instructions as µs",
            value,
            LITESTAR_BUDGET_US,
            "us",
            f"callgrind slopes, each at its bare app's rate: Litestar {lite.us:.2f} µs "
            f"({lite.how()}), Starlette {star.us:.2f} µs ({star.how()}); CPU-time table "
            f"differences give {cpu:+.2f} µs",
            value <= LITESTAR_BUDGET_US,
        )
    )
    assert gate.passed, (
        f"ObsPlugin on Litestar costs {value:.2f} µs more than ObsMiddleware on Starlette "
        f"(Litestar {lite.us:.2f} µs, Starlette {star.us:.2f} µs; budget {LITESTAR_BUDGET_US} µs)"
    )
