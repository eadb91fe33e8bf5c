"""Issue 15's gates on whole requests, in CPU time: W1 AI, W2 CRUD, W3 hello (``_ab.py``).

Each gate is the median of several in-process A/B runs (one process each) and prints the A/A of
the same runs; a gate whose A/A is beyond ±0.3 % fails as unresolved, whatever its figure.
"""

from __future__ import annotations

import pytest
from _gates import AA_LIMIT, DIAGNOSTICS, OVERHEAD, PCT_BUDGETS, PLAN, US_BUDGETS
from _suite import RESULTS, Gate


def _judge(workload: str, mode: str, value: float, budget: float, unit: str) -> None:
    s = OVERHEAD.summary(workload, mode)
    first = s.runs[0]
    resolved = abs(s.aa_pct) <= AA_LIMIT
    RESULTS.gate(
        Gate(
            f"{workload} {mode}: overhead per request, CPU",
            value,
            budget,
            unit,
            f"A/A {s.aa_pct:+.2f} % ({'resolved' if resolved else 'UNRESOLVED'}: limit "
            f"±{AA_LIMIT} %); median of {len(s.runs)} in-process A/B runs x {first.rounds} "
            f"rounds x {first.batch} requests; bare {s.base_us:,.1f} µs, overhead "
            f"{s.overhead_pct:+.2f} % ({s.overhead_us:+.1f} µs)",
            value <= budget and resolved,
        )
    )
    print(f"\n{s.describe()}")
    assert value <= budget, (
        f"{workload} {mode}: obs-middleware adds {value:+.2f} {unit} per request (budget "
        f"{budget} {unit}); A/A {s.aa_pct:+.2f} %; {s.describe()}"
    )
    assert resolved, (
        f"{workload} {mode}: the A/A reads {s.aa_pct:+.2f} %, beyond ±{AA_LIMIT} %: this run "
        f"cannot resolve the budget (a busy machine?); {s.describe()}"
    )


@pytest.mark.gate
@pytest.mark.parametrize(("workload", "mode"), sorted(PCT_BUDGETS))
def test_gate_overhead_pct(workload, mode):
    s = OVERHEAD.summary(workload, mode)
    _judge(workload, mode, s.overhead_pct, PCT_BUDGETS[(workload, mode)], "%")


@pytest.mark.gate
@pytest.mark.parametrize(("workload", "mode"), sorted(US_BUDGETS))
def test_gate_overhead_us(workload, mode):
    s = OVERHEAD.summary(workload, mode)
    _judge(workload, mode, s.overhead_us, US_BUDGETS[(workload, mode)], "us")


@pytest.mark.parametrize(("workload", "mode"), DIAGNOSTICS)
def test_overhead_diagnostic(workload, mode):
    # Where the overhead goes (reported, not gated): one run each, full plan only.
    if not PLAN.diagnostics:
        pytest.skip(f"the {PLAN.name} plan runs the gates only")
    s = OVERHEAD.summary(workload, mode, runs=1)
    print(f"\n{s.describe()}")
