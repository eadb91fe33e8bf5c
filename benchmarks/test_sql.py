"""One SQLAlchemy query (SQLite, StaticPool): bare vs obs vs OTel vs dd-trace-py (diagnostic)."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS, SQL_BATCH

pytestmark = pytest.mark.benchmark(
    group="sql: SQLAlchemy SELECT 1, CPU per query", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["sql"][3])
def test_sql_query(benchmark, config):
    m = _suite.table_run(benchmark, "sql", config)
    if config != "bare":  # every span exported: a drop would flatter the figure
        assert m.dropped == 0 and m.emitted_per_iter == SQL_BATCH + 1, (
            f"{config}: {m.emitted_per_iter} spans per root of {SQL_BATCH} queries, "
            f"{m.dropped} dropped"
        )
