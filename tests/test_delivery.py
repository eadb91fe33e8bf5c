"""Delivery: retry/backoff, breaker, bisection, spooling in order, stopping, self-metrics."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import pytest

from obs_middleware._core.metrics import registry
from obs_middleware._delivery import (
    AUTO_SPOOL,
    EXPORTING,
    Breaker,
    Delivery,
    DeliveryOptions,
    Outcome,
    Result,
    classify_status,
    default_spool_root,
    stop_waiting,
)
from obs_middleware._spool import Spool

from ._scripted import RETRY, Backend, metric, recs, spooled

FAST = DeliveryOptions(
    timeout_s=1.0,
    max_attempts=3,
    retry_budget_s=1.0,
    backoff_s=0.001,
    backoff_max_s=0.002,
    spool_dir=None,  # these tests are about what happens without one
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _reset_metrics():
    registry.reset()
    yield
    registry.reset()


def test_classify_status_maps_http_answers():
    assert classify_status(200).outcome is Outcome.OK
    assert classify_status(202).outcome is Outcome.OK
    assert classify_status(413).outcome is Outcome.TOO_LARGE
    assert classify_status(429, "3").retry_after == 3.0
    assert classify_status(503).outcome is Outcome.RETRY
    assert classify_status(408).outcome is Outcome.RETRY
    assert classify_status(400).outcome is Outcome.REJECTED
    assert classify_status(401).outcome is Outcome.REJECTED
    assert classify_status(429, "Wed, 21 Oct 2015 07:28:00 GMT").retry_after is None


def test_breaker_opens_after_n_failures_and_probes_once_after_cooldown():
    clock = Clock()
    breaker = Breaker(3, 5.0, clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == Breaker.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == Breaker.OPEN and not breaker.allow()
    clock.now += 5.0
    assert breaker.allow() and breaker.state == Breaker.HALF_OPEN
    breaker.failure()  # the probe failed: open again for a full cooldown
    assert breaker.state == Breaker.OPEN and not breaker.allow()
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == Breaker.CLOSED and breaker.failures == 0


def test_breaker_holds_requests_for_retry_after():
    clock = Clock()
    breaker = Breaker(5, 1.0, clock)
    breaker.failure(retry_after=2.0)
    assert not breaker.allow()
    clock.now += 2.0
    assert breaker.allow()


def test_transient_failures_are_retried_then_delivered_and_counted():
    backend = Backend(RETRY, RETRY)
    delivery = Delivery("t", backend, FAST)
    delivery.deliver(recs(0, 5))
    assert backend.received == [0, 1, 2, 3, 4]
    assert backend.calls == 3
    assert backend.exporting == [True, True, True]
    assert metric("obs.exporter.retries") == {("t",): 2}
    assert metric("obs.exporter.exported") == {("t",): 5}
    assert metric("obs.dropped") == {}
    assert EXPORTING.get() is False


def test_retries_exhausted_without_spool_drops_and_counts():
    backend = Backend(RETRY, RETRY, RETRY)
    delivery = Delivery("t", backend, FAST)
    delivery.deliver(recs(0, 4))
    assert backend.received == []
    assert metric("obs.dropped") == {("retries_exhausted:t",): 4}


def test_open_breaker_fails_fast_and_counts_drops_by_reason():
    clock = Clock()
    options = DeliveryOptions(
        max_attempts=1, breaker_failures=2, breaker_cooldown_s=10, spool_dir=None
    )
    backend = Backend(*([RETRY] * 10))
    delivery = Delivery("brk", backend, options, clock=clock)
    delivery.deliver(recs(0, 1))
    delivery.deliver(recs(1, 1))
    assert delivery.breaker.state == Breaker.OPEN
    calls = backend.calls
    delivery.deliver(recs(2, 3))
    assert backend.calls == calls  # no request while open
    assert metric("obs.dropped") == {("retries_exhausted:brk",): 1, ("breaker_open:brk",): 4}
    assert metric("obs.exporter.breaker_state")[("brk",)] == 2.0
    clock.now += 10
    backend.script.clear()
    delivery.deliver(recs(5, 2))  # half-open probe succeeds
    assert backend.received == [5, 6]
    assert metric("obs.exporter.breaker_state")[("brk",)] == 0.0


def test_retry_after_is_honoured_within_the_budget():
    backend = Backend(Result(Outcome.RETRY, 0.05, "HTTP 429"))
    delivery = Delivery("t", backend, FAST)
    delivery.deliver(recs(0, 2))
    assert backend.received == [0, 1]
    backend.script.append(Result(Outcome.RETRY, 30.0, "HTTP 429"))
    delivery.deliver(recs(2, 2))  # 30 s is beyond the budget: give up now, not in 30 s
    assert metric("obs.dropped") == {("retries_exhausted:t",): 2}


def test_oversized_batch_is_bisected_and_a_single_oversized_record_dropped():
    backend = Backend(max_records=3)
    delivery = Delivery("t", backend, FAST)
    delivery.deliver(recs(0, 10))
    assert sorted(backend.received) == list(range(10))

    def send(records: Sequence[dict], timeout: float) -> Result:
        if any(r.get("huge") for r in records):
            return classify_status(413)
        backend.received.extend(r["i"] for r in records)
        return Result(Outcome.OK)

    backend.received.clear()
    delivery = Delivery("b", send, FAST)
    batch = recs(0, 8)
    batch[5]["huge"] = True
    delivery.deliver(batch)
    assert sorted(backend.received) == [0, 1, 2, 3, 4, 6, 7]
    assert metric("obs.dropped") == {("too_large:b",): 1}


def test_rejected_batch_is_not_retried():
    backend = Backend(Result(Outcome.REJECTED, None, "HTTP 400"))
    delivery = Delivery("t", backend, FAST)
    delivery.deliver(recs(0, 3))
    assert backend.calls == 1
    assert metric("obs.dropped") == {("rejected:t",): 3}


def test_an_exporter_bug_is_dropped_and_counted_not_retried():
    calls = []

    def send(records: Sequence[dict], timeout: float) -> Result:
        calls.append(1)
        raise TypeError("cannot encode")

    delivery = Delivery("t", send, FAST)
    delivery.deliver(recs(0, 2))
    assert len(calls) == 1
    assert metric("obs.dropped") == {("exporter_error:t",): 2}


def test_transport_errors_are_transient():
    script = [ConnectionRefusedError(), TimeoutError(), ConnectionResetError()]
    got: list[int] = []

    def send(records: Sequence[dict], timeout: float) -> Result:
        if script:
            raise script.pop(0)
        got.extend(r["i"] for r in records)
        return Result(Outcome.OK)

    delivery = Delivery("t", send, DeliveryOptions(max_attempts=4, backoff_s=0.001, spool_dir=None))
    delivery.deliver(recs(0, 2))
    assert got == [0, 1]


def test_spool_keeps_failed_batches_and_replays_them_in_order_exactly_once(tmp_path):
    backend = Backend(*([RETRY] * 3))
    delivery = Delivery("t", backend, spooled(tmp_path))
    delivery.deliver(recs(0, 3))  # fails: spooled
    delivery.deliver(recs(3, 3))  # spool not empty: queued behind, replay fails again
    assert backend.received == []
    assert metric("obs.exporter.spool_bytes")[("t",)] > 0
    delivery.deliver(recs(6, 3))  # replay fails (last scripted failure), then...
    delivery.deliver(recs(9, 3))  # ...the backend is back: everything, in order
    assert backend.received == list(range(12))
    assert metric("obs.dropped") == {}
    # Only this delivery's series: exporters of earlier tests, not yet collected, have spools too.
    assert metric("obs.exporter.spool_bytes")[("t",)] == 0.0
    assert not [n for n in os.listdir(tmp_path) if not n.startswith(".")]


def test_a_long_outage_appends_to_one_segment_instead_of_one_per_probe(tmp_path):
    backend = Backend(*([RETRY] * 20))
    delivery = Delivery("t", backend, spooled(tmp_path))  # cooldown 0: every batch probes
    for i in range(8):
        delivery.deliver(recs(i * 3, 3))
    assert backend.calls == 8  # one probe per batch, each with the oldest batch
    segments = [n for n in os.listdir(tmp_path) if n.endswith((".seg", ".open"))]
    assert len(segments) == 2, segments  # the first probe's sealed segment + the open one
    delivery.flush()
    assert backend.received == []  # still down (12 scripted failures left)
    backend.script.clear()
    delivery.deliver(recs(24, 3))
    assert backend.received == list(range(27))
    assert not [n for n in os.listdir(tmp_path) if not n.startswith(".")]


def test_flush_replays_the_spool(tmp_path):
    backend = Backend(RETRY)
    delivery = Delivery("t", backend, spooled(tmp_path))
    delivery.deliver(recs(0, 5))
    assert backend.received == []
    delivery.flush()
    assert backend.received == [0, 1, 2, 3, 4]


class Stuck:
    """A ``send`` that hangs until interrupted (a request on a hung backend), then fails."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.cut = threading.Event()
        self.calls = 0

    def __call__(self, records: Sequence[dict], timeout: float) -> Result:
        self.calls += 1
        self.entered.set()
        if not self.cut.wait(30):
            raise AssertionError("never interrupted")
        raise ConnectionResetError("cut")


def deliver_in_worker(delivery: Delivery, records: list[dict]) -> threading.Thread:
    thread = threading.Thread(target=delivery.deliver, args=(records,), daemon=True)
    thread.start()
    return thread


def test_stop_waiting_cuts_the_request_in_flight_and_spools_it_and_what_follows(tmp_path):
    send = Stuck()
    delivery = Delivery("t", send, DeliveryOptions(spool_dir=str(tmp_path)), interrupt=send.cut.set)
    worker = deliver_in_worker(delivery, recs(0, 3))
    assert send.entered.wait(10)
    stop_waiting()
    worker.join(10)
    assert not worker.is_alive()
    delivery.deliver(recs(3, 2))  # after the stop: straight to disk, no request
    delivery.close()
    assert send.calls == 1
    assert metric("obs.dropped") == {}
    spool, found = Spool(str(tmp_path), 1 << 20, 1.0), []
    for batch in spool.batches():
        found.extend(r["i"] for r in batch)
        spool.ack()
    assert found == [0, 1, 2, 3, 4]


def test_stop_waiting_lets_a_request_being_answered_finish_rather_than_duplicate_it(tmp_path):
    entered, cut = threading.Event(), threading.Event()
    received: list[int] = []

    def send(records: Sequence[dict], timeout: float) -> Result:
        entered.set()
        time.sleep(0.1)  # a healthy backend answering
        received.extend(r["i"] for r in records)
        return Result(Outcome.OK)

    delivery = Delivery("t", send, DeliveryOptions(spool_dir=str(tmp_path)), interrupt=cut.set)
    worker = deliver_in_worker(delivery, recs(0, 3))
    assert entered.wait(10)
    stop_waiting()  # waits for the answer: cut, the batch would be delivered and spooled
    worker.join(10)
    assert not cut.is_set()
    assert received == [0, 1, 2]
    assert not Spool(str(tmp_path), 1 << 20, 1.0).has_data()


def test_stop_waiting_without_spool_counts_the_batch_in_flight_as_shutdown():
    send = Stuck()
    delivery = Delivery("t", send, DeliveryOptions(spool_dir=None), interrupt=send.cut.set)
    worker = deliver_in_worker(delivery, recs(0, 3))
    assert send.entered.wait(10)
    stop_waiting()
    worker.join(10)
    delivery.deliver(recs(3, 2))  # the backend failed at exit: no second attempt
    assert send.calls == 1
    assert metric("obs.dropped") == {("shutdown:t",): 5}


def test_stop_waiting_wakes_a_retry_backoff():
    backend = Backend(*([Result(Outcome.RETRY, 3.0, "HTTP 503")] * 5))  # Retry-After: 3 s
    options = DeliveryOptions(retry_budget_s=30, breaker_failures=10, spool_dir=None)
    delivery = Delivery("t", backend, options)
    worker = deliver_in_worker(delivery, recs(0, 2))
    deadline = time.monotonic() + 10
    while not metric("obs.exporter.retries") and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker now sleeps before its retry
    started = time.monotonic()
    stop_waiting()
    worker.join(10)
    assert time.monotonic() - started < 2.0  # not the 3 s Retry-After
    assert backend.calls == 1
    assert metric("obs.dropped") == {("shutdown:t",): 2}


def test_from_env_gives_each_exporter_its_own_spool(tmp_path):
    env = {"OBS_SPOOL_DIR": str(tmp_path), "OBS_EXPORT_TIMEOUT_S": "2", "OBS_SPOOL_MAX_BYTES": "5"}
    options = DeliveryOptions.from_env("tinybird", env)
    assert options.spool_dir == os.path.join(str(tmp_path), "tinybird")
    assert (options.timeout_s, options.spool_max_bytes) == (2.0, 5)
    assert DeliveryOptions.from_env("x", {}).spool_dir == AUTO_SPOOL  # on by default
    for off in ("off", "none", "OFF"):
        assert DeliveryOptions.from_env("x", {"OBS_SPOOL_DIR": off}).spool_dir is None
    with pytest.warns(UserWarning, match="OBS_EXPORT_TIMEOUT_S"):
        assert DeliveryOptions.from_env("x", {"OBS_EXPORT_TIMEOUT_S": "-1"}).timeout_s == 5.0
    with pytest.warns(UserWarning, match="OBS_SPOOL_MAX_BYTES"):
        DeliveryOptions.from_env("x", {"OBS_SPOOL_MAX_BYTES": "lots"})


def test_invalid_options_are_refused():
    with pytest.raises(ValueError):
        DeliveryOptions(timeout_s=0)
    with pytest.raises(ValueError):
        DeliveryOptions(max_attempts=0)


# -- the spool is on by default -------------------------------------------------------------------


def test_by_default_undeliverable_batches_wait_in_a_spool_under_the_state_directory(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    backend = Backend(RETRY)  # down once, then up
    delivery = Delivery("t", backend, DeliveryOptions(max_attempts=1), destination="a")
    delivery.deliver(recs(0, 3))
    assert metric("obs.dropped") == {}
    assert backend.received == []
    assert delivery.spool is not None
    assert delivery.spool.directory.startswith(str(tmp_path / "state" / "obs-middleware" / "spool"))
    delivery.flush()
    assert backend.received == [0, 1, 2]
    delivery.close()


def test_default_spools_are_shared_per_destination_and_never_across(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    options = DeliveryOptions()
    one = Delivery("tinybird", Backend(), options, destination="https://h\nAuthorization:A")
    same = Delivery("tinybird", Backend(), options, destination="https://h\nAuthorization:A")
    other = Delivery("tinybird", Backend(), options, destination="https://h\nAuthorization:B")
    assert one.spool is not None and same.spool is not None and other.spool is not None
    assert one.spool.directory == same.spool.directory != other.spool.directory
    assert "Authorization" not in one.spool.directory  # the destination is hashed, not written
    for d in (one, same, other):
        d.close()


def test_the_state_directory_unusable_falls_back_to_a_private_temp_folder(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where a directory should be: makedirs fails
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    root = default_spool_root()
    assert root == str(tmp_path / "tmp" / f"obs-middleware-{os.getuid()}" / "spool")
    assert os.stat(os.path.dirname(root)).st_mode & 0o077 == 0


def test_a_temp_folder_owned_by_another_user_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.warns(UserWarning, match="OBS_SPOOL_DIR"):
        delivery = Delivery("t", Backend(), DeliveryOptions())
    assert delivery.spool is None
    assert default_spool_root() is None
