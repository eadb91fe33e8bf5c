"""Export throughput on one core: finished spans -> the bytes sent; 300,000 spans/s gates.

Each path runs in its own worker processes (``_harness.py throughput export PATH``), on the calling
thread only: the stages drive the pipeline's own drain loop and the exporter directly, so
``time.thread_time`` is the export worker's CPU. Gated (issue 15): jsonl, Tinybird, ClickHouse and
OTLP (as sent: protobuf bytes handed to its HTTP client); OTLP is skipped without the ``[otlp]``
extra.
"""

from __future__ import annotations

import statistics

import _suite
import pytest
from _scenarios import EXPORT_PATHS, EXPORT_STAGES
from _suite import EXPORT_BUDGET, PLAN, RESULTS, Gate

pytestmark = pytest.mark.benchmark(
    group="export: spans -> encoded bytes on one core, CPU per span", timer=_suite.REPLAY.clock
)

GATED = ("jsonl", "tinybird", "clickhouse", "otlp")


@pytest.mark.parametrize(
    ("path", "stage"), [(p, s) for p, (_, stages) in EXPORT_PATHS.items() for s in stages]
)
def test_export_throughput(benchmark, path, stage):
    runs = RESULTS.export_runs(path)
    if runs[0].skipped:
        pytest.skip(runs[0].skipped)
    rates = _suite.export_rates(path, stage)
    benchmark.pedantic(_suite.REPLAY.step, rounds=_suite.REPLAY.load([1 / r for r in rates]))
    benchmark.extra_info.update(
        path=EXPORT_PATHS[path][0],
        stage=EXPORT_STAGES[stage],
        spans_per_s_median=statistics.median(rates),
        spans_per_round=runs[0].spans,
        notes=runs[0].notes,
    )


@pytest.mark.gate
@pytest.mark.parametrize("path", GATED)
def test_gate_export_throughput(path):
    runs = RESULTS.export_runs(path)
    if runs[0].skipped:
        pytest.skip(runs[0].skipped)
    rates = _suite.export_rates(path, "full")
    value = statistics.median(rates)
    gate = RESULTS.gate(
        Gate(
            f"{path} export path, spans/s on one core (at least)",
            value,
            EXPORT_BUDGET,
            "spans/s",
            f"median of {len(rates)} rounds in {len(runs)} processes, thread CPU time; "
            f"{EXPORT_STAGES['full']}; {EXPORT_PATHS[path][0]}",
            value >= EXPORT_BUDGET,
        )
    )
    assert gate.passed, (
        f"{path}: {value:,.0f} spans/s from finished spans to encoded bytes "
        f"(budget: at least {EXPORT_BUDGET:,.0f}); per process: "
        f"{[round(r.median('full')) for r in runs]}; "
        f"{PLAN.export_rounds} rounds each; the other stages in the report split the cost."
    )
