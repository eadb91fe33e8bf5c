"""The disk spool: survives a restart, capped in size, a torn frame, two processes sharing it."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence

import pytest

from obs_middleware._core.metrics import registry
from obs_middleware._delivery import Delivery, DeliveryOptions, Outcome, Result
from obs_middleware._spool import Spool

from ._scripted import RETRY, Backend, metric, recs, spooled


@pytest.fixture(autouse=True)
def _reset_metrics():
    registry.reset()
    yield
    registry.reset()


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
