"""Multiprocess files: one per process, shared by its writers and readers; a read adds the other
processes' files to the live values, counters of every process, gauges of live ones only."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from obs_middleware._core.metrics import HistogramPoint, MetricSnapshot
from obs_middleware.exporters._prometheus_files import ProcessFiles, Snapshot


def snap(requests: float, active: float, hist_count: int) -> Snapshot:
    point = HistogramPoint((1.0, 10.0), (hist_count, 0, 0), 0.5 * hist_count, hist_count)
    return {
        "requests": MetricSnapshot("requests", "counter", "1", "", ("route",), {("/a",): requests}),
        "active": MetricSnapshot("active", "updown", "1", "", (), {(): active}),
        "latency": MetricSnapshot("latency", "histogram", "ms", "", (), {(): point}),
    }


def other_process(directory: Path, name: str, pid: int, values: Snapshot) -> None:
    files = ProcessFiles(str(directory))
    files.write(values)
    data = orjson.loads(Path(files.own_path()).read_bytes())
    data["pid"] = pid  # as that process wrote it
    Path(files.own_path()).unlink()
    (directory / name).write_bytes(orjson.dumps(data))


def test_writers_and_readers_of_a_process_share_its_file(tmp_path: Path) -> None:
    writer, reader = ProcessFiles(str(tmp_path)), ProcessFiles(str(tmp_path))
    assert writer.own_path() == reader.own_path()
    assert Path(writer.own_path()).name.startswith(f"obs-{os.getpid()}-")
    writer.write(snap(5, 1, 2))
    total = reader.merged(snap(5, 1, 2))  # its own file is the live values: not added again
    assert total["requests"].points == {("/a",): 5}


def test_a_read_sums_the_other_processes_and_their_gauges_while_they_live(tmp_path: Path) -> None:
    other_process(tmp_path, "obs-live.json", os.getppid(), snap(3, 2, 1))
    other_process(tmp_path, "obs-gone.json", 2**22 + 12345, snap(4, 7, 1))  # no such pid
    (tmp_path / "obs-torn.json").write_bytes(b"{not json")  # being replaced: skipped
    total = ProcessFiles(str(tmp_path)).merged(snap(5, 1, 2))
    assert total["requests"].points == {("/a",): 12}  # every process's count
    assert total["active"].points == {(): 3}  # live processes' gauges only
    (point,) = total["latency"].points.values()
    assert isinstance(point, HistogramPoint)
    assert (point.count, point.counts) == (4, (4, 0, 0))
