"""A nested span with 3 attributes: floor vs obs.span vs OTel vs dd-trace-py (diagnostic)."""

from __future__ import annotations

import _suite
import pytest
from _scenarios import SCENARIOS, SPAN_CHILDREN
from _suite import RESULTS

pytestmark = pytest.mark.benchmark(
    group="span: nested child + 3 attributes, CPU per span", timer=_suite.REPLAY.clock
)


@pytest.mark.parametrize("config", SCENARIOS["span"][3])
def test_span(benchmark, config):
    m = _suite.table_run(benchmark, "span", config)
    if config == "obs":  # every span exported: a drop would flatter the figure
        assert m.dropped == 0 and m.emitted_per_iter == SPAN_CHILDREN + 1, (
            f"not every span was exported: {m.emitted_per_iter} per root, {m.dropped} dropped"
        )


@pytest.mark.callgrind
def test_span_instructions():
    counts = RESULTS.instruction_counts()
    if ("span", "floor") not in counts:
        pytest.skip("the quick plan counts instructions for the gates only")
    floor = counts[("span", "floor")].per_iter
    full = counts[("span", "obs")].per_iter
    hot = counts[("span", "obs-noexport")].per_iter
    assert floor < hot < full, "instruction counts out of order: the measurement is broken"


def test_hot_spots_span():
    rows = RESULTS.hot_spots("span")
    assert rows, "profile found no obs-middleware function"
