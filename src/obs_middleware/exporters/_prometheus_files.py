"""Multiprocess mode's files: each process writes its metric snapshot to one file of the folder
the workers share, and a scrape adds the others' files to its own live values (gauges of live
processes only). One file per process, named by its pid and instance id (``_record``), shared by
every exporter and ``metrics_app()`` of the process, so that none counts the process twice.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from .._core.metrics import HistogramPoint, MetricSnapshot
from .._json import dumps_json
from .._record import instance_id

__all__ = ["ProcessFiles", "Snapshot"]

Snapshot = dict[str, MetricSnapshot]


def _dump(snapshot: Snapshot) -> bytes:
    out: dict[str, Any] = {}
    for name, m in snapshot.items():
        points = [
            [list(labels), [p.counts, p.sum, p.count] if isinstance(p, HistogramPoint) else p]
            for labels, p in m.points.items()
        ]
        bounds = next(
            (list(p.bounds) for p in m.points.values() if isinstance(p, HistogramPoint)), []
        )
        out[name] = [m.kind, m.unit, m.description, list(m.label_names), bounds, points]
    return dumps_json({"pid": os.getpid(), "metrics": out}, 0)


def _load(data: bytes) -> tuple[int, Snapshot]:
    doc = orjson.loads(data)
    snap: Snapshot = {}
    for name, (kind, unit, description, label_names, bounds, points) in doc["metrics"].items():
        values: dict[tuple[str, ...], float | HistogramPoint] = {}
        for labels, value in points:
            if kind == "histogram":
                counts, total, count = value
                values[tuple(labels)] = HistogramPoint(tuple(bounds), tuple(counts), total, count)
            else:
                values[tuple(labels)] = value
        snap[name] = MetricSnapshot(name, kind, unit, description, tuple(label_names), values)
    return int(doc["pid"]), snap


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _merge(into: Snapshot, other: Snapshot, gauges: bool) -> None:
    for name, m in other.items():
        if m.kind in ("updown", "gauge") and not gauges:
            continue
        mine = into.get(name)
        if mine is None:
            into[name] = MetricSnapshot(
                m.name, m.kind, m.unit, m.description, m.label_names, dict(m.points)
            )
            continue
        for labels, value in m.points.items():
            have = mine.points.get(labels)
            if have is None:
                mine.points[labels] = value
            elif isinstance(have, HistogramPoint) and isinstance(value, HistogramPoint):
                if have.bounds == value.bounds:
                    mine.points[labels] = HistogramPoint(
                        have.bounds,
                        tuple(a + b for a, b in zip(have.counts, value.counts, strict=True)),
                        have.sum + value.sum,
                        have.count + value.count,
                    )
            elif not isinstance(have, HistogramPoint) and not isinstance(value, HistogramPoint):
                mine.points[labels] = have + value


class ProcessFiles:
    """One file per process in the directory the workers share; reads the sum of all."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._pid = -1
        self._path = ""

    def own_path(self) -> str:
        """The file of this process: one for every exporter and ``metrics_app()`` of the process
        (named by its instance id, new in a forked worker), so that none counts it twice."""
        pid = os.getpid()
        if pid != self._pid:  # a forked worker writes its own file, never its parent's
            self._pid = pid
            self._path = os.path.join(self.directory, f"obs-{pid}-{instance_id()}.json")
        return self._path

    def write(self, snapshot: Snapshot) -> None:
        path = self.own_path()
        tmp = path + ".tmp"
        try:
            f = open(tmp, "wb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            if not os.path.isdir(self.directory):  # removed once the app exited (``obs run``)
                return
            raise
        with f:
            f.write(_dump(snapshot))
        os.replace(tmp, path)

    def merged(self, own: Snapshot) -> Snapshot:
        total: Snapshot = {}
        _merge(total, own, gauges=True)
        mine = os.path.basename(self.own_path())
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json") or name == mine:
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    pid, snap = _load(f.read())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            _merge(total, snap, gauges=_alive(pid))
        return total
