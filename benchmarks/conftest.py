"""``make bench``: obs-middleware against bare, OpenTelemetry and dd-trace-py, with budget gates.

Every measurement runs in its own subprocess (see ``_harness.py``); this process only orchestrates,
feeds pytest-benchmark, asserts the gates and prints the side-by-side report at the end.
``OBS_BENCH_QUICK=1`` runs a much shorter plan for iteration (figures too noisy to judge gates).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _suite


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "callgrind: judged on valgrind instruction counts (slow, deterministic)"
    )


def pytest_collection_modifyitems(items: list[Any]) -> None:
    # Instruction counts last: every CPU timing runs first, on a machine valgrind is not loading.
    items.sort(key=lambda item: item.get_closest_marker("callgrind") is not None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    results = _suite.RESULTS
    if not (results.measurements or results.instructions or results.throughput):
        return
    text = _suite.report()
    path = _suite.save(text)
    terminalreporter.write_sep("=", "obs-middleware benchmarks (side by side)")
    for line in text.splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(report saved to {path.relative_to(path.parent.parent)})")
