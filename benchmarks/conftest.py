"""``make bench``: obs-middleware against bare, OpenTelemetry and dd-trace-py, with budget gates.

Every measurement runs in its own subprocess (see ``_harness.py``, ``_ab.py``, ``_load.py``); this
process only orchestrates, feeds pytest-benchmark, asserts the gates and prints the side-by-side
report at the end. ``OBS_BENCH_QUICK=1`` runs a much shorter plan for iteration (figures too noisy
to judge gates); ``make bench-ci`` runs the tests marked ``gate`` with ``OBS_BENCH_PLAN=ci``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gates
import _suite


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "callgrind: judged on valgrind instruction counts (slow, deterministic)"
    )
    config.addinivalue_line("markers", "gate: a budget of issue 15 (what make bench-ci runs)")


def pytest_collection_modifyitems(items: list[Any]) -> None:
    # Instruction counts last: every CPU timing runs first, on a machine valgrind is not loading.
    items.sort(key=lambda item: item.get_closest_marker("callgrind") is not None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    results = _suite.RESULTS
    overhead = _gates.OVERHEAD
    if not (
        results.measurements
        or results.instructions
        or results.throughput
        or overhead.ab
        or overhead.load
    ):
        return
    text = _suite.report(_gates.report())
    path = _suite.save(text)
    _gates.save(path.parent)
    terminalreporter.write_sep("=", "obs-middleware benchmarks (side by side)")
    for line in text.splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(report saved to {path.relative_to(path.parent.parent)})")
