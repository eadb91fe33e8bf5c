"""OTLP wire pieces: ``KeyValue``/``AnyValue`` bytes equal the SDK encoder's, varints and the
request framing decode with the official generated classes."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal import _encode_key_value
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from obs_middleware.exporters._otlp_wire import (
    INT64_MAX,
    INT64_MIN,
    key_value,
    length,
    request,
    resource_message,
    scope_message,
    varint,
)

_SCALARS = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=8),
)
_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(key=st.text(), value=_VALUES)
def test_key_value_is_the_sdk_encoders(key: str, value: Any) -> None:
    assert key_value(key, value) == _encode_key_value(key, value).SerializeToString()


@given(n=st.integers(0, 2**64 - 1))
def test_varints_and_lengths(n: int) -> None:
    data = varint(n)
    decoded, shift = 0, 0
    for byte in data:
        decoded |= (byte & 0x7F) << shift
        shift += 7
    assert decoded == n
    assert all(b & 0x80 for b in data[:-1]) and not data[-1] & 0x80
    if n < 2**32:
        assert length(n) == data


def test_varint_of_a_negative_number_is_its_64_bit_twos_complement() -> None:
    assert varint(-1) == b"\xff" * 9 + b"\x01"


def test_a_request_frames_resource_scope_and_spans_as_the_official_classes_read_them() -> None:
    spans = []
    for i in range(1, 4):
        body = PbSpan(trace_id=bytes(15) + bytes([i]), span_id=bytes(7) + bytes([i]), name=f"s{i}")
        data = body.SerializeToString()
        spans.append((b"\x12" + length(len(data)) + data).decode("latin-1"))
    resource = resource_message({"service.name": "api", "process.pid": 7})
    data = request(resource, scope_message("obs_middleware", "1.0"), spans, "https://schema")
    parsed = ExportTraceServiceRequest.FromString(data)
    (rs,) = parsed.resource_spans
    assert {a.key for a in rs.resource.attributes} == {"service.name", "process.pid"}
    assert rs.schema_url == "https://schema"
    (ss,) = rs.scope_spans
    assert (ss.scope.name, ss.scope.version) == ("obs_middleware", "1.0")
    assert [s.name for s in ss.spans] == ["s1", "s2", "s3"]
