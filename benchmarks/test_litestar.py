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
    # The difference is converted at Litestar's rate, where it runs. Converting each overhead at
    # its own app's rate would charge the ~75k instructions both share twice, at two rates that
    # differ by the apps' own mix (their bare requests run at different instructions per µs).
    lite = _suite.instr_overhead("litestar")
    star = _suite.instr_overhead("asgi")
    extra = lite.over - star.over
    value = extra * lite.base_us / lite.base
    cpu = _suite.cpu_overhead_us("litestar") - _suite.cpu_overhead_us("asgi")
    gate = RESULTS.gate(
        Gate(
            "Litestar obs overhead - Starlette obs overhead, instructions as µs",
            value,
            LITESTAR_BUDGET_US,
            "us",
            f"callgrind slopes: {extra:+,.0f} instr at Litestar's bare rate; Litestar "
            f"{lite.us:.2f} µs ({lite.how()}), Starlette {star.us:.2f} µs ({star.how()}); "
            f"CPU-time table differences give {cpu:+.2f} µs",
            value <= LITESTAR_BUDGET_US,
        )
    )
    assert gate.passed, (
        f"ObsPlugin on Litestar costs {value:.2f} µs more than ObsMiddleware on Starlette "
        f"(Litestar {lite.us:.2f} µs, Starlette {star.us:.2f} µs; budget {LITESTAR_BUDGET_US} µs)"
    )
