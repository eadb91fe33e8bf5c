"""JSON encoding: never fails on what orjson refuses, lone surrogates replaced."""

from __future__ import annotations

import dataclasses
import enum
import os

import orjson

from obs_middleware._json import dumps_json, encode_records, valid_text


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
