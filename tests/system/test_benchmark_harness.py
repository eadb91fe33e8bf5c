"""The benchmark harness still runs: each workload's in-process A/B, one short round per mode.

Not a benchmark (no figure is judged here: timing stays out of ``tests/``). ``_ab.py`` checks on
every run that each side answers, that the instrumented side exports the same records request
after request, that ``uninstrument_all()`` restores every SDK attribute, and that a bare request
makes the same calls as before any instrumentation existed. Those checks are what a change to the
library can break without a test noticing (the runtime metrics' loop probe once did), and the CI
plan of the gates is not part of ``.ci/run`` yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    ("workload", "mode", "batch"),
    [("W1", "default", 4), ("W2", "default", 20), ("W2", "all", 20), ("W3", "default", 200)],
)
def test_the_ab_harness_validates_and_measures_each_workload(
    workload: str, mode: str, batch: int
) -> None:
    cmd = [sys.executable, "_ab.py", workload, "--mode", mode, "--rounds", "1"]
    proc = subprocess.run(
        [*cmd, "--batch", str(batch), "--json"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["workload"], result["mode"]) == (workload, mode)
    assert len(result["obs"]) == len(result["bare"]) == 1  # one round of each side
    assert any("calls before and after instrumenting" in n for n in result["notes"])
    if mode == "all":
        assert result["spans_per_request"] >= 1
