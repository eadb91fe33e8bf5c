"""Delivery: retry/backoff, breaker, bisection, spool (incl. two processes), self-metrics."""

from __future__ import annotations

import dataclasses
import enum
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence

import orjson
import pytest

from obs_middleware._core.metrics import registry
from obs_middleware._delivery import (
    EXPORTING,
    Breaker,
    Delivery,
    DeliveryOptions,
    Outcome,
    Result,
    classify_status,
    stop_waiting,
)
from obs_middleware._json import dumps_json, encode_records, valid_text
from obs_middleware._spool import Spool

FAST = DeliveryOptions(
    timeout_s=1.0, max_attempts=3, retry_budget_s=1.0, backoff_s=0.001, backoff_max_s=0.002
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """A scripted ``send``: answers from ``script`` (then OK), records what got through."""

    def __init__(self, *script: Result, max_records: int | None = None) -> None:
        self.script = list(script)
        self.max_records = max_records
        self.received: list[int] = []
        self.calls = 0
        self.exporting: list[bool] = []

    def __call__(self, records: Sequence[dict], timeout: float) -> Result:
        self.calls += 1
        self.exporting.append(EXPORTING.get())
        if self.max_records is not None and len(records) > self.max_records:
            return classify_status(413)
        if self.script:
            result = self.script.pop(0)
            if result.outcome is not Outcome.OK:
                return result
        self.received.extend(r["i"] for r in records)
        return Result(Outcome.OK)


def recs(start: int, n: int) -> list[dict]:
    return [{"i": i, "name": "x"} for i in range(start, start + n)]


def metric(name: str) -> dict:
    return dict(registry.snapshot()[name].points)


@pytest.fixture(autouse=True)
def _reset_metrics():
    registry.reset()
    yield
    registry.reset()


RETRY = Result(Outcome.RETRY, None, "HTTP 503")


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
    options = DeliveryOptions(max_attempts=1, breaker_failures=2, breaker_cooldown_s=10)
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

    delivery = Delivery("t", send, DeliveryOptions(max_attempts=4, backoff_s=0.001))
    delivery.deliver(recs(0, 2))
    assert got == [0, 1]


def spooled(tmp_path, **kw) -> DeliveryOptions:
    return DeliveryOptions(
        max_attempts=1, breaker_failures=1, breaker_cooldown_s=0, spool_dir=str(tmp_path), **kw
    )


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
    assert metric("obs.exporter.spool_bytes") == {("t",): 0.0}
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
    delivery = Delivery("t", send, DeliveryOptions(), interrupt=send.cut.set)
    worker = deliver_in_worker(delivery, recs(0, 3))
    assert send.entered.wait(10)
    stop_waiting()
    worker.join(10)
    delivery.deliver(recs(3, 2))  # the backend failed at exit: no second attempt
    assert send.calls == 1
    assert metric("obs.dropped") == {("shutdown:t",): 5}


def test_stop_waiting_wakes_a_retry_backoff():
    backend = Backend(*([Result(Outcome.RETRY, 3.0, "HTTP 503")] * 5))  # Retry-After: 3 s
    options = DeliveryOptions(retry_budget_s=30, breaker_failures=10)
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


def test_spool_survives_a_restart(tmp_path):
    first = Delivery("t", Backend(RETRY), spooled(tmp_path))
    first.deliver(recs(0, 4))
    first.close()
    backend = Backend()
    second = Delivery("t", backend, spooled(tmp_path))
    second.flush()
    assert backend.received == [0, 1, 2, 3]


def test_spool_is_size_capped_and_counts_what_it_refuses(tmp_path):
    backend = Backend(*([RETRY] * 50))
    delivery = Delivery("t", backend, spooled(tmp_path, spool_max_bytes=300))
    for i in range(10):
        delivery.deliver(recs(i * 3, 3))
    refused = metric("obs.dropped")[("spool_full:t",)]
    assert 0 < refused < 30
    assert Spool(str(tmp_path), 300, 1.0).bytes <= 300
    backend.script.clear()
    delivery.flush()
    assert len(backend.received) + refused == 30
    assert len(set(backend.received)) == len(backend.received)


def test_a_torn_frame_stops_the_replay_of_its_segment_only(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20, 1.0)
    spool.append(recs(0, 2))
    spool.append(recs(2, 2))
    path = spool._path
    spool.seal()
    seg = path[: -len(".open")] + ".seg"
    with open(seg, "r+b") as f:
        f.truncate(os.path.getsize(seg) - 3)
    got = []
    for batch in spool.batches():
        got.extend(r["i"] for r in batch)
        spool.ack()
    assert got == [0, 1]


def _process_writer(directory: str, start: int, out: str, fail: bool) -> None:
    received: list[int] = []

    def send(records: Sequence[dict], timeout: float) -> Result:
        if fail:
            return Result(Outcome.RETRY, None, "down")
        received.extend(r["i"] for r in records)
        return Result(Outcome.OK)

    options = DeliveryOptions(
        max_attempts=1, breaker_failures=1, breaker_cooldown_s=0, spool_dir=directory
    )
    delivery = Delivery("t", send, options)
    for i in range(start, start + 200, 10):
        delivery.deliver(recs(i, 10))
    delivery.flush()
    delivery.close()
    with open(out, "w") as f:
        f.write(",".join(map(str, received)))


def test_two_processes_sharing_a_spool_deliver_every_record_exactly_once(tmp_path):
    spool_dir = str(tmp_path / "spool")
    ctx = multiprocessing.get_context("fork")
    # Both spool while their backend is down...
    down = [
        ctx.Process(target=_process_writer, args=(spool_dir, s, os.devnull, True))
        for s in (0, 1000)
    ]
    for p in down:
        p.start()
    for p in down:
        p.join(30)
    # ...then both replay the shared directory concurrently while writing more.
    outs = [str(tmp_path / f"out{i}") for i in range(2)]
    up = [
        ctx.Process(target=_process_writer, args=(spool_dir, s, out, False))
        for s, out in ((2000, outs[0]), (3000, outs[1]))
    ]
    for p in up:
        p.start()
    for p in up:
        p.join(30)
    assert all(p.exitcode == 0 for p in down + up)
    got: list[int] = []
    for out in outs:
        with open(out) as f:
            text = f.read()
        got.extend(int(x) for x in text.split(",") if x)
    expected = [i for s in (0, 1000, 2000, 3000) for i in range(s, s + 200)]
    assert sorted(got) == expected  # nothing lost, nothing twice


def test_from_env_gives_each_exporter_its_own_spool(tmp_path):
    env = {"OBS_SPOOL_DIR": str(tmp_path), "OBS_EXPORT_TIMEOUT_S": "2", "OBS_SPOOL_MAX_BYTES": "5"}
    options = DeliveryOptions.from_env("tinybird", env)
    assert options.spool_dir == os.path.join(str(tmp_path), "tinybird")
    assert (options.timeout_s, options.spool_max_bytes) == (2.0, 5)
    assert DeliveryOptions.from_env("x", {}).spool_dir is None
    with pytest.warns(UserWarning, match="OBS_EXPORT_TIMEOUT_S"):
        assert DeliveryOptions.from_env("x", {"OBS_EXPORT_TIMEOUT_S": "-1"}).timeout_s == 5.0
    with pytest.warns(UserWarning, match="OBS_SPOOL_MAX_BYTES"):
        DeliveryOptions.from_env("x", {"OBS_SPOOL_MAX_BYTES": "lots"})


def test_invalid_options_are_refused():
    with pytest.raises(ValueError):
        DeliveryOptions(timeout_s=0)
    with pytest.raises(ValueError):
        DeliveryOptions(max_attempts=0)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_encoding_never_fails_on_what_orjson_refuses() -> None:
    cyclic: dict[str, object] = {"n": 1}
    cyclic["self"] = cyclic
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    records = [
        {"big": 1 << 70, "neg": -(1 << 64), "u64": (1 << 64) - 1, "keys": {1 << 65: "k"}},
        {"cyclic": cyclic, "deep": deep, "odd": Unprintable()},
    ]
    first, second = (orjson.loads(line) for line in encode_records(records).splitlines())
    assert first == {
        "big": str(1 << 70),
        "neg": str(-(1 << 64)),
        "u64": (1 << 64) - 1,
        "keys": {str(1 << 65): "k"},
    }
    assert second["cyclic"]["n"] == 1 and isinstance(second["cyclic"]["self"]["self"], dict)
    assert second["odd"] == "<unprintable Unprintable>"


BAD = os.fsdecode(b"scan-\xff.tif")  # "scan-\udcff.tif": a name os.listdir() returns as is


def test_valid_text_replaces_lone_surrogates_and_joins_pairs() -> None:
    assert valid_text("plain é") == "plain é"
    assert valid_text(BAD) == "scan-\ufffd.tif"
    assert valid_text("\ud83d\ude00 \ud83d") == "\U0001f600 \ufffd"


@dataclasses.dataclass
class Upload:
    name: str


class Kind(enum.Enum):
    BAD = BAD


class Named:
    def __str__(self) -> str:
        return BAD


def test_one_record_with_lone_surrogates_anywhere_costs_nothing_else() -> None:
    records = [
        {"n": 0, "file": "a.tif"},
        {
            "n": 1,
            "file": BAD,
            BAD: [BAD, {BAD: (BAD, 1 << 70)}],
            "objects": [Named(), {BAD}],
            "native": [Upload(BAD), Kind.BAD],
        },
        {"n": 2, "file": "b.tif"},
    ]
    decoded = [orjson.loads(line) for line in encode_records(records).splitlines()]
    good = "scan-\ufffd.tif"
    assert decoded == [
        {"n": 0, "file": "a.tif"},
        {
            "n": 1,
            "file": good,
            good: [good, {good: [good, str(1 << 70)]}],
            "objects": [good, [good]],
            "native": [str(Upload(BAD)), str(Kind.BAD)],  # repr() escapes the surrogate
        },
        {"n": 2, "file": "b.tif"},
    ]


def test_dumps_json_replaces_lone_surrogates_also_in_what_default_returns() -> None:
    out = dumps_json({"k": Named()}, orjson.OPT_NON_STR_KEYS, default=str)
    assert orjson.loads(out) == {"k": "scan-\ufffd.tif"}
