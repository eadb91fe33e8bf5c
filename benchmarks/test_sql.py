"""One SQLAlchemy query (SQLite, StaticPool): bare vs obs vs OpenTelemetry vs dd-trace-py; 2 µs."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS, SQL_BATCH
from _suite import RESULTS, SQL_BUDGET_US, Gate

pytestmark = pytest.mark.benchmark(
    group="sql: SQLAlchemy SELECT 1, CPU per query", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["sql"][3])
def test_sql_query(benchmark, config):
    m = _suite.table_run(benchmark, "sql", config)
    if config != "bare":  # the budget assumes every span exported: a drop would flatter it
        assert m.dropped == 0 and m.emitted_per_iter == SQL_BATCH + 1, (
            f"{config}: {m.emitted_per_iter} spans per root of {SQL_BATCH} queries, "
            f"{m.dropped} dropped"
        )


@pytest.mark.callgrind
def test_gate_sql_overhead_instructions():
    o = _suite.instr_overhead("sql")
    cpu = _suite.cpu_overhead_us("sql")
    gate = RESULTS.gate(
        Gate(
            "SQLAlchemy query overhead, instructions as µs",
            o.us,
            SQL_BUDGET_US,
            "us",
            f"callgrind slope per query, root span charged to its {SQL_BATCH} queries; "
            f"{o.how()}; CPU-time table difference {cpu:+.2f} µs",
            o.us <= SQL_BUDGET_US,
        )
    )
    assert gate.passed, (
        f"obs-middleware adds {o.over:,.0f} instructions (~{o.us:.2f} µs) per SQLAlchemy query "
        f"(budget {SQL_BUDGET_US} µs); CPU-time difference {cpu:+.2f} µs"
    )
