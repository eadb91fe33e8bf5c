"""Metrics: counters, in-flight gauges, callback gauges and the registry; exact under threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from obs_middleware._core import internal
from obs_middleware._core.metrics import (
    Balance,
    Registry,
    dropped,
    registry,
)


@pytest.fixture
def reg() -> Registry:
    return Registry()


def run_threads(n: int, fn: Callable[[], None]) -> None:
    barrier = threading.Barrier(n)

    def body() -> None:
        barrier.wait()
        fn()

    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_counter_sums_per_label_set(reg: Registry) -> None:
    c = reg.counter("jobs", ("state",))
    c.add(("ok",))
    c.add(("ok",), 2)
    c.add(("failed",))
    assert reg.snapshot()["jobs"].points == {("ok",): 3, ("failed",): 1}


def test_registering_twice_returns_the_same_metric(reg: Registry) -> None:
    assert reg.counter("x", ("a",)) is reg.counter("x", ("a",))


def test_registering_a_name_with_another_shape_raises(reg: Registry) -> None:
    reg.counter("x", ("a",))
    with pytest.raises(ValueError, match="another shape"):
        reg.counter("x", ("b",))
    with pytest.raises(ValueError, match="another shape"):
        reg.histogram("x", ("a",))


def test_count_view_exposes_histogram_count_as_counter(reg: Registry) -> None:
    h = reg.histogram("dur", ("m",))
    reg.count_view("requests", h, "requests")
    h.record(("GET",), 1.0)
    h.record(("GET",), 2.0)
    snap = reg.snapshot()["requests"]
    assert (snap.kind, snap.points) == ("counter", {("GET",): 2})


def test_in_flight_goes_up_and_down(reg: Registry) -> None:
    g = reg.in_flight("active", ("m",))
    leave = g.enter(("GET",))
    g.enter(("GET",))
    next(leave)
    assert reg.snapshot()["active"].points == {("GET",): 1.0}


def test_reset_forgets_values_and_keeps_metrics(reg: Registry) -> None:
    c = reg.counter("c", ())
    c.add(())
    reg.reset()
    assert reg.snapshot()["c"].points == {}
    c.add(())
    assert reg.snapshot()["c"].points == {(): 1}


def test_builtin_metrics_are_registered() -> None:
    snap = registry.snapshot()
    assert snap["http.server.duration"].label_names == (
        "http.method",
        "http.route",
        "http.status_class",
    )
    assert snap["http.server.requests"].kind == "counter"
    assert snap["http.server.active"].kind == "updown"
    assert snap["obs.dropped"].label_names == ("reason",)


def test_counter_is_exact_under_many_threads(reg: Registry) -> None:
    c = reg.counter("c", ("k",))
    run_threads(8, lambda: [c.add(("k",)) for _ in range(5_000)])
    assert reg.snapshot()["c"].points == {("k",): 40_000}


def test_in_flight_is_exact_under_many_threads(reg: Registry) -> None:
    g = reg.in_flight("g", ("k",))

    def churn() -> None:
        for i in range(5_000):
            next(g.enter((str(i % 3),)))

    run_threads(8, churn)
    assert reg.snapshot()["g"].points == {("0",): 0.0, ("1",): 0.0, ("2",): 0.0}


# -- series cap ------------------------------------------------------------------------------------


@pytest.fixture
def overflow_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internal, "_warned", set())  # each test sees its warning once
    dropped.reset()


def test_counter_folds_new_label_sets_beyond_its_cap_into_other(
    reg: Registry, overflow_log: None, caplog: pytest.LogCaptureFixture
) -> None:
    c = reg.counter("calls", ("model", "status"))
    c.max_series = 3
    for i in range(10):
        c.add((f"m{i}", "ok"))
    c.add(("m0", "ok"), 5)  # a kept label set goes on counting where it is
    assert c.snapshot().points == {
        ("m0", "ok"): 6,
        ("m1", "ok"): 1,
        ("m2", "ok"): 1,
        ("_OTHER", "_OTHER"): 7,
    }
    assert dropped.snapshot().points == {("series_limit:calls",): 7}
    assert [r.getMessage() for r in caplog.records] == [
        "obs-middleware: metric 'calls' has 3 label sets; new ones are counted under '_OTHER'"
    ]


def test_in_flight_folds_new_label_sets_beyond_its_cap_into_other(
    reg: Registry, overflow_log: None
) -> None:
    g = reg.in_flight("active", ("method",))
    g.max_series = 1
    leave = [g.enter((m,)) for m in ("GET", "M1", "M2")]
    assert g.snapshot().points == {("GET",): 1.0, ("_OTHER",): 2.0}
    for done in leave:
        next(done)
    assert g.snapshot().points == {("GET",): 0.0, ("_OTHER",): 0.0}
    assert dropped.snapshot().points == {("series_limit:active",): 2}


def test_the_dropped_counter_caps_itself_without_recursing(
    overflow_log: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dropped, "max_series", 1)
    for reason in ("a", "b", "c"):
        dropped.add((reason,))
    assert dropped.snapshot().points == {("a",): 1, ("_OTHER",): 2}
    dropped.reset()


def test_a_client_controlled_label_keeps_memory_bounded(reg: Registry, overflow_log: None) -> None:
    h = reg.histogram("http.server.duration", ("http.route",))
    for i in range(3 * h.max_series):
        h.record((f"/raw/path/{i}",), 1.0)
    assert len(h.rows()) == h.max_series + 1


def test_tally_counts_without_labels_and_resets(reg: Registry) -> None:
    tally = reg.tally("t", "1", "a tally")
    assert reg.tally("t") is tally
    assert tally.snapshot().points == {(): 0.0}
    for _ in range(3):
        tally.inc()
    snap = tally.snapshot()
    assert (snap.kind, snap.points) == ("counter", {(): 3.0})
    tally.reset()
    assert tally.snapshot().points == {(): 0.0}


def test_tally_is_exact_under_many_threads(reg: Registry) -> None:
    tally = reg.tally("t")
    threads = [
        threading.Thread(target=lambda: [tally.inc() for _ in range(10_000)]) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tally.snapshot().points == {(): 80_000.0}


def test_balance_counts_up_and_down_exactly_under_many_threads() -> None:
    balance = Balance()
    assert balance.value == 0

    def churn() -> None:
        for _ in range(10_000):
            next(balance.up)
            next(balance.down)
        next(balance.up)

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert balance.value == 8
    next(balance.down)
    assert balance.value == 7


def test_a_callback_can_be_read_as_a_counter_or_updown_and_a_metric_removed():
    reg = Registry()
    reg.gauge("cpu", ("mode",), lambda: {("user",): 1.5}, "s", kind="counter")
    reg.gauge("rss", (), lambda: {(): 10.0}, "By", kind="updown")
    snap = reg.snapshot()
    assert (snap["cpu"].kind, snap["cpu"].points) == ("counter", {("user",): 1.5})
    assert snap["rss"].kind == "updown"
    assert reg.snapshot()["rss"].points == {(): 10.0}
    reg.remove("cpu")
    reg.remove("absent")
    assert set(reg.snapshot()) == {"rss"}
