"""Column-store rows, shared by the Tinybird and ClickHouse exporters.

A row is the unified record (docs/ARCHITECTURE.md) as columns: fixed keys, then the well-known
namespaced attributes with ``.`` replaced by ``_`` (``http.route`` → ``http_route``), then every
other attribute (and span events) as one JSON string column, ``attributes``. Missing values are
left out (the column default applies) and a value of the wrong type for its column moves to
``attributes``, so one odd attribute never sends a row to quarantine.

``span_rows`` builds rows straight from the pipeline's finished spans, without the records: ~17 %
less export-thread CPU per span than ``row`` over ``to_records`` (benchmarks/test_throughput.py).
Both compile one converter per shape (a span's attribute keys, a record's keys): straight-line
code, one exact type test per value, no per-key lookups.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from .._core import span as _span
from .._json import dumps_json, json_default
from .._record import (
    FIXED_KEYS,
    IDENTITY_KEYS,
    Record,
    Resource,
    _second_prefix,
    event_dicts,
    to_records,
)

__all__ = ["COLUMNS", "Row", "encode_rows", "row", "span_rows"]

Row = dict[str, Any]

_STR = (str,)
_INT = (int,)
_NUM = (int, float)

# (record key, column, accepted value types). Order = the datasource's column order.
_SPEC: tuple[tuple[str, str, tuple[type, ...]], ...] = (
    ("type", "type", _STR),
    ("name", "name", _STR),
    ("trace_id", "trace_id", _STR),
    ("span_id", "span_id", _STR),
    ("parent_id", "parent_id", _STR),
    ("service", "service", _STR),
    ("environment", "environment", _STR),
    ("start", "start", _STR),
    ("duration_ms", "duration_ms", _NUM),
    ("status", "status", _STR),
    ("error_type", "error_type", _STR),
    ("error_message", "error_message", _STR),
    ("user_id", "user_id", _STR),
    ("tier", "tier", _STR),
    ("request_id", "request_id", _STR),
    ("service.version", "service_version", _STR),
    ("host.name", "host_name", _STR),
    ("service.instance.id", "service_instance_id", _STR),
    ("worker.id", "worker_id", _STR),
    ("machine.id", "machine_id", _STR),
    ("span.kind", "span_kind", _STR),
    ("http.method", "http_method", _STR),
    ("http.route", "http_route", _STR),
    ("http.status_code", "http_status_code", _INT),
    ("http.request_size", "http_request_size", _INT),
    ("http.response_size", "http_response_size", _INT),
    ("db.system", "db_system", _STR),
    ("db.operation", "db_operation", _STR),
    ("db.table", "db_table", _STR),
    ("db.statement", "db_statement", _STR),
    ("db.rows", "db_rows", _INT),
    ("ai.provider", "ai_provider", _STR),
    ("ai.model", "ai_model", _STR),
    ("ai.operation", "ai_operation", _STR),
    ("ai.modality", "ai_modality", _STR),
    ("ai.request_id", "ai_request_id", _STR),
    ("ai.queue_ms", "ai_queue_ms", _NUM),
    ("ai.input_tokens", "ai_input_tokens", _INT),
    ("ai.cached_tokens", "ai_cached_tokens", _INT),
    ("ai.output_tokens", "ai_output_tokens", _INT),
    ("ai.image_count", "ai_image_count", _INT),
    ("ai.cache_status", "ai_cache_status", _STR),
    ("cost.usd", "cost_usd", _NUM),
    ("cost.unknown", "cost_unknown", _STR),
    ("job.id", "job_id", _STR),
    ("job.state", "job_state", _STR),
    ("job.worker_id", "job_worker_id", _STR),
    ("job.machine_id", "job_machine_id", _STR),
    ("exception.stacktrace", "exception_stacktrace", _STR),
)
COLUMNS: tuple[str, ...] = (*(col for _, col, _ in _SPEC), "attributes")
_BY_KEY: dict[str, tuple[str, tuple[type, ...]]] = {key: (col, t) for key, col, t in _SPEC}
_INT64 = 1 << 63
_OPTS = orjson.OPT_NON_STR_KEYS  # ``attributes`` holds the user's keys, whatever their type
# A row's keys are column names: without OPT_NON_STR_KEYS, orjson encodes a row ~25 % faster.
_LINE_OPTS = orjson.OPT_APPEND_NEWLINE
# Keys a span's attributes may not set (``to_records`` drops them): they identify the record
# (the fixed keys, then the process identity).
_SPAN_IDENTITY = frozenset((*FIXED_KEYS, *IDENTITY_KEYS))
assert {key for key, _, _ in _SPEC[:20]} == _SPAN_IDENTITY

# Converters are bounded: past ``_MAX_SHAPES`` shapes, or for wider ones, the generic path runs.
_MAX_SHAPES = 512
_MAX_KEYS = 200
_TESTS: dict[tuple[type, ...], str] = {
    _STR: "type({v}) is str",
    _NUM: "type({v}) is float or type({v}) is int",
    _INT: "type({v}) is int and -_INT64 <= {v} < _INT64",
}


def _compile(lines: list[str]) -> Callable[..., Any]:
    namespace: dict[str, Any] = {
        "_INT64": _INT64,
        "_OPTS": _OPTS,
        "dumps_json": dumps_json,
        "event_dicts": event_dicts,
        "_ATTRIBUTES": _ATTRIBUTES,
        "_attributes": _attributes,
    }
    exec("\n".join(lines), namespace)  # keys enter the code as repr() literals only
    convert: Callable[..., Any] = namespace["convert"]
    return convert


# -- records --------------------------------------------------------------------------------------
def row(rec: Record) -> Row:
    """One record as a datasource row (see the module docstring)."""
    keys = tuple(rec)
    convert = _CONVERTERS.get(keys)
    if convert is None:
        if not keys or len(keys) > _MAX_KEYS or len(_CONVERTERS) >= _MAX_SHAPES:
            return _row(rec)
        convert = _CONVERTERS[keys] = _converter(keys)
    return convert(rec)


def _row(rec: Record) -> Row:
    # The generic conversion: any record, one key at a time.
    out: Row = {}
    extra: dict[str, Any] | None = None
    by_key = _BY_KEY
    for key, value in rec.items():
        if value is None:
            continue
        spec = by_key.get(key)
        if spec is not None:
            col, types = spec
            if type(value) in types and (types is not _INT or -_INT64 <= value < _INT64):
                out[col] = value
                continue
        if extra is None:
            extra = {}
        extra[key] = value
    if extra is not None:
        out["attributes"] = dumps_json(extra, _OPTS).decode()
    return out


_CONVERTERS: dict[tuple[str, ...], Callable[[Record], Row]] = {}


def _converter(keys: tuple[str, ...]) -> Callable[[Record], Row]:
    if not all(type(k) is str for k in keys):
        return _row
    values = [f"v{i}" for i in range(len(keys))]
    lines = [
        "def convert(rec, type=type, str=str, int=int, float=float):",
        f"    ({', '.join(values)},) = rec.values()",
        "    out = {}",
        "    extra = {}",
    ]
    for key, v in zip(keys, values, strict=True):
        lines += _value_lines(key, v)
    lines += [
        "    if extra:",
        "        out['attributes'] = dumps_json(extra, _OPTS).decode()",
        "    return out",
    ]
    return _compile(lines)


def _value_lines(key: str, v: str, *, bail: bool = False) -> list[str]:
    # Code placing value ``v`` of ``key``: its column if it has one and the type fits; else
    # ``attributes``, or with ``bail`` give up (return None: the record path decides).
    spec = _BY_KEY.get(key)
    if spec is None:
        return [f"    if {v} is not None:", f"        extra[{key!r}] = {v}"]
    col, types = spec
    return [
        f"    if {_TESTS[types].format(v=v)}:",
        f"        out[{col!r}] = {v}",
        f"    elif {v} is not None:",
        "        return None" if bail else f"        extra[{key!r}] = {v}",
    ]


# -- finished spans -------------------------------------------------------------------------------
def span_rows(
    items: Iterable[_span.Span | _span.Event], resource: Resource, *, packed: bool = False
) -> list[Row]:
    """Rows for finished spans and events: what ``row`` gives for their records, built directly.

    Runs on the export worker. Ids and timestamps are formatted as ``to_records`` does (and share
    its per-trace hex cache); an event, or a span with a value of an unexpected type in a fixed
    field or a typed column, takes the record path.

    ``packed`` (the exporters' path): in a span's row, the columns every span of the process
    shares (``type``, ``service``, ``environment``, the process identity) are one entry,
    ``type``, whose value is an ``orjson.Fragment`` of their JSON (``packed_columns``). Any
    ``orjson`` encoding of the row (the request body, the spool) writes the same JSON as the
    plain row's, for a copy of bytes instead of six to eight dict entries encoded per span.
    """
    service = resource.service
    environment = resource.environment
    identity = resource.identity()
    if (
        type(service) is not str
        or type(environment) is not str
        or not all(type(v) is str for v in identity.values())
    ):
        return [row(rec) for rec in to_records(items, resource)]
    shared = {
        "service": service,
        "environment": environment,
        **{_BY_KEY[key][0]: value for key, value in identity.items()},
    }
    head: Any = "span"
    if packed:
        head, shared = packed_columns(shared), {}
    anchor = _span.wall_anchor_ns
    Span = _span.Span
    converters = _SPAN_CONVERTERS
    span_hex: dict[int, str] = {}
    last_second = -1
    prefix = ""
    out: list[Row] = []
    append = out.append
    for item in items:
        if type(item) is not Span:
            append(row(to_records((item,), resource)[0]))
            continue
        # Ids and start as in ``to_records``, inlined in both loops on purpose: a shared helper
        # would add a Python call per span; the property tests pin the two equal.
        local = item.local
        trace_hex = local.trace_hex
        if trace_hex is None:
            trace_hex = local.trace_hex = item.trace_id.to_bytes(16, "big").hex()
        sid = item.span_id
        own = span_hex.get(sid)
        if own is None:
            own = span_hex[sid] = sid.to_bytes(8, "big").hex()
        pid = item.parent_id
        if pid:
            parent = span_hex.get(pid)
            if parent is None:
                parent = span_hex[pid] = pid.to_bytes(8, "big").hex()
        else:
            parent = None
        start_ns = item.start_ns
        second, us = divmod((anchor + start_ns) // 1000, 1_000_000)
        if second != last_second:
            last_second, prefix = second, _second_prefix(second)
        keys = tuple(item.attrs)
        convert = converters.get(keys)
        if convert is None:
            convert = _span_converter(keys)
        converted = convert(
            item,
            local,
            trace_hex,
            own,
            parent,
            "%s.%06dZ" % (prefix, us),
            (item.end_ns - start_ns) // 1000 / 1000,
            head,
            shared,
        )
        append(converted if converted is not None else row(to_records((item,), resource)[0]))
    return out


def packed_columns(shared: Row) -> orjson.Fragment:
    """The ``type`` entry of a packed span row (``span_rows``): ``"span"`` followed by the
    columns of ``shared`` (text values), as the JSON an encoder would write after ``"type":``."""
    # ``dumps_json``: text with a lone surrogate (a host name, say) is written as a row's would be.
    return orjson.Fragment(
        b'"span"' + b"".join(b"," + dumps_json({col: v}, 0)[1:-1] for col, v in shared.items())
    )


# The ``attributes`` text of recent spans by shape and values (text values only): the spans of
# a shape mostly repeat their few uncatalogued values (a pricing version, a feature flag).
_ATTRIBUTES: dict[tuple[Any, ...], str] = {}
_MAX_ATTRIBUTES = 4096  # entries; cleared when full (the cache holds values that repeat)
_MAX_CACHED_TEXT = 512  # characters of one cached text
_PRESIZED_TYPED = 7  # typed attributes of the one-display row: 8 fixed entries + 7 = 15
_SHAPE_IDS = itertools.count()  # a converter's own first item in its ``_ATTRIBUTES`` keys


def _attributes(key: tuple[Any, ...], extra: dict[str, Any]) -> str:
    # A cache miss of the span converters: encode, and keep it if short.
    text = dumps_json(extra, _OPTS).decode()
    if len(text) <= _MAX_CACHED_TEXT:
        if len(_ATTRIBUTES) >= _MAX_ATTRIBUTES:
            _ATTRIBUTES.clear()
        _ATTRIBUTES[key] = text
    return text


_SPAN_CONVERTERS: dict[tuple[str, ...], Callable[..., Row | None]] = {}


def _bail(*_: Any) -> None:
    # The converter of shapes past the bounds: every span takes the record path.
    return None


def _span_converter(keys: tuple[str, ...]) -> Callable[..., Row | None]:
    # Straight-line code for spans whose attributes have ``keys``, in order. It returns None
    # where the record path must decide (a fixed field of an unexpected type, a typed column's
    # value of another type), so the fast path never needs the generic rules.
    if len(keys) > _MAX_KEYS or len(_SPAN_CONVERTERS) >= _MAX_SHAPES:
        return _bail
    if not all(type(k) is str for k in keys):
        _SPAN_CONVERTERS[keys] = _bail
        return _bail
    values = [f"a{i}" for i in range(len(keys))]
    lines = [
        "def convert(item, local, trace_id, span_id, parent_id, start, duration, head, shared,"
        " type=type, str=str, int=int, float=float):",
        "    name = item.name",
        "    status = item.status",
        "    if type(name) is not str or type(status) is not str:",
        "        return None",
        *_presized_lines(keys, values),
        f"    out = {_FIXED}}}",
        *_SHARED_AND_PARENT,
    ]
    lines += _optional_lines()
    if "span.kind" not in keys:  # else the attribute wins, as in the record
        lines += [
            "    v = item.kind",
            "    if v != 'internal':",
            "        if type(v) is not str:",
            "            return None",
            "        out['span_kind'] = v",
        ]
    extra = any(key not in _BY_KEY for key in keys)
    if keys:
        lines.append(f"    ({', '.join(values)},) = item.attrs.values()")
    if extra and "events" not in keys:
        lines += _cached_attribute_lines(keys, values)
        lines.append("    return out")
        convert = _SPAN_CONVERTERS[keys] = _compile(lines)
        return convert
    if extra:
        lines.append("    extra = {}")
    for key, v in zip(keys, values, strict=True):
        if key in _SPAN_IDENTITY:
            continue
        if key == "events":  # the span's events replace an attribute of that name
            lines += ["    if item.events:", f"        {v} = event_dicts(item.events)"]
        lines += _value_lines(key, v, bail=True)
    if "events" not in keys:
        lines.append("    if item.events:")
        if extra:
            lines.append("        extra['events'] = event_dicts(item.events)")
        else:
            lines.append("        extra = {'events': event_dicts(item.events)}")
            lines.append("        out['attributes'] = dumps_json(extra, _OPTS).decode()")
    if extra:
        lines += [
            "    if extra:",
            "        out['attributes'] = dumps_json(extra, _OPTS).decode()",
        ]
    lines.append("    return out")
    convert = _SPAN_CONVERTERS[keys] = _compile(lines)
    return convert


# The opening of a span row's dict display (the fixed fields; close it with "}") and what
# follows it in every converter: the process's shared columns, the parent id.
_FIXED = (
    "{'type': head, 'name': name, 'trace_id': trace_id, 'span_id': span_id, 'start': start,"
    " 'duration_ms': duration, 'status': status"
)
_SHARED_AND_PARENT = (
    "    if shared:",
    "        out.update(shared)",
    "    if parent_id is not None:",
    "        out['parent_id'] = parent_id",
)


def _optional_lines() -> list[str]:
    # The fixed fields a span may leave out (None), each in its column if text.
    lines = []
    for field in ("error_type", "error_message", "user_id", "tier", "request_id"):
        owner = "item" if field.startswith("error") else "local"
        lines += [f"    v = {owner}.{field}", *_value_lines(field, "v", bail=True)]
    return lines


def _presized_lines(keys: tuple[str, ...], values: list[str]) -> list[str]:
    # The usual span of the shape (its kind text, each typed attribute of its column's type) in
    # one dict display of up to 15 entries, which CPython builds presized (a longer display
    # adds one entry at a time): no resize as the row grows.
    typed = [
        (k, v)
        for k, v in zip(keys, values, strict=True)
        if k in _BY_KEY and k not in _SPAN_IDENTITY
    ]
    if "events" in keys or "span.kind" in keys or len(typed) > _PRESIZED_TYPED:
        return []
    conds = ["type(kind) is str"]
    conds += [f"({_TESTS[_BY_KEY[k][1]].format(v=v)})" for k, v in typed]
    columns = "".join(f", {_BY_KEY[k][0]!r}: {v}" for k, v in typed)
    body = [
        "    if kind == 'internal':",
        f"        out = {_FIXED}{columns}}}",
        "    else:",
        f"        out = {_FIXED}, 'span_kind': kind{columns}}}",
        *_SHARED_AND_PARENT,
        *_optional_lines(),
    ]
    if any(k not in _BY_KEY for k in keys):
        body += _cached_attribute_lines(keys, values, typed=False)
    else:
        body += [
            "    if item.events:",
            "        out['attributes'] = dumps_json("
            "{'events': event_dicts(item.events)}, _OPTS).decode()",
        ]
    body.append("    return out")
    lines = [f"    ({', '.join(values)},) = item.attrs.values()"] if keys else []
    lines += ["    kind = item.kind", f"    if {' and '.join(conds)}:"]
    return lines + ["    " + line for line in body]


def _cached_attribute_lines(
    keys: tuple[str, ...], values: list[str], *, typed: bool = True
) -> list[str]:
    # The typed columns as in ``_span_converter`` (unless ``typed`` is False: placed already);
    # then ``attributes``, from ``_ATTRIBUTES`` when the span has no events and every
    # uncatalogued value is text, else encoded.
    columns = [(k, v) for k, v in zip(keys, values, strict=True) if k in _BY_KEY and typed]
    extra = [(k, v) for k, v in zip(keys, values, strict=True) if k not in _BY_KEY]
    lines = [
        line
        for key, v in columns
        if key not in _SPAN_IDENTITY
        for line in _value_lines(key, v, bail=True)
    ]
    key = f"({next(_SHAPE_IDS)!r}, {', '.join(v for _, v in extra)})"
    text = " and ".join(f"type({v}) is str" for _, v in extra)
    lines += [
        f"    if not item.events and {text}:",
        f"        att = _ATTRIBUTES.get({key})",
        "        if att is None:",
        f"            att = _attributes({key}, {{{', '.join(f'{k!r}: {v}' for k, v in extra)}}})",
        "        out['attributes'] = att",
        "        return out",
        "    extra = {}",
    ]
    for k, v in extra:
        lines += _value_lines(k, v)
    lines += [
        "    if item.events:",
        "        extra['events'] = event_dicts(item.events)",
        "    if extra:",
        "        out['attributes'] = dumps_json(extra, _OPTS).decode()",
    ]
    return lines


def encode_rows(rows: Sequence[Row]) -> bytearray:
    """NDJSON for ``rows`` (one line each), in the buffer it was written to (a request body:
    copying it to ``bytes`` cost ~3 % of the Tinybird export)."""
    # One growing buffer, each line freed at once. Keeping a batch of lines alive until a join
    # cost ~15 % more, and up to 2.5x where glibc then trimmed and re-faulted the heap's top on
    # every batch (~2 page faults per row; benchmarks/test_throughput.py).
    dumps = orjson.dumps
    data = bytearray()
    try:
        for r in rows:
            data += dumps(r, json_default, _LINE_OPTS)
    except TypeError:  # orjson.JSONEncodeError: bad text in a column, a cycle...
        data = bytearray()
        for r in rows:
            data += dumps_json(r, _LINE_OPTS)
    return data
