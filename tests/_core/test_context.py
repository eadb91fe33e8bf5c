"""One trace across await, tasks, threads and asgiref; W3C trace context and correlation ids."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from hypothesis import given, settings
from hypothesis import strategies as st

import obs_middleware as obs
from obs_middleware._core.context import (
    format_traceparent,
    parse_traceparent,
    parse_tracestate,
    valid_request_id,
)
from obs_middleware.testing import Capture, capture

# -- one trace across concurrency primitives -------------------------------------------------------


def assert_child_of(cap: Capture, child: str, parent: str) -> None:
    spans = {r["name"]: r for r in cap.spans}
    assert spans[child]["trace_id"] == spans[parent]["trace_id"]
    assert spans[child]["parent_id"] == spans[parent]["span_id"]


def work(name: str = "child") -> None:
    with obs.span(name):
        pass


async def awork(name: str = "child") -> None:
    await asyncio.sleep(0)
    async with obs.span(name):
        await asyncio.sleep(0)


async def test_nesting_across_await(obs_capture: Capture) -> None:
    async with obs.span("parent"):
        await awork()
    assert_child_of(obs_capture, "child", "parent")


async def test_nesting_across_asyncio_tasks(obs_capture: Capture) -> None:
    async with obs.span("parent"):
        await asyncio.gather(
            asyncio.create_task(awork("task-a")), asyncio.create_task(awork("task-b"))
        )
    assert_child_of(obs_capture, "task-a", "parent")
    assert_child_of(obs_capture, "task-b", "parent")


async def test_concurrent_tasks_do_not_nest_under_each_other(obs_capture: Capture) -> None:
    gate = asyncio.Event()

    async def holder() -> None:
        async with obs.span("holder"):
            await gate.wait()

    async def other() -> None:
        await asyncio.sleep(0)
        async with obs.span("other"):
            gate.set()

    async with obs.span("parent"):
        await asyncio.gather(holder(), other())
    assert_child_of(obs_capture, "holder", "parent")
    assert_child_of(obs_capture, "other", "parent")


def test_nesting_across_thread_started_with_copied_context(obs_capture: Capture) -> None:
    with obs.span("parent"):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(work,))
        t.start()
        t.join()
    assert_child_of(obs_capture, "child", "parent")


def test_thread_without_copied_context_starts_its_own_trace(obs_capture: Capture) -> None:
    with obs.span("parent"):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    spans = {r["name"]: r for r in obs_capture.spans}
    assert spans["child"]["parent_id"] is None
    assert spans["child"]["trace_id"] != spans["parent"]["trace_id"]


def test_nesting_across_executor_with_copied_context(obs_capture: Capture) -> None:
    with obs.span("parent"), ThreadPoolExecutor(2) as pool:
        pool.submit(contextvars.copy_context().run, work).result()
    assert_child_of(obs_capture, "child", "parent")


async def test_nesting_across_run_in_executor_with_copied_context(obs_capture: Capture) -> None:
    loop = asyncio.get_running_loop()
    async with obs.span("parent"):
        await loop.run_in_executor(None, contextvars.copy_context().run, work)
    assert_child_of(obs_capture, "child", "parent")


async def test_nesting_across_asyncio_to_thread(obs_capture: Capture) -> None:
    async with obs.span("parent"):
        await asyncio.to_thread(work)
    assert_child_of(obs_capture, "child", "parent")


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_nesting_across_asgiref_sync_to_async(
    obs_capture: Capture, thread_sensitive: bool
) -> None:
    async with obs.span("parent"):
        await sync_to_async(work, thread_sensitive=thread_sensitive)()
    assert_child_of(obs_capture, "child", "parent")


def test_nesting_across_asgiref_async_to_sync(obs_capture: Capture) -> None:
    with obs.span("parent"):
        async_to_sync(awork)()
    assert_child_of(obs_capture, "child", "parent")


async def test_nesting_through_sync_to_async_then_async_to_sync(obs_capture: Capture) -> None:
    def sync_view() -> None:
        with obs.span("view"):
            async_to_sync(awork)("query")

    async with obs.span("request"):
        await sync_to_async(sync_view)()
    assert_child_of(obs_capture, "view", "request")
    assert_child_of(obs_capture, "query", "view")


async def test_spans_of_one_trace_share_local_trace_across_threads(obs_capture: Capture) -> None:
    seen: list[object] = []

    def look() -> None:
        with obs.span("child") as s:
            seen.append(s.local)

    async with obs.span("parent") as parent:
        await asyncio.to_thread(look)
    assert seen == [parent.local]


# -- W3C traceparent / tracestate ------------------------------------------------------------------

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_traceparent_reads_ids_and_sampled_flag() -> None:
    parent = parse_traceparent(VALID)
    assert parent is not None
    assert parent.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert parent.span_id == 0x00F067AA0BA902B7
    assert parent.sampled is True
    assert parent.tracestate is None


def test_parse_traceparent_unsampled_flag() -> None:
    parent = parse_traceparent(VALID[:-2] + b"00")
    assert parent is not None and parent.sampled is False


def test_parse_traceparent_keeps_valid_tracestate() -> None:
    parent = parse_traceparent(VALID, b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7")
    assert parent is not None
    assert parent.tracestate == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_parse_traceparent_drops_invalid_tracestate_but_keeps_parent() -> None:
    parent = parse_traceparent(VALID, b"not a tracestate")
    assert parent is not None and parent.tracestate is None


def test_parse_traceparent_ignores_surrounding_whitespace() -> None:
    assert parse_traceparent(b" " + VALID + b"\t") is not None


def test_parse_traceparent_accepts_future_version_with_extra_fields() -> None:
    parent = parse_traceparent(b"cc" + VALID[2:] + b"-what-the-future-holds")
    assert parent is not None and parent.span_id == 0x00F067AA0BA902B7


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"garbage",
        VALID.upper(),  # hex must be lowercase
        b"ff" + VALID[2:],  # version ff is forbidden
        VALID + b"-extra",  # version 00 has no trailing fields
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",  # short flags
        VALID + b" " * 300,  # oversized
        b"\xff" * 55,
    ],
)
def test_parse_traceparent_rejects_malformed_values(value: bytes | None) -> None:
    assert parse_traceparent(value) is None


@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    sampled=st.booleans(),
)
@settings(database=None)
def test_traceparent_round_trips_through_parse_and_format(
    trace_id: int, span_id: int, sampled: bool
) -> None:
    value = format_traceparent(trace_id, span_id, sampled)
    parent = parse_traceparent(value.encode())
    assert parent is not None
    assert format_traceparent(parent.trace_id, parent.span_id, parent.sampled) == value


def test_format_traceparent_pads_ids() -> None:
    assert (
        format_traceparent(1, 2, False) == "00-00000000000000000000000000000001-0000000000000002-00"
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b",,,",
        b"UPPER=1",
        b"k=v=x",
        b"k=" + b"v" * 600,
        b",".join(b"k%d=v" % i for i in range(33)),
    ],
)
def test_parse_tracestate_rejects_invalid_values(value: bytes | None) -> None:
    assert parse_tracestate(value) is None


def test_parse_tracestate_accepts_multi_tenant_keys() -> None:
    assert parse_tracestate(b"tenant@vendor=abc") == "tenant@vendor=abc"


@given(st.binary(max_size=1024))
@settings(database=None)
def test_parsers_never_raise_on_arbitrary_bytes(value: bytes) -> None:
    parse_traceparent(value, value)
    parse_tracestate(value)
    valid_request_id(value)


# -- correlation ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"abc-123", b"req_9f8e.7:x+y/z=@w", b"a" * 128])
def test_valid_request_id_is_echoed(value: bytes) -> None:
    assert valid_request_id(value) == value.decode()


@pytest.mark.parametrize(
    "value", [None, b"", b"a" * 129, b"has space", b"semi;colon", b"\xe9t\xe9"]
)
def test_invalid_request_id_is_rejected(value: bytes | None) -> None:
    assert valid_request_id(value) is None


# -- inject / extract: the public carrier API ------------------------------------------------------


def test_inject_then_extract_continues_the_trace_in_a_job() -> None:
    with capture() as cap:
        with obs.span("enqueue"):
            carrier = obs.inject({"job_id": "j-1"})
        with obs.job("j-1", service_type="render", context=obs.extract(carrier)):
            pass
        enqueue, job_span = cap.span("enqueue"), cap.span("job render")
    assert carrier["job_id"] == "j-1"
    assert carrier["traceparent"] == f"00-{enqueue['trace_id']}-{enqueue['span_id']}-01"
    assert job_span["trace_id"] == enqueue["trace_id"]
    assert job_span["parent_id"] == enqueue["span_id"]


def test_inject_outside_any_span_leaves_the_carrier_unchanged() -> None:
    carrier: dict[str, object] = {"a": 1}
    assert obs.inject(carrier) is carrier
    assert carrier == {"a": 1}


def test_inject_carries_the_incoming_tracestate_and_unsampled_flag() -> None:
    remote = obs.extract({"traceparent": format_traceparent(0xA, 0xB, False), "tracestate": "k=v"})
    with capture(), obs.job("j", service_type="t", context=remote) as j:
        carrier = obs.inject({})
        span_id = j.span.span_id
    assert carrier == {
        "traceparent": format_traceparent(0xA, span_id, False),
        "tracestate": "k=v",
    }


@pytest.mark.parametrize(
    ("carrier", "expected"),
    [
        ({"Traceparent": b"00-" + b"0" * 31 + b"a-" + b"0" * 15 + b"b-01"}, (0xA, 0xB, True)),
        ({"TRACEPARENT": "00-" + "0" * 31 + "a-" + "0" * 15 + "b-00"}, (0xA, 0xB, False)),
        ({}, None),
        (None, None),
        ({"traceparent": "garbage"}, None),
        ({"traceparent": "00-" + "0" * 32 + "-" + "0" * 15 + "b-01"}, None),  # zero trace id
        ({"traceparent": "00-" + "0" * 31 + "a-" + "0" * 15 + "b-01\u00e9"}, None),
        ({"traceparent": 17}, None),
        (
            {
                "traceparent": "00-" + "0" * 31 + "a-" + "0" * 15 + "b-01",
                "Traceparent": "00-" + "0" * 31 + "c-" + "0" * 15 + "b-01",
            },
            None,
        ),
    ],
)
def test_extract_reads_any_casing_and_never_raises(
    carrier: dict[str, object] | None, expected: tuple[int, int, bool] | None
) -> None:
    remote = obs.extract(carrier)
    got = None if remote is None else (remote.trace_id, remote.span_id, remote.sampled)
    assert got == expected


def test_context_wins_over_a_traceparent_string() -> None:
    remote = obs.extract({"traceparent": format_traceparent(0x1, 0x2, True)})
    with capture() as cap:
        with obs.job(
            "j", service_type="t", context=remote, traceparent=format_traceparent(0x3, 0x4, True)
        ):
            pass
        span = cap.span("job t")
    assert span["trace_id"] == f"{0x1:032x}"
