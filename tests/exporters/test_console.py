"""Console exporter: one indented tree per trace, printed once the root has arrived."""

from __future__ import annotations

import io

import pytest

import obs_middleware as obs
from obs_middleware._record import Record
from obs_middleware.exporters import ConsoleExporter
from obs_middleware.testing import Capture

from ._identity import identity, records, stack_ok

HEADER = (
    "trace 00000000000000000000000000000001  host.name=test-host service.instance.id=" + "0" * 16
)


def request_trace(cap: Capture) -> list[Record]:
    with obs.span("GET /items/{id}", _kind="server") as s:
        s.set(**{"http.method": "GET", "http.route": "/items/{id}", "http.status_code": 200})
        obs.set_user("u1")
        with obs.span("db.query", **{"db.table": "items"}):
            pass
        obs.emit("cache.miss", key="k")
        with pytest.raises(TimeoutError), obs.span("ai.generate", model="sdxl"):
            raise TimeoutError("slow")
    return cap.records


def render(records: list[Record], **kw: bool) -> str:
    out = io.StringIO()
    exporter = ConsoleExporter(out, **kw)
    exporter.export(records)
    exporter.flush()
    return out.getvalue()


def test_prints_a_trace_as_a_tree(obs_capture: Capture) -> None:
    assert render(request_trace(obs_capture)) == (
        HEADER + "\n"
        "└─ GET /items/{id}  6.000 ms  user=u1  http.status_code=200\n"
        "   ├─ db.query  1.000 ms  user=u1  db.table=items\n"
        "   ├─ • cache.miss  user=u1  key=k\n"
        "   └─ ai.generate  1.000 ms  [error: TimeoutError]  user=u1  model=sdxl\n"
        f"        ! {__file__}:29 in request_trace\n"
    )


def test_attributes_false_prints_names_statuses_and_durations(obs_capture: Capture) -> None:
    assert render(request_trace(obs_capture), attributes=False) == (
        HEADER + "\n"
        "└─ GET /items/{id}  6.000 ms  user=u1\n"
        "   ├─ db.query  1.000 ms  user=u1\n"
        "   ├─ • cache.miss  user=u1\n"
        "   └─ ai.generate  1.000 ms  [error: TimeoutError]  user=u1\n"
    )


def test_children_are_held_until_their_root_arrives(obs_capture: Capture) -> None:
    records = request_trace(obs_capture)
    root = [r for r in records if r["type"] == "span" and r["parent_id"] is None]
    children = [r for r in records if r not in root]
    out = io.StringIO()
    exporter = ConsoleExporter(out)
    exporter.export(children)
    assert out.getvalue() == ""
    exporter.export(root)
    assert out.getvalue() == render(records)


def test_orphans_are_printed_after_two_batches(obs_capture: Capture) -> None:
    records = request_trace(obs_capture)
    children = [r for r in records if r["parent_id"] is not None]
    out = io.StringIO()
    exporter = ConsoleExporter(out)
    exporter.export(children)
    exporter.export([])
    assert out.getvalue() == ""
    exporter.export([])
    assert out.getvalue().startswith(HEADER + "\n")
    assert "db.query" in out.getvalue()


def test_flush_prints_what_is_held(obs_capture: Capture) -> None:
    records = request_trace(obs_capture)
    out = io.StringIO()
    exporter = ConsoleExporter(out)
    exporter.export([r for r in records if r["name"] == "db.query"])
    exporter.shutdown()
    assert out.getvalue() == (HEADER + "\n└─ db.query  1.000 ms  user=u1  db.table=items\n")


def test_event_outside_a_trace_prints_on_its_own_line(obs_capture: Capture) -> None:
    obs.emit("startup", version="1")
    assert render(obs_capture.records) == "• startup  version=1\n"


def test_trace_header_names_the_identity_and_a_failed_span_shows_its_frames() -> None:

    out = io.StringIO()
    ConsoleExporter(out).export(records())
    header = out.getvalue().splitlines()[0]
    assert header.endswith("  " + " ".join(f"{k}={v}" for k, v in identity().items()))
    frames = [line.split("! ", 1)[1] for line in out.getvalue().splitlines() if "! " in line]
    assert stack_ok("\n".join(frames))


def test_a_log_event_prints_its_level_logger_and_message(obs_capture: Capture) -> None:
    obs.emit(
        "log",
        **{
            "log.level": "WARNING",
            "log.logger": "app",
            "log.message": "disk almost full",
            "code.line.number": 7,
        },
    )
    assert (
        render(obs_capture.records) == "• log WARNING app: disk almost full  code.line.number=7\n"
    )
