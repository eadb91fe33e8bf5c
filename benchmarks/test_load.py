"""Issue 15's gates under load: W2 and W1 behind uvicorn at saturation (``_load.py``, wrk).

bare, a second bare server (the A/A), obs-middleware at default settings and with every span
exported, OpenTelemetry and dd-trace-py, interleaved round by round; the peers are printed beside.
"""

from __future__ import annotations

import shutil

import pytest
from _gates import LOSS_BUDGETS, OVERHEAD, aa_loss
from _load import report
from _suite import RESULTS, Gate

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


@pytest.mark.gate
@pytest.mark.parametrize(("workload", "mode"), sorted(LOSS_BUDGETS))
def test_gate_load_loss(workload, mode):
    load = OVERHEAD.load_test(workload)
    loss, budget, aa = load.loss(mode), LOSS_BUDGETS[(workload, mode)], aa_loss(load)
    peers = ", ".join(f"{m} {load.loss(m):.1f} %" for m in ("otel", "ddtrace") if m in load.samples)
    gate = RESULTS.gate(
        Gate(
            f"{workload} under load, {mode}: throughput loss",
            loss,
            budget,
            "%",
            f"A/A (second bare server) {aa:+.1f} %; {load.server}, wrk -c{load.connections}, "
            f"{len(load.samples['bare'])} rounds x {load.duration_s:g} s, paired median; "
            f"peers: {peers}",
            loss <= budget,
        )
    )
    print("\n" + report(load))
    assert gate.passed, (
        f"{workload} {mode}: {loss:.1f} % of bare's throughput lost (budget {budget} %); "
        f"A/A {aa:+.1f} %; peers: {peers}"
    )
