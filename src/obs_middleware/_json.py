"""JSON encoding that never loses a batch: orjson on the fast path, a fallback for what it refuses.

One ``try`` per batch or record on the fast path; only a value orjson raises on (an integer past
64 bits, a lone surrogate, nesting past its limit, a cycle, an object it cannot encode) takes the
second pass, and then only its record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ._record import Record

__all__ = [
    "decode_records",
    "dumps_json",
    "encode_records",
    "json_default",
    "jsonable",
    "valid_text",
]


def json_default(value: Any) -> Any:
    """Encode what orjson cannot (sets, tuples, Decimals, objects): as lists or text."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__}>"


_JSON_DEPTH = 200  # orjson refuses nesting past 255 levels


def valid_text(text: str) -> str:
    """``text``, with each lone surrogate (an undecodable byte of an ``os.fsdecode`` name, a JSON
    escape of one) replaced by U+FFFD: what every UTF-8 encoder accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 joins a well-formed surrogate pair back into its character.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def jsonable(value: Any, depth: int = 0, *, strict: bool = False) -> Any:
    """``value`` with what orjson refuses made encodable: integers past 64 bits and keys that
    are not text as text, lone surrogates replaced (``valid_text``), nesting past
    ``_JSON_DEPTH`` and cycles as text. ``strict``: every value that is not a JSON type goes
    through ``json_default`` too (else orjson's own encoding, e.g. of dates, is kept).

    The second pass for the rare value ``orjson.dumps`` raised on (see ``dumps_json``).
    """
    kind = type(value)
    if isinstance(value, str):
        return valid_text(str(value))
    if kind is int:
        return value if -(1 << 63) <= value < 1 << 64 else str(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return _container(value, depth, strict)
    if strict and not (kind is float or kind is bool or value is None):
        return jsonable(json_default(value), depth + 1, strict=True)
    return value


def _container(value: Any, depth: int, strict: bool) -> Any:
    if depth >= _JSON_DEPTH:
        return _as_text(value)
    if isinstance(value, dict):
        return {_as_text(k): jsonable(v, depth + 1, strict=strict) for k, v in value.items()}
    return [jsonable(v, depth + 1, strict=strict) for v in value]


def _as_text(value: Any) -> str:
    if type(value) is str:
        return valid_text(value)
    text = json_default(value)
    return valid_text(text if isinstance(text, str) else str(text))


def dumps_json(value: Any, option: int, default: Callable[[Any], Any] = json_default) -> bytes:
    """``orjson.dumps`` that never fails on odd data (``jsonable``), ``json_default`` by default."""
    try:
        return orjson.dumps(value, default, option)
    except TypeError:  # orjson.JSONEncodeError
        pass

    def clean_default(obj: Any) -> Any:  # what ``default`` returns may hold bad text too
        return jsonable(default(obj), strict=True)

    try:
        return orjson.dumps(jsonable(value), clean_default, option)
    except TypeError:  # bad text inside an object orjson encodes itself (dataclass, enum)
        return orjson.dumps(jsonable(value, strict=True), clean_default, option)


_JSON_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def encode_records(records: Sequence[Record]) -> bytes:
    """NDJSON of records as they are (the spool's format, and the JSON exporters' base)."""
    dumps = orjson.dumps
    try:
        return b"".join([dumps(r, json_default, _JSON_OPTS) for r in records])
    except TypeError:  # a value orjson refuses: encode each record with the fallback
        return b"".join([dumps_json(r, _JSON_OPTS) for r in records])


def decode_records(data: bytes) -> list[Record]:
    """Records from NDJSON (``encode_records``'s output)."""
    loads = orjson.loads
    return [loads(line) for line in data.splitlines() if line]
