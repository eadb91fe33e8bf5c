"""Tinybird Events API exporter, and the row shape it shares with the ClickHouse exporter.

A row is the unified record (DESIGN.md §7) as columns: fixed keys, then the well-known
namespaced attributes with ``.`` replaced by ``_`` (``http.route`` → ``http_route``), then every
other attribute (and span events) as one JSON string column, ``attributes``. Missing values are
left out (the column default applies) and a value of the wrong type for its column moves to
``attributes``, so one odd attribute never sends a row to quarantine. The shipped schema is
``assets/tinybird/datasources/obs_events.datasource``; the analysis pipes are beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import orjson

from .._core.metrics import dropped
from .._delivery import Delivery, DeliveryOptions, Outcome, Result, classify_status, json_default
from .._record import Record
from .http import HttpTransport, gzip

__all__ = ["COLUMNS", "TinybirdExporter", "asset_path", "encode_rows", "row"]

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
)
COLUMNS: tuple[str, ...] = (*(col for _, col, _ in _SPEC), "attributes")
_BY_KEY: dict[str, tuple[str, tuple[type, ...]]] = {key: (col, t) for key, col, t in _SPEC}
_INT64 = 1 << 63
_OPTS = orjson.OPT_NON_STR_KEYS  # ``attributes`` holds the user's keys, whatever their type
# A row's keys are column names: without OPT_NON_STR_KEYS, orjson encodes a row ~25 % faster.
_LINE_OPTS = orjson.OPT_APPEND_NEWLINE


def row(rec: Record) -> dict[str, Any]:
    """One record as a datasource row (see the module docstring)."""
    keys = tuple(rec)
    convert = _CONVERTERS.get(keys)
    if convert is None:
        if not keys or len(keys) > _MAX_KEYS or len(_CONVERTERS) >= _MAX_SHAPES:
            return _row(rec)
        convert = _CONVERTERS[keys] = _converter(keys)
    return convert(rec)


def _row(rec: Record) -> dict[str, Any]:
    # The generic conversion: any record, one key at a time.
    out: dict[str, Any] = {}
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
        out["attributes"] = orjson.dumps(extra, json_default, _OPTS).decode()
    return out


# A record's shape (its keys, in order) is fixed per call site, so each shape gets a converter
# compiled once: straight-line code, one type test per value, no per-key lookups. ~27 % fewer
# instructions per row than ``_row`` (benchmarks/test_throughput.py). Bounded: past
# ``_MAX_SHAPES`` shapes, new ones take ``_row``.
_CONVERTERS: dict[tuple[str, ...], Callable[[Record], dict[str, Any]]] = {}
_MAX_SHAPES = 512
_MAX_KEYS = 200
_TESTS: dict[tuple[type, ...], str] = {
    _STR: "type({v}) is str",
    _NUM: "type({v}) is float or type({v}) is int",
    _INT: "type({v}) is int and -_INT64 <= {v} < _INT64",
}


def _converter(keys: tuple[str, ...]) -> Callable[[Record], dict[str, Any]]:
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
        spec = _BY_KEY.get(key)
        if spec is not None:
            col, types = spec
            lines.append(f"    if {_TESTS[types].format(v=v)}:")
            lines.append(f"        out[{col!r}] = {v}")
            lines.append(f"    elif {v} is not None:")
        else:
            lines.append(f"    if {v} is not None:")
        lines.append(f"        extra[{key!r}] = {v}")
    lines += [
        "    if extra:",
        "        out['attributes'] = dumps(extra, json_default, _OPTS).decode()",
        "    return out",
    ]
    namespace: dict[str, Any] = {
        "dumps": orjson.dumps,
        "json_default": json_default,
        "_OPTS": _OPTS,
        "_INT64": _INT64,
    }
    exec("\n".join(lines), namespace)  # keys enter the code as repr() literals only
    convert: Callable[[Record], dict[str, Any]] = namespace["convert"]
    return convert


def encode_rows(records: Sequence[Record]) -> bytes:
    """NDJSON rows for ``records`` (one line each)."""
    # One growing buffer, each line freed at once. Keeping a batch of lines alive until a join
    # cost ~15 % more, and up to 2.5x where glibc then trimmed and re-faulted the heap's top on
    # every batch (~2 page faults per row; benchmarks/test_throughput.py).
    dumps = orjson.dumps
    data = bytearray()
    for rec in records:
        data += dumps(row(rec), json_default, _LINE_OPTS)
    return bytes(data)


def asset_path(*parts: str) -> str:
    """Filesystem path of a shipped asset (``asset_path("tinybird", "pipes")``)."""
    return str(resources.files("obs_middleware.exporters").joinpath("assets", *parts))


class TinybirdExporter:
    """Send records to a Tinybird datasource through the Events API, as NDJSON batches.

    ``token``: a token with ``DATASOURCE:APPEND`` on the datasource (default ``TB_TOKEN``).
    ``host``: the workspace's regional API host (default ``TB_HOST``, else
    ``https://api.tinybird.co``). ``datasource``: create it from the shipped
    ``obs_events.datasource`` first. ``wait``: ``True`` waits for the database to acknowledge
    each write (safer retries, slower). Bodies are gzip-compressed; a batch over
    ``max_request_bytes`` (Tinybird's 10 MB limit on free plans) is split. 429 answers are
    retried after their ``Retry-After``; rows the API quarantines are counted in ``obs.dropped``
    (reason ``quarantined:tinybird``) and stay inspectable in the ``<datasource>_quarantine``
    table. Requests time out after 5 s by default (``DeliveryOptions``).
    """

    name = "tinybird"

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str | None = None,
        datasource: str = "obs_events",
        wait: bool = False,
        compress: bool = True,
        max_request_bytes: int = 10 * 1000 * 1000,
        delivery: DeliveryOptions | None = None,
    ) -> None:
        token = token or os.environ.get("TB_TOKEN")
        if not token:
            raise ValueError("TinybirdExporter needs a token (argument or TB_TOKEN)")
        host = host or os.environ.get("TB_HOST") or "https://api.tinybird.co"
        self.transport = HttpTransport(host, {"Authorization": f"Bearer {token}"})
        query = urlencode({"name": datasource, "wait": "true" if wait else "false"})
        self.path = f"/v0/events?{query}"
        self.compress = compress
        self.max_request_bytes = max_request_bytes
        self._headers = {"Content-Type": "application/x-ndjson"}
        if compress:
            self._headers["Content-Encoding"] = "gzip"
        options = delivery or DeliveryOptions.from_env(self.name)
        self.delivery = Delivery(self.name, self.send, options, interrupt=self.transport.abort)
        self.quarantined = 0

    def send(self, records: Sequence[Record], timeout: float) -> Result:
        """One Events API request for ``records`` (called by the delivery layer)."""
        body = encode_rows(records)
        if len(body) > self.max_request_bytes:
            return classify_status(413)
        if self.compress:
            body = gzip(body)
        response = self.transport.post(self.path, body, self._headers, timeout)
        result = response.result()
        if result.outcome is Outcome.OK:
            self._count_quarantined(response.body)
        return result

    def _count_quarantined(self, body: bytes) -> None:
        try:
            quarantined = int(orjson.loads(body).get("quarantined_rows") or 0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return
        if quarantined:
            self.quarantined += quarantined
            dropped.add((f"quarantined:{self.name}",), quarantined)

    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch."""
        self.delivery.deliver(records)

    def flush(self) -> None:
        """Replay anything spooled."""
        self.delivery.flush()

    def shutdown(self) -> None:
        """Seal the spool and close the connection."""
        self.delivery.close()
        self.transport.close()


def from_spec(arg: str) -> TinybirdExporter:
    """``tinybird`` or ``tinybird:<datasource>`` (token and host from ``TB_TOKEN``/``TB_HOST``)."""
    return TinybirdExporter(datasource=arg or "obs_events")
