"""Column-store rows: records and finished spans as the shipped datasource's columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from obs_middleware._core import span as _span
from obs_middleware._json import decode_records, encode_records
from obs_middleware._record import Resource, to_records
from obs_middleware.exporters import _rows
from obs_middleware.exporters._rows import encode_rows, row, span_rows

from . import _identity
from ._finished import collected

RESOURCE = Resource("svc", "prod", "1.0")


def test_row_maps_the_record_to_columns_and_keeps_the_rest_as_json():
    record = {
        "type": "span",
        "name": "ai.request",
        "trace_id": "0" * 31 + "1",
        "span_id": "0" * 15 + "2",
        "parent_id": None,
        "start": "2026-01-01T00:00:00.001000Z",
        "duration_ms": 12.5,
        "status": "content_violation",
        "user_id": "u1",
        "span.kind": "client",
        "ai.model": "sdxl",
        "ai.input_tokens": 12,
        "ai.output_tokens": "many",  # wrong type: kept, but in attributes
        "http.status_code": True,  # a bool is not an Int64
        "cost.usd": 0.25,
        "custom": {"a": 1},
        "events": [{"name": "retry", "time": "2026-01-01T00:00:00.002000Z"}],
    }
    assert row(record) == {
        "type": "span",
        "name": "ai.request",
        "trace_id": "0" * 31 + "1",
        "span_id": "0" * 15 + "2",
        "start": "2026-01-01T00:00:00.001000Z",
        "duration_ms": 12.5,
        "status": "content_violation",
        "user_id": "u1",
        "span_kind": "client",
        "ai_model": "sdxl",
        "ai_input_tokens": 12,
        "cost_usd": 0.25,
        "attributes": '{"ai.output_tokens":"many","http.status_code":true,"custom":{"a":1},'
        '"events":[{"name":"retry","time":"2026-01-01T00:00:00.002000Z"}]}',
    }


_KEYS = st.sampled_from([*_rows._BY_KEY, "custom", "x'y\"z\\", "events", "attributes"])
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # past 64 bits too: orjson refuses those, the row takes them as text
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=2),
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=12))
def test_compiled_converters_equal_the_generic_conversion(record):
    assert row(record) == _rows._row(record)
    assert row(dict(record)) == _rows._row(record)  # again, through the cached converter


def test_unusual_shapes_take_the_generic_conversion():
    assert row({1: "x", "name": "n"}) == {"name": "n", "attributes": '{"1":"x"}'}
    wide = {f"k{i}": i for i in range(300)}
    assert orjson.loads(row(wide)["attributes"]) == wide


@pytest.fixture
def finished(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Spans finished in the test, in finish order (no pipeline)."""
    items: list[Any] = []
    monkeypatch.setattr(_span, "on_finish", items.append)
    yield items


def reference(items: list[Any]) -> list[dict[str, Any]]:
    """What the record path gives: ``row`` of each record."""
    return [row(rec) for rec in to_records(items, RESOURCE)]


def test_span_rows_equal_the_rows_of_the_records(finished: list[Any]) -> None:
    with _span.Span("GET /x", {"http.method": "GET", "http.route": "/x"}, "server") as root:
        root.local.user_id, root.local.tier, root.local.request_id = "u1", "pro", "r1"
        with _span.Span("ai.request", {"ai.model": "m", "ai.input_tokens": 3, "k": [1]}) as ai:
            ai.event("retry", attempt=2)
        with pytest.raises(ValueError), _span.Span("db", {"db.rows": 1 << 70}):
            raise ValueError("boom")
    rows = span_rows(finished, RESOURCE)
    assert rows == reference(finished)
    ai_row, db_row, root_row = rows
    assert root_row["span_kind"] == "server" and root_row["http_route"] == "/x"
    assert "parent_id" not in root_row and ai_row["parent_id"] == root_row["span_id"]
    assert orjson.loads(ai_row["attributes"])["events"][0]["attempt"] == 2
    assert db_row["error_type"] == "ValueError"
    assert orjson.loads(db_row["attributes"]) == {"db.rows": str(1 << 70)}  # past Int64: text


def test_events_and_odd_resources_take_the_record_path(finished: list[Any]) -> None:
    with _span.Span("s", {}) as parent:
        event = _span.Event("job.started", {"job.id": "j1"}, parent)
    items = [*finished, event]
    assert span_rows(items, RESOURCE) == reference(items)
    odd = Resource(7, "prod", None)  # type: ignore[arg-type]
    assert span_rows(items, odd) == [row(rec) for rec in to_records(items, odd)]


_SPAN_KEYS = st.sampled_from(
    [*_rows._BY_KEY, "custom", "x'y\"z\\", "events", "attributes", "span.kind"]
)
_ODD = st.one_of(st.none(), st.integers(0, 3), st.text(max_size=3))


@given(
    attrs=st.dictionaries(_SPAN_KEYS, _VALUES, max_size=10),
    name=_ODD,
    status=_ODD,
    kind=st.sampled_from(["internal", "server", "client", None, 3]),
    error=_ODD,
    local=st.tuples(_ODD, _ODD, _ODD),
    events=st.lists(st.dictionaries(st.text(max_size=2), _VALUES, max_size=2), max_size=2),
    child=st.booleans(),
)
def test_span_rows_equal_the_record_path_on_any_span(
    attrs: dict[str, Any],
    name: Any,
    status: Any,
    kind: Any,
    error: Any,
    local: tuple[Any, Any, Any],
    events: list[dict[str, Any]],
    child: bool,
) -> None:
    with collected() as items, _span.Span("root", {}) as root:
        span = _span.Span(name, dict(attrs), kind).start() if child else root
        span.status, span.error_type, span.error_message = status, error, error
        root.local.user_id, root.local.tier, root.local.request_id = local
        for fields in events:
            span.event("e", **fields)
        if child:
            span.end()
    assert span_rows(items, RESOURCE) == reference(items)
    assert span_rows(items, RESOURCE) == reference(items)  # again, through the cached converter


def test_encoding_is_one_line_per_row() -> None:
    rows = [{"name": "a"}, {"name": "b", "attributes": "{}"}]
    assert encode_rows(rows) == b'{"name":"a"}\n{"name":"b","attributes":"{}"}\n'


def test_rows_from_spans_and_from_records_carry_the_identity_and_stack_trace_columns() -> None:

    columns = {key.replace(".", "_"): value for key, value in _identity.identity().items()}
    spans = _identity.finished()
    records = _identity.records()
    for rows in (span_rows(spans, _identity.RESOURCE), [row(rec) for rec in records]):
        assert len(rows) == 2
        assert all(r.items() >= columns.items() for r in rows)
        assert _identity.stack_ok(rows[0]["exception_stacktrace"])


def test_a_log_event_is_a_row_with_its_trace_and_the_log_fields_in_attributes() -> None:
    fields = {
        "log.level": "ERROR",
        "log.logger": "app",
        "log.message": "giving up",
        "exception.type": "TimeoutError",
        "exception.stacktrace": "app.py:3 in render",
        "code.line.number": 3,
    }
    parent = _span.Span("request", {}).start()
    parent.deactivate()  # never ended: nothing is exported here
    event = _span.Event("log", fields, parent)
    (log_row,) = span_rows([event], RESOURCE)
    assert (log_row["type"], log_row["name"]) == ("event", "log")
    assert (log_row["trace_id"], log_row["span_id"]) == (parent.trace_hex, parent.span_hex)
    assert log_row["exception_stacktrace"] == "app.py:3 in render"  # the failed spans' column
    assert orjson.loads(log_row["attributes"]) == {
        "log.level": "ERROR",
        "log.logger": "app",
        "log.message": "giving up",
        "exception.type": "TimeoutError",
        "code.line.number": 3,
    }


def _lines(body: bytes) -> list[Any]:
    return [orjson.loads(line) for line in body.splitlines()]


@given(
    attrs=st.dictionaries(_SPAN_KEYS, _VALUES, max_size=10),
    name=_ODD,
    status=_ODD,
    local=st.tuples(_ODD, _ODD, _ODD),
    events=st.lists(st.dictionaries(st.text(max_size=2), _VALUES, max_size=2), max_size=2),
    worker=st.sampled_from(["w1", 'odd "worker"', "bad \ud800 text"]),
)
def test_packed_rows_encode_as_the_plain_rows_in_bodies_and_in_the_spool(
    attrs: dict[str, Any],
    name: Any,
    status: Any,
    local: tuple[Any, Any, Any],
    events: list[dict[str, Any]],
    worker: str,
) -> None:
    with collected() as items:
        with _span.Span("root", {"custom": "x"}) as root, _span.Span(name, dict(attrs)) as span:
            span.status = status
            root.local.user_id, root.local.tier, root.local.request_id = local
            for fields in events:
                span.event("e", **fields)
        items.append(_span.Event("job.started", {"job.id": "j1"}, root))
    resource = Resource("svc", "prod", "1.0", worker_id=worker)
    plain = span_rows(items, resource)
    packed = span_rows(items, resource, packed=True)
    assert _lines(encode_rows(packed)) == _lines(encode_rows(plain))
    # The spool stores what a batch's rows encode to: a replay in another process sends the
    # identity of the process that made them.
    assert decode_records(encode_records(packed)) == _lines(encode_rows(plain))


def test_packed_columns_write_the_shared_columns_after_the_type() -> None:
    fragment = _rows.packed_columns({"service": "s", "host_name": 'a"b'})
    assert orjson.dumps({"type": fragment, "name": "n"}) == (
        b'{"type":"span","service":"s","host_name":"a\\"b","name":"n"}'
    )


def test_attributes_text_is_cached_per_shape_and_bounded(
    finished: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rows, "_MAX_ATTRIBUTES", 3)
    cache = _rows._ATTRIBUTES
    cache.clear()
    values = ["a", "b", "a", "c", "d", "a", "x" * 600, 7]
    for value in values:
        with _span.Span("s", {"ai.model": "m", "custom": value}):
            pass
        with _span.Span("s", {"custom2": value}):  # another shape, the same values
            pass
    rows = span_rows(finished, RESOURCE, packed=True)
    assert all(type(r["type"]) is orjson.Fragment for r in rows)
    assert [orjson.loads(r["attributes"]) for r in rows] == [
        {key: value} for value in values for key in ("custom", "custom2")
    ]
    assert _lines(encode_rows(rows)) == reference(finished)
    assert 0 < len(cache) <= 3  # cleared when full; long texts and other types never kept
    assert all(len(text) <= _rows._MAX_CACHED_TEXT for text in cache.values())


def test_a_packed_row_with_text_orjson_refuses_takes_the_fallback_whole(
    finished: list[Any],
) -> None:
    with _span.Span("bad \ud800 name", {"custom": "x"}):
        pass
    with _span.Span("fine", {}):
        pass
    plain = span_rows(finished, RESOURCE)
    packed = span_rows(finished, RESOURCE, packed=True)
    assert type(packed[0]["type"]) is orjson.Fragment
    body = encode_rows(packed)  # the batch's second pass: each row through ``dumps_json``
    assert _lines(body) == _lines(encode_rows(plain))
    assert _lines(body)[0]["name"] == "bad \ufffd name"
    assert _lines(body)[0]["service_instance_id"] == plain[0]["service_instance_id"]
    assert decode_records(encode_records(packed)) == _lines(body)  # the spool's fallback too


def test_attributes_named_like_fixed_or_identity_columns_never_set_them(
    finished: list[Any],
) -> None:
    named = {"name": "x", "trace_id": "t", "service": "s", "service.version": "v", "status": "s"}
    for kind in ("client", "internal"):
        with _span.Span("real", {"http.route": "/r", **named, "custom": "c"}, kind):
            pass
        with _span.Span("real", {**named, "db.rows": 3}, kind):
            pass
    plain = span_rows(finished, RESOURCE)
    assert plain == reference(finished)
    assert {r["name"] for r in plain} == {"real"} and {r["service"] for r in plain} == {"svc"}
    packed = encode_rows(span_rows(finished, RESOURCE, packed=True))
    assert _lines(packed) == plain
    assert packed.count(b'"service":') == len(plain)  # one per row: no duplicate keys
