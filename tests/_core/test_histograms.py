"""Histograms: buckets, percentiles, views, lock-free series folded exactly (also under threads),
the overflow series beyond the cap."""

from __future__ import annotations

import pytest

from obs_middleware._core import histograms, internal
from obs_middleware._core.metrics import (
    DURATION_BUCKETS_MS,
    OVERFLOW,
    HistogramPoint,
    Registry,
    dropped,
)

from .test_metrics import run_threads


@pytest.fixture
def reg() -> Registry:
    return Registry()


@pytest.fixture
def overflow_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internal, "_warned", set())  # each test sees its warning once
    dropped.reset()


def test_histogram_buckets_sum_and_count(reg: Registry) -> None:
    h = reg.histogram("lat", ("route",), bounds=(1, 2, 5))
    for v in (0.5, 1, 1.5, 2, 4, 100):
        h.record(("/a",), v)
    point = reg.snapshot()["lat"].points[("/a",)]
    assert point == HistogramPoint((1, 2, 5), (2, 2, 1, 1), 109.0, 6)


def test_histogram_percentiles_interpolate_within_a_bucket() -> None:
    point = HistogramPoint((1, 2, 5), (0, 10, 0, 0), 15.0, 10)
    assert point.percentile(50) == pytest.approx(1.5)
    assert point.percentile(100) == pytest.approx(2.0)
    assert point.percentile(0) == pytest.approx(1.0)


def test_histogram_percentiles_across_buckets(reg: Registry) -> None:
    h = reg.histogram("lat", (), bounds=DURATION_BUCKETS_MS)
    for _ in range(90):
        h.record((), 3)  # bucket (2, 5]
    for _ in range(10):
        h.record((), 700)  # bucket (500, 1000]
    point = reg.snapshot()["lat"].points[()]
    assert isinstance(point, HistogramPoint)
    assert 2 < point.percentile(50) <= 5
    assert 2 < point.percentile(90) <= 5
    assert 500 < point.percentile(99) <= 1000


def test_histogram_percentile_of_overflow_bucket_and_empty() -> None:
    assert HistogramPoint((1, 2), (0, 0, 4), 40.0, 4).percentile(50) == pytest.approx(3.0)
    assert HistogramPoint((1, 2), (0, 0, 0), 0.0, 0).percentile(50) == 0.0


def test_histogram_view_regroups_the_observations_when_read(reg: Registry) -> None:
    h = reg.histogram("dur", ("method", "route", "class"), bounds=(1, 2, 5))
    names = {("GET", "/a"): ("read_a",), ("POST", "/a"): ("write_a",)}
    view = reg.histogram_view("proc", ("procedure",), h, lambda k: names.get(k[:2]), "by proc")
    reg.count_view("proc.calls", view)
    for labels, value in [
        (("GET", "/a", "2xx"), 0.5),
        (("GET", "/a", "5xx"), 3.0),
        (("POST", "/a", "2xx"), 1.5),
        (("GET", "/b", "2xx"), 9.0),  # no procedure: left out
    ]:
        h.record(labels, value)
    snap = reg.snapshot()
    assert (snap["proc"].kind, snap["proc"].unit, snap["proc"].label_names) == (
        "histogram", "ms", ("procedure",),
    )  # fmt: skip
    assert snap["proc"].points == {
        ("read_a",): HistogramPoint((1, 2, 5), (1, 0, 1, 0), 3.5, 2),
        ("write_a",): HistogramPoint((1, 2, 5), (0, 1, 0, 0), 1.5, 1),
    }
    assert snap["proc.calls"].points == {("read_a",): 2, ("write_a",): 1}
    reg.reset()
    assert reg.snapshot()["proc"].points == {}


def test_histogram_is_exact_under_many_threads(reg: Registry) -> None:
    h = reg.histogram("h", ("k",))
    reg.count_view("n", h)
    run_threads(8, lambda: [h.record(("k",), 1.0) for _ in range(5_000)])
    point = reg.snapshot()["h"].points[("k",)]
    assert isinstance(point, HistogramPoint)
    assert (point.count, point.sum, sum(point.counts)) == (40_000, 40_000.0, 40_000)
    assert reg.snapshot()["n"].points == {("k",): 40_000}


def test_histogram_folds_new_label_sets_beyond_its_cap_into_other(
    reg: Registry, overflow_log: None
) -> None:
    h = reg.histogram("latency", ("route",))
    h.max_series = 2
    for i in range(6):
        h.record((f"/raw/{i}",), 1.0)
    h.record(("/raw/0",), 3.0)
    counts = {k: p.count for k, p in h.snapshot().points.items()}  # type: ignore[union-attr]
    assert counts == {("/raw/0",): 2, ("/raw/1",): 1, ("_OTHER",): 4}
    assert dropped.snapshot().points == {("series_limit:latency",): 4}


def test_histogram_folds_long_queues_on_the_recording_thread_exactly(reg: Registry) -> None:
    h = reg.histogram("h", ("k",), bounds=(1.0, 10.0))
    values = [0.5, 5.0, 50.0] * (histograms.FOLD_AT + 1)  # several folds per label set
    for v in values:
        h.record(("a",), v)
        h.record(("b",), v * 2)
    rows = h.rows()
    n = len(values) // 3
    assert rows[("a",)] == [n, n, n, sum(values), len(values)]
    assert rows[("b",)] == [n, n, n, 2 * sum(values), len(values)]


def test_a_kept_series_records_like_record_and_stays_valid_across_reset(reg: Registry) -> None:
    h = reg.histogram("h", ("k",), bounds=(1.0,))
    series = h.series(("a",))
    assert h.series(("a",)) is series and series.labels == ("a",)
    assert h.rows() == {}  # a series asked for but never recorded shows no point
    series.append(0.5)
    h.record(("a",), 2.0)
    assert h.rows() == {("a",): [1, 1, 2.5, 2]}
    h.reset()
    assert h.rows() == {}
    series.append(0.5)  # the handle still records after a reset (metrics reset after fork)
    assert h.rows() == {("a",): [1, 0, 0.5, 1]}


def test_beyond_the_cap_a_series_is_the_overflow_one_and_says_so(
    reg: Registry, overflow_log: None
) -> None:
    h = reg.histogram("h", ("k",))
    h.max_series = 1
    assert h.series(("a",)).labels == ("a",)
    assert h.series(("b",)).labels == (OVERFLOW,)


def test_try_fold_never_waits_for_the_lock():
    hist = Registry().histogram("h", ())
    series = hist.series(())
    series.extend([1.0, 2.0])
    with hist._lock:
        series.try_fold()  # would deadlock with fold(): the lock is held (by this thread)
        assert len(series) == 2
    series.try_fold()
    assert (len(series), series.row[-1]) == (0, 2)
