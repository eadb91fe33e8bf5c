"""LocalTrace: what one trace's spans share, and how it lets go of its root."""

from __future__ import annotations

import gc

import obs_middleware as obs
from obs_middleware.testing import Capture


def test_a_trace_leaves_no_garbage_cycle_once_its_root_ended(obs_capture: Capture) -> None:
    """The root and its LocalTrace point at each other only while the root runs, so a request's
    spans are freed by reference counting, never left to the cyclic garbage collector (which a
    bare app need not run at all)."""
    gc.collect()
    gc.disable()
    try:
        with obs.span("a") as a:
            with obs.span("b") as b:
                pass
            local = a.local
            assert local.root is a and local.root_id == a.span_id
        assert local.root is None and local.root_attrs is a.attrs
        assert a.is_root and not b.is_root  # still known after the end
        del a, b, local
        obs.flush()
        assert len(obs_capture.spans) == 2
        assert gc.collect() == 0
    finally:
        gc.enable()
