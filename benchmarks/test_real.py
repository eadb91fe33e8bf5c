"""Realistic request (5 SQLAlchemy queries + 50-item JSON) vs peers; the +2 % and +3 % gates."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS
from _suite import PLAN, REAL_BUDGET, REAL_SQL_BUDGET, RESULTS, Gate

pytestmark = pytest.mark.benchmark(
    group="real: realistic request, CPU per request", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["real"][3])
def test_real_request(benchmark, config):
    _suite.table_run(benchmark, "real", config)


def test_real_overhead_cpu_pairs():
    # Reported beside the instruction gate: ±2 % is within CPU-time noise on this machine.
    pairs = RESULTS.paired("real", PLAN.real_pairs)
    assert all(b.emitted_per_iter == 0 and o.emitted_per_iter >= 1 for b, o in pairs)
    assert all(o.dropped == 0 for _, o in pairs), "obs-middleware dropped records"


def test_hot_spots_real():
    rows = RESULTS.hot_spots("real")
    assert rows, "profile found no obs-middleware function"


def _real_gate(config: str, budget: float, name: str) -> Gate:
    counts = RESULTS.instruction_counts()
    full = counts[("real", config)]
    bare = counts[("real", "bare")].per_iter
    over = (full.per_iter - bare) / bare
    return RESULTS.gate(
        Gate(
            name,
            over * 100,
            budget * 100,
            "%",
            f"callgrind slope, {config} vs bare ({bare:,.0f} instr/request bare); "
            + "; ".join(full.notes or ["ObsMiddleware only"])
            + _suite.layouts_note(counts[("real", "bare")], full),
            over <= budget,
        )
    )


@pytest.mark.callgrind
def test_gate_real_middleware_only_instructions():
    gate = _real_gate(
        "obs-middleware-only", REAL_BUDGET, "Realistic request, ObsMiddleware only, instructions"
    )
    assert gate.passed, (
        f"ObsMiddleware adds {gate.value:.2f} % instructions to the realistic request "
        f"(budget {gate.budget:.0f} %)"
    )


@pytest.mark.callgrind
def test_gate_real_with_sqlalchemy_instructions():
    gate = _real_gate(
        "obs", REAL_SQL_BUDGET, "Realistic request, middleware + SQLAlchemy spans, instructions"
    )
    assert gate.passed, (
        f"ObsMiddleware + SQLAlchemy integration add {gate.value:.2f} % instructions to the "
        f"realistic request (budget {gate.budget:.0f} %)"
    )
