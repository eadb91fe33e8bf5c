"""OTLP span path: the requests ``_otlp_proto`` writes from finished spans, decoded with the
official protobuf classes, equal the SDK's encoding of the same spans' records (``to_otel_spans``).

Two fields are ours only: ``flags`` marks a parent remote only when it came over the wire (the
record path marks every parent remote) and ``trace_state`` carries the ``tracestate`` received;
the reference is given them before comparing.
"""

from __future__ import annotations

import datetime
import gzip
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

import obs_middleware as obs
from obs_middleware._core import span as _span
from obs_middleware._core.metrics import registry
from obs_middleware._delivery import DeliveryOptions
from obs_middleware._record import Resource, to_records
from obs_middleware.exporters import _otlp_proto
from obs_middleware.exporters.otlp import OTLPExporter, _encodable, to_otel_spans

from ._finished import collected
from .test_otlp import Collector

RESOURCE = Resource("svc", "prod", "1.0")
REMOTE_STATE = "vendor=abc,other=1"


def make_exporter(url: str = "http://127.0.0.1:9", **kw: Any) -> OTLPExporter:
    exporter = OTLPExporter(url, metrics=False, resource_attributes={"worker.id": "w-1"}, **kw)
    exporter.bind(RESOURCE)
    return exporter


def ours(exporter: OTLPExporter, items: list[Any]) -> ExportTraceServiceRequest:
    """What the span path posts for ``items``, decoded."""
    return ExportTraceServiceRequest.FromString(exporter._request(exporter._encoder.encode(items)))


def reference(exporter: OTLPExporter, items: list[Any]) -> list[PbSpan]:
    """The record path, each span's record on its own; None where it cannot encode the span."""
    spans = []
    for item in items:
        if type(item) is not _span.Span:
            continue
        try:
            records = _encodable(to_records([item], RESOURCE))
            request = encode_spans(to_otel_spans(records, exporter.resource))
        except Exception:
            continue
        (span,) = request.resource_spans[0].scope_spans[0].spans
        remote = item.parent_id and item.local.root_id == item.span_id
        span.flags = 0x300 if remote else 0x100
        span.trace_state = item.local.tracestate or ""
        spans.append(span)
    return spans


def spans_of(request: ExportTraceServiceRequest) -> list[PbSpan]:
    (rs,) = request.resource_spans
    (ss,) = rs.scope_spans
    return list(ss.spans)


@pytest.fixture
def receiver() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


@pytest.fixture
def finished(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    items: list[Any] = []
    monkeypatch.setattr(_span, "on_finish", items.append)
    return items


def test_usual_spans_take_the_fast_path_and_equal_the_sdk_encoding(finished: list[Any]) -> None:
    remote = _span.RemoteParent(0xABC, 0xDEF, True, REMOTE_STATE)
    root = _span.Span("POST /v1/images", {"http.method": "POST", "http.status_code": 200}, "server")
    with _remote(root, remote):
        root.local.user_id, root.local.tier, root.local.request_id = "u-1", "pro", "req-1"
        with _span.Span(
            "ai.request",
            {"ai.model": "flux", "ai.queue_ms": 120.5, "ai.image_count": 1, "ok": True},
            "client",
        ) as ai:
            ai.event("queued", position=3, tags=["a", "b"])
        with pytest.raises(ValueError), _span.Span("db", {"db.rows": -5, "mixed": [1, "a"]}):
            raise ValueError("boom")
        with _span.Span("moderation", {"extra": {"k": [1, 2]}}) as m:
            m.status = "content_violation"
    exporter = make_exporter()
    request = ours(exporter, finished)
    assert exporter._encoder.fallbacks == 0
    spans = spans_of(request)
    assert spans == reference(exporter, finished)
    ai_span, db, moderation, server = spans
    assert server.flags == 0x300 and ai_span.flags == 0x100  # only the root's parent is remote
    assert server.trace_state == ai_span.trace_state == REMOTE_STATE
    assert server.parent_span_id == (0xDEF).to_bytes(8, "big")
    assert ai_span.parent_span_id == server.span_id
    assert [a.key for a in server.attributes] == [
        "enduser.id",
        "obs.tier",
        "obs.request_id",
        "http.request.method",
        "http.response.status_code",
    ]
    assert server.kind == PbSpan.SPAN_KIND_SERVER and server.status.code == 1
    assert db.status.message == "ValueError: boom" and db.events[-1].name == "exception"
    assert moderation.attributes[-1].value.string_value == "content_violation"
    assert moderation.attributes[3].value.string_value == '{"k":[1,2]}'
    (resource_spans,) = request.resource_spans
    expected = encode_spans(
        to_otel_spans(to_records(finished[:1], RESOURCE), exporter.resource)
    ).resource_spans[0]
    assert resource_spans.resource == expected.resource
    assert resource_spans.scope_spans[0].scope == expected.scope_spans[0].scope
    assert ours(exporter, finished) == request  # again, from the caches


def test_cached_attribute_fields_keep_their_value_type(finished: list[Any]) -> None:
    for value in (1, True, 1.0, 0.0, -0.0, 0, False, "1", [1], (1,), [True], float("inf")):
        with _span.Span("s", {"n": value}):
            pass
    exporter = make_exporter()
    for _ in range(2):  # the second time from the caches
        spans = spans_of(ours(exporter, finished))
        assert spans == reference(exporter, finished)
        assert [s.attributes[0].value.SerializeToString() for s in spans] == [
            s.attributes[0].value.SerializeToString() for s in reference(exporter, finished)
        ]  # -0.0 and 0.0 compare equal: their bytes do not
    assert exporter._encoder.fallbacks == 0


class _remote:
    """Start ``span`` under a remote parent."""

    def __init__(self, span: _span.Span, parent: _span.RemoteParent) -> None:
        span._remote = parent
        self.span = span

    def __enter__(self) -> _span.Span:
        return self.span.start()

    def __exit__(self, *exc: object) -> None:
        self.span.__exit__(*exc)  # type: ignore[arg-type]


_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["", "é漢🙂", "bad\udcff", "\x00\n"]))
_SCALAR = st.one_of(
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(),  # past 64 bits too
    st.floats(allow_nan=False),
    _TEXT,
)
_VALUES = st.one_of(
    st.none(),
    _SCALAR,
    st.lists(_SCALAR, max_size=3),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.lists(st.one_of(st.none(), st.integers(0, 2)), max_size=2),
    st.dictionaries(st.text(max_size=2), st.one_of(st.integers(0, 3), _TEXT), max_size=2),
    st.dictionaries(st.integers(0, 2), st.integers(), max_size=1),
    st.sets(st.integers(0, 3), max_size=2),
    st.just(datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)),
    st.just(b"raw"),
)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "http.method",
            "http.route",
            "http.status_code",
            "ai.model",
            "custom",
            "enduser.id",
            "http.request.method",
            "obs.status",
            "span.kind",
            "events",
            "name",
            "user_id",
            "error_type",
            # an AI span's (``gen_ai.*`` copies), and one such name set by the span itself
            "ai.provider",
            "ai.operation",
            "ai.modality",
            "ai.input_tokens",
            "ai.finish_reason",
            "ai.input.temperature",
            "gen_ai.system",
        ]
    ),
    _TEXT,
)
_ODD = st.one_of(st.none(), st.integers(0, 3), _TEXT)


@settings(max_examples=300, deadline=None)
@given(
    attrs=st.dictionaries(_KEYS, _VALUES, max_size=8),
    name=st.one_of(_TEXT, st.integers(0, 2)),
    status=st.one_of(st.sampled_from(["ok", "error", "content_violation", "", None]), _ODD),
    kind=st.sampled_from(["internal", "server", "client", "producer", "consumer", None, 3, "x"]),
    error=st.tuples(_ODD, _ODD),
    local=st.tuples(_ODD, _ODD, _ODD),
    events=st.lists(
        st.tuples(
            st.one_of(_TEXT, st.integers(0, 2)),
            st.dictionaries(st.one_of(st.text(max_size=2), st.just("time")), _VALUES, max_size=2),
        ),
        max_size=2,
    ),
    child=st.booleans(),
    remote=st.one_of(st.none(), st.sampled_from(["", REMOTE_STATE])),
)
def test_the_span_path_equals_the_record_path_on_any_span(
    attrs: dict[Any, Any],
    name: Any,
    status: Any,
    kind: Any,
    error: tuple[Any, Any],
    local: tuple[Any, Any, Any],
    events: list[tuple[Any, dict[str, Any]]],
    child: bool,
    remote: str | None,
) -> None:
    items = build(attrs, name, status, kind, error, local, events, child, remote)
    exporter = make_exporter()
    assert spans_of(ours(exporter, items)) == reference(exporter, items)


def build(
    attrs: dict[Any, Any],
    name: Any,
    status: Any,
    kind: Any,
    error: tuple[Any, Any],
    local: tuple[Any, Any, Any],
    events: list[tuple[Any, dict[str, Any]]],
    child: bool,
    remote: str | None,
) -> list[Any]:
    """A root span, with a child or not, under a remote parent or not, holding what is given."""
    root = _span.Span("root", {"http.route": "/x"}, "server")
    if remote is not None:
        root._remote = _span.RemoteParent(7, 9, True, remote or None)
    with collected() as items, root:
        span = _span.Span(name, dict(attrs), kind).start() if child else root
        if not child:
            span.name, span.attrs, span.kind = name, dict(attrs), kind
        span.status, (span.error_type, span.error_message) = status, error
        root.local.user_id, root.local.tier, root.local.request_id = local
        for event_name, fields in events:
            span.event(event_name, **fields)
        if child:
            span.end()
    return items


_USUAL_SCALAR = st.one_of(
    st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1), st.floats(allow_nan=False), st.text()
)
_USUAL_VALUES = st.one_of(
    st.none(),
    _USUAL_SCALAR,
    st.lists(st.text(max_size=3), max_size=3),
    st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=3).map(tuple),
    st.lists(st.one_of(st.booleans(), st.floats(allow_nan=False), st.text()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(0, 9), st.text()), max_size=2),
)
_USUAL_KEYS = st.one_of(
    st.sampled_from(
        [
            "http.method",
            "http.route",
            "http.status_code",
            "ai.model",
            "cost.usd",
            "ai.provider",
            "ai.operation",
            "ai.output_tokens",
            "ai.finish_reason",
        ]
    ),
    # A span naming a ``gen_ai.*`` attribute itself takes the record path (see the next tests).
    st.text(max_size=8).filter(
        lambda k: k not in _otlp_proto._SPECIAL and not k.startswith("gen_ai.")
    ),
)
_USUAL_TEXT = st.one_of(st.none(), st.text(max_size=8))


@given(
    attrs=st.dictionaries(_USUAL_KEYS, _USUAL_VALUES, max_size=8),
    name=st.text(),
    status=st.one_of(st.sampled_from(["ok", "error", "cancelled", "", None]), st.text()),
    kind=st.one_of(st.sampled_from(["internal", "server", "client", "consumer", None]), _SCALAR),
    error=st.tuples(_USUAL_TEXT, _USUAL_TEXT),
    local=st.tuples(_USUAL_TEXT, st.one_of(_USUAL_TEXT, st.integers(0, 3)), _USUAL_TEXT),
    events=st.lists(
        st.tuples(
            st.text(max_size=4),
            st.dictionaries(
                st.text(max_size=3).filter(lambda k: k not in ("name", "time")),
                _USUAL_VALUES,
                max_size=3,
            ),
        ),
        max_size=2,
    ),
    child=st.booleans(),
    remote=st.one_of(st.none(), st.sampled_from(["", REMOTE_STATE])),
)
def test_usual_spans_of_any_shape_never_take_the_record_path(
    attrs: dict[Any, Any],
    name: Any,
    status: Any,
    kind: Any,
    error: tuple[Any, Any],
    local: tuple[Any, Any, Any],
    events: list[tuple[Any, dict[str, Any]]],
    child: bool,
    remote: str | None,
) -> None:
    items = build(attrs, name, status, kind, error, local, events, child, remote)
    exporter = make_exporter()
    assert spans_of(ours(exporter, items)) == reference(exporter, items)
    assert exporter._encoder.fallbacks == 0
    assert spans_of(ours(exporter, items)) == reference(exporter, items)  # from the caches


def test_encoded_spans_are_posted_spooled_and_replayed_whole(
    receiver: Collector, tmp_path: Any, finished: list[Any]
) -> None:
    registry.reset()
    with _span.Span("GET /a", {"http.route": "/a"}, "server"), _span.Span("q", {"n": 1}):
        pass
    receiver.script = [503]
    options = DeliveryOptions(max_attempts=1, breaker_cooldown_s=0, spool_dir=str(tmp_path))
    exporter = make_exporter(receiver.url, delivery=options)
    exporter.export_spans([*finished, _span.Event("job.done", {}, None)], RESOURCE)
    assert receiver.traces == []  # refused: spooled, as text
    exporter.flush()
    (request,) = receiver.traces
    assert spans_of(request) == reference(exporter, finished)
    assert request.resource_spans[0].resource == ours(exporter, finished).resource_spans[0].resource


def test_the_otel_variables_set_compression_and_headers(
    receiver: Collector, monkeypatch: pytest.MonkeyPatch, finished: list[Any]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=obs")
    received: list[tuple[bytes, Any]] = []
    handler: Callable[..., Any] = receiver.httpd.RequestHandlerClass  # type: ignore[assignment]
    original = handler.do_POST

    def do_post(self: Any) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        received.append((body, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    monkeypatch.setattr(handler, "do_POST", do_post)
    with _span.Span("s", {}):
        pass
    make_exporter(receiver.url, headers={"x-key": "k"}).export_spans(finished, RESOURCE)
    monkeypatch.setattr(handler, "do_POST", original)
    ((body, headers),) = received
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert (headers["x-team"], headers["x-key"]) == ("obs", "k")
    (span,) = spans_of(ExportTraceServiceRequest.FromString(gzip.decompress(body)))
    assert span.name == "s"


def test_through_the_pipeline_the_collector_receives_the_span_path(
    receiver: Collector, configured: Callable[..., Any]
) -> None:
    exporter = OTLPExporter(receiver.url, metrics=False)
    configured(exporters=[exporter])
    with obs.span("GET /items", _kind="server", **{"http.method": "GET"}):
        obs.set_user("u1")
        with obs.span("render", n=1):
            pass
    assert obs.flush(10)
    spans = [s for r in receiver.traces for s in spans_of(r)]
    assert sorted(s.name for s in spans) == ["GET /items", "render"]
    assert exporter._encoder.fallbacks == 0
    by_name = {s.name: s for s in spans}
    assert by_name["render"].parent_span_id == by_name["GET /items"].span_id
    assert {a.key: a.value.string_value for a in by_name["GET /items"].attributes} == {
        "enduser.id": "u1",
        "http.request.method": "GET",
    }


def test_an_ai_span_carries_the_genai_conventions_on_both_paths(finished: list[Any]) -> None:
    attrs = {
        "ai.provider": "openai",
        "ai.operation": "responses",
        "ai.modality": "text",
        "ai.model": "gpt-4o-mini",
        "ai.response_model": "gpt-4o-mini-2024-07-18",
        "ai.response_id": "resp-1",
        "ai.finish_reason": "stop",
        "ai.input_tokens": 12,
        "ai.cached_tokens": 2,
        "ai.output_tokens": 5,
        "ai.input.temperature": 0.2,
        "ai.input.max_tokens": 64,
        "gen_ai.system": "mine",  # set by the app: kept as it is
    }
    with _span.Span("ai.request", dict(attrs), "client"):
        pass
    with _span.Span("ai.request", {"ai.provider": "replicate", "ai.operation": "run"}, "client"):
        pass
    with _span.Span("ai.request", {"ai.provider": 3, "ai.input_tokens": True}, "client"):
        pass  # odd values: no copy, on either path
    with _span.Span("plain", {"ai.model": "x"}):
        pass  # not an AI span (no ai.provider): its attribute's twin, no operation name
    exporter = make_exporter()
    spans = spans_of(ours(exporter, finished))
    assert exporter._encoder.fallbacks == 1  # the span naming gen_ai.system itself
    assert spans == reference(exporter, finished)
    del attrs["gen_ai.system"]
    with _span.Span("ai.request", dict(attrs), "client"):
        pass  # the same call without: the span path, twins after their sources, head last
    again = spans_of(ours(exporter, finished[-1:]))
    assert exporter._encoder.fallbacks == 1
    assert again == reference(exporter, finished[-1:])
    keys = [a.key for a in again[0].attributes]
    assert keys[:4] == ["ai.provider", "gen_ai.provider.name", "gen_ai.system", "ai.operation"]
    assert keys.index("gen_ai.request.model") == keys.index("ai.model") + 1
    assert keys.index("gen_ai.usage.input_tokens") == keys.index("ai.input_tokens") + 1
    assert keys[-1] == "gen_ai.operation.name"  # it reads two attributes: after them all
    openai, replicate, odd, plain = ({a.key: a.value for a in s.attributes} for s in spans[:4])
    assert spans[0].kind == PbSpan.SPAN_KIND_CLIENT
    assert {k: v for k, v in openai.items() if k.startswith("ai.")}.keys() == {
        k for k in attrs if k.startswith("ai.")
    }  # ai.* kept
    genai = {k: v for k, v in openai.items() if k.startswith("gen_ai.")}
    assert {k: v.string_value for k, v in genai.items() if v.HasField("string_value")} == {
        "gen_ai.system": "mine",
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "resp-1",
    }
    assert [v.string_value for v in genai["gen_ai.response.finish_reasons"].array_value.values] == [
        "stop"
    ]
    assert {k: v.int_value for k, v in genai.items() if v.HasField("int_value")} == {
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.cache_read.input_tokens": 2,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.request.max_tokens": 64,
    }
    assert genai["gen_ai.request.temperature"].double_value == 0.2
    assert replicate["gen_ai.operation.name"].string_value == "run"  # no modality: its own name
    assert replicate["gen_ai.system"].string_value == "replicate"
    assert not [k for k in odd if k.startswith("gen_ai.")]
    assert [k for k in plain if k.startswith("gen_ai.")] == ["gen_ai.request.model"]


@settings(max_examples=200, deadline=None)
@given(
    attrs=st.dictionaries(_KEYS, _VALUES, max_size=6),
    provider=_VALUES,
    operation=st.one_of(st.sampled_from(["chat", "images.edit", "run"]), _VALUES),
    modality=st.one_of(st.sampled_from(["text", "image", "embedding"]), _VALUES),
    tokens=_VALUES,
)
def test_ai_spans_of_any_shape_equal_the_record_path(
    attrs: dict[Any, Any], provider: Any, operation: Any, modality: Any, tokens: Any
) -> None:
    ai = {
        "ai.provider": provider,
        "ai.operation": operation,
        "ai.modality": modality,
        "ai.output_tokens": tokens,
        "ai.response_id": tokens,
    }
    items = build(
        {**ai, **attrs}, "ai.request", "ok", "client", (None, None), (None,) * 3, [], True, None
    )
    exporter = make_exporter()
    assert spans_of(ours(exporter, items)) == reference(exporter, items)


def test_cached_genai_fields_give_way_to_a_spans_own(finished: list[Any]) -> None:
    plain = {"ai.provider": "openai", "ai.operation": "chat", "ai.model": "m"}
    for attrs in (plain, plain, {**plain, "gen_ai.request.model": "own"}, plain):
        with _span.Span("ai.request", dict(attrs), "client"):
            pass
    exporter = make_exporter()
    spans: list[PbSpan] = []
    for item in finished:  # one batch each: the first ones cache, the third names its own
        spans += spans_of(ours(exporter, [item]))
    assert spans == reference(exporter, finished)
    own = {a.key: a.value.string_value for a in spans[2].attributes}
    assert own["gen_ai.request.model"] == "own"
    assert [a.key for a in spans[2].attributes].count("gen_ai.request.model") == 1


def test_text_heads_and_trace_fields_equal_the_record_path(
    finished: list[Any],
) -> None:
    # One exporter for every span, so its caches serve the later ones: one key's values of every
    # type, None, long and multi-byte text; each trace its own request id (the heads of text
    # fields by length, cached), user, tier and ``tracestate`` (the per-trace fields).
    values = [
        "a",
        7,
        None,
        2.5,
        True,
        "é" * 70,
        "x" * 200,
        ["l"],
        1 << 70,
        "",
        "ü",
        -3,
        "y" * 127,
        0.0,
    ]
    for i, value in enumerate(values):
        with _span.Span("root", {"http.route": "/x"}, "server") as root:
            root.local.user_id, root.local.tier = f"user-{i % 3}", "pro"
            root.local.request_id = f"req-{i}" * (i % 5 + 1)
            if i % 4 == 0:
                root.local.tracestate = REMOTE_STATE
            with _span.Span("child", {"k": value, "ai.model": "m", "n": i}) as child:
                pass
            if i in (3, 5):  # ~99 days, whose float ms is not exact in ns, and ~11.6 days
                us = 8_594_821_609_727 if i == 3 else 10**12 + 123
                child.end_ns = child.start_ns + us * 1000 + 999
    exporter = make_exporter()
    for _ in range(2):  # the second time from the caches
        ours_now = spans_of(ours(exporter, finished))
        assert ours_now == reference(exporter, finished)
    assert exporter._encoder.fallbacks == 2  # the integer past 64 bits, once per encoding
    assert len(exporter._encoder._request[5]) >= 5  # heads by length of the request ids
