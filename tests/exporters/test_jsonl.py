"""JSON lines exporter: one JSON object per line, appended, non-JSON values as text."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

import obs_middleware as obs
from obs_middleware._core.config import Config
from obs_middleware._core.metrics import registry
from obs_middleware.exporters import JsonlExporter

from ._identity import identity, records, stack_ok

Configure = Callable[..., Config]


def read_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_writes_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    exporter = JsonlExporter(path)
    exporter.export([{"type": "span", "name": "a"}, {"type": "event", "name": "b"}])
    exporter.export([{"type": "span", "name": "c", "nested": {"k": [1, 2]}}])
    exporter.shutdown()
    assert read_lines(path) == [
        {"type": "span", "name": "a"},
        {"type": "event", "name": "b"},
        {"type": "span", "name": "c", "nested": {"k": [1, 2]}},
    ]


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"old": true}\n')
    exporter = JsonlExporter(str(path))
    exporter.export([{"new": True}])
    exporter.shutdown()
    assert read_lines(path) == [{"old": True}, {"new": True}]


def test_values_json_cannot_encode_are_written_as_text(tmp_path: Path) -> None:
    class Custom:
        def __str__(self) -> str:
            return "custom!"

    path = tmp_path / "out.jsonl"
    exporter = JsonlExporter(path)
    exporter.export(
        [{"tuple": (1, 2), "set": {"x"}, "decimal": decimal.Decimal("1.5"), "obj": Custom()}]
    )
    exporter.shutdown()
    assert read_lines(path) == [{"tuple": [1, 2], "set": ["x"], "decimal": "1.5", "obj": "custom!"}]


def test_a_value_orjson_refuses_does_not_lose_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    exporter = JsonlExporter(path)
    exporter.export([{"name": "a"}, {"name": "b", "account": 1 << 70}, {"name": "c"}])
    exporter.shutdown()
    assert read_lines(path) == [
        {"name": "a"},
        {"name": "b", "account": str(1 << 70)},
        {"name": "c"},
    ]


def test_flush_makes_written_lines_visible(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    exporter = JsonlExporter(path)
    exporter.export([{"n": 1}])
    exporter.flush()
    assert read_lines(path) == [{"n": 1}]
    exporter.shutdown()
    exporter.shutdown()  # idempotent


def test_stdout_when_no_path(capfd) -> None:
    exporter = JsonlExporter()
    exporter.export([{"n": 1}])
    exporter.flush()
    exporter.shutdown()
    assert capfd.readouterr().out == '{"n":1}\n'


def test_configured_by_name_writes_span_records(configured: Configure, tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    configured(exporters=[f"jsonl:{path}"])
    with obs.span("a"), obs.span("b"):
        obs.emit("e")
    assert obs.shutdown(5)
    records = read_lines(path)
    assert [r["name"] for r in records] == ["e", "b", "a"]
    assert [r["type"] for r in records] == ["event", "span", "span"]


def test_every_line_carries_the_process_identity_and_errors_their_stack_trace(tmp_path) -> None:

    path = tmp_path / "out.jsonl"
    exporter = JsonlExporter(path)
    exporter.export(records())
    exporter.shutdown()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(lines) == 2
    assert all(line.items() >= identity().items() for line in lines)
    assert stack_ok(lines[0]["exception.stacktrace"]) and "exception.stacktrace" not in lines[1]


def test_a_missing_directory_warns_once_then_counts_every_dropped_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "not-yet" / "out.jsonl"
    with pytest.warns(UserWarning, match="does not exist") as seen:
        exporter = JsonlExporter(path)
    before = dropped_unwritable()
    exporter.export([{"name": "a"}, {"name": "b"}])
    exporter.export([{"name": "c"}])
    assert dropped_unwritable() - before == 3
    assert len(seen) == 1
    assert caplog.records == []  # no traceback, no second warning
    path.parent.mkdir()  # the directory appears (a volume mounted late): export resumes
    exporter.export([{"name": "d"}])
    exporter.shutdown()
    assert read_lines(path) == [{"name": "d"}]


def test_a_file_that_cannot_be_opened_logs_once_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "out.jsonl").mkdir()  # a directory where the file should be: open() fails
    exporter = JsonlExporter(tmp_path / "out.jsonl")
    before = dropped_unwritable()
    exporter.export([{"name": "a"}])
    exporter.export([{"name": "b"}])
    assert dropped_unwritable() - before == 2
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]


def dropped_unwritable() -> float:
    return dict(registry.snapshot()["obs.dropped"].points).get(("unwritable:jsonl",), 0.0)
