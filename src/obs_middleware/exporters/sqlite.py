"""SQLite store: the embedded default for one machine, read by ``obs report`` and ``obs dashboard``.

One table of records in the unified schema (docs/ARCHITECTURE.md): the fixed keys as columns,
a few hot attributes extracted into their own columns for filtering (route, statement, provider,
model, cost…), the rest as one JSON ``attributes`` column; a second table keeps periodic samples
of the counters and gauges (pool usage, ``obs.dropped``), which no record carries. WAL mode, one
transaction per batch from the export worker, retention by age and by size.

The store path defaults to ``$OBS_STORE`` or ``obs.db`` in the working directory.
"""

from __future__ import annotations

import calendar
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .._core.metrics import registry
from .._json import dumps_json, valid_text
from .._record import FIXED_KEYS, Record

__all__ = [
    "COLUMNS",
    "EXTRACTED",
    "SqliteExporter",
    "connect",
    "default_path",
    "delete_service",
    "row_to_record",
]

SCHEMA_VERSION = 1

# Attribute key -> column. Kept out of the JSON column when set, restored by ``row_to_record``.
EXTRACTED: dict[str, str] = {
    "span.kind": "span_kind",
    "http.method": "http_method",
    "http.route": "http_route",
    "http.status_code": "http_status_code",
    "db.statement": "db_statement",
    "ai.provider": "ai_provider",
    "ai.model": "ai_model",
    "cost.usd": "cost_usd",
    "job.state": "job_state",
}
# Record columns in table order; ``start_us`` (epoch µs) sorts and filters by time.
COLUMNS: tuple[str, ...] = (
    *(k for k in FIXED_KEYS),
    "start_us",
    *EXTRACTED.values(),
    "attributes",
)
_FIXED = frozenset(FIXED_KEYS)
_INSERT = f"INSERT INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    {", ".join(COLUMNS)}
);
CREATE INDEX IF NOT EXISTS records_start ON records (start_us);
CREATE INDEX IF NOT EXISTS records_trace ON records (trace_id);
CREATE INDEX IF NOT EXISTS records_service_start ON records (service, start_us);
CREATE INDEX IF NOT EXISTS records_route ON records (http_route) WHERE http_route IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_statement ON records (db_statement)
    WHERE db_statement IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_provider ON records (ai_provider) WHERE ai_provider IS NOT NULL;
CREATE TABLE IF NOT EXISTS metrics (
    ts_us INTEGER NOT NULL,
    service TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_name_ts ON metrics (name, ts_us);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_JSON_OPTS = orjson.OPT_NON_STR_KEYS


def default_path() -> str:
    """``$OBS_STORE`` if set, else ``obs.db`` in the working directory."""
    return os.environ.get("OBS_STORE") or "obs.db"


def connect(
    path: str | os.PathLike[str] | None = None, *, readonly: bool = True
) -> sqlite3.Connection:
    """Open the store (read-only by default) with rows as ``sqlite3.Row``.

    Raises ``FileNotFoundError`` when a read-only store does not exist.
    """
    target = os.fspath(path) if path is not None else default_path()
    if readonly:
        if not os.path.exists(target):
            raise FileNotFoundError(target)
        try:
            # Read-write but query-only: when the last connection closes, SQLite can then remove
            # the -wal/-shm files, which a ``mode=ro`` connection would leave behind.
            conn = sqlite3.connect(target, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.OperationalError:  # a store we may not write: read it as it is
            conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(target, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


def delete_service(path: str | os.PathLike[str], service: str) -> int:
    """Delete the records and metric samples of ``service`` from a store; returns the count."""
    if not os.path.exists(path):
        return 0
    conn = connect(path, readonly=False)
    try:
        with conn:
            deleted = conn.execute("DELETE FROM records WHERE service = ?", (service,)).rowcount
            conn.execute("DELETE FROM metrics WHERE service = ?", (service,))
        return deleted
    finally:
        conn.close()


def row_to_record(row: sqlite3.Row | Sequence[Any], columns: Sequence[str] = COLUMNS) -> Record:
    """Rebuild the exported record from a ``records`` row (``SELECT <COLUMNS>``)."""
    values = dict(zip(columns, row, strict=True))
    rec: Record = {key: values[key] for key in FIXED_KEYS}
    attributes = values.get("attributes")
    if attributes:
        rec.update(orjson.loads(attributes))
    for key, column in EXTRACTED.items():
        value = values.get(column)
        if value is not None:
            rec[key] = value
    return rec


class _EpochUs:
    """RFC 3339 (``…T12:00:00.123456Z``) to epoch µs, caching the per-second prefix."""

    __slots__ = ("prefix", "seconds")

    def __init__(self) -> None:
        self.prefix = ""
        self.seconds = 0

    def __call__(self, stamp: str | None) -> int | None:
        if not stamp:
            return None
        prefix = stamp[:19]
        if prefix != self.prefix:
            self.seconds = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
            self.prefix = prefix
        return self.seconds * 1_000_000 + int(stamp[20:26] or 0)


def _valid_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(valid_text(v) if isinstance(v, str) else v for v in row)


class SqliteExporter:
    """Write records to a SQLite file in WAL mode, one transaction per batch.

    ``max_age_s`` deletes records older than that; ``max_bytes`` deletes the oldest records while
    the data (not counting free pages, which SQLite reuses) exceeds that size; None disables
    either. Every ``metrics_interval_s`` (and on flush) the counters and gauges of the metrics
    registry are sampled into the ``metrics`` table. Everything runs on the export worker.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_age_s: float | None = 7 * 86_400,
        max_bytes: int | None = 512 * 2**20,
        metrics_interval_s: float = 10.0,
    ) -> None:
        self.path = os.fspath(path) if path is not None else default_path()
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.metrics_interval_s = metrics_interval_s
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # A connection inherited over fork() must never be used or closed by the child.
        self._abandoned: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # held while the store is used: a fork waits for it
        _exporters.add(self)
        self._epoch_us = _EpochUs()
        self._service: str | None = None
        self._last_metrics = -float("inf")
        self._last_age_check = -float("inf")

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid != os.getpid():
            self._abandoned.append(self._conn)
            self._conn = None
        if self._conn is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            conn = connect(self.path, readonly=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.execute("PRAGMA busy_timeout=5000")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def export(self, records: Sequence[Record]) -> None:
        """Insert one batch in one transaction, then apply retention and sample metrics if due."""
        if not records:
            return
        with self._lock:
            conn = self._db()
            try:
                with conn:
                    conn.executemany(_INSERT, self._rows(records))
            except UnicodeEncodeError:  # text SQLite cannot take as UTF-8 (lone surrogates)
                with conn:  # the first try was rolled back
                    conn.executemany(_INSERT, map(_valid_row, self._rows(records)))
            self._service = records[-1].get("service")
            now = time.monotonic()
            if now - self._last_metrics >= self.metrics_interval_s:
                self._sample_metrics(conn, now)
            self._retain(conn, now)

    def _rows(self, records: Iterable[Record]) -> Iterable[tuple[Any, ...]]:
        epoch_us = self._epoch_us
        extracted = EXTRACTED
        fixed = _FIXED
        for rec in records:
            attrs = {
                k: v for k, v in rec.items() if k not in fixed and (v is None or k not in extracted)
            }
            yield (
                *(rec.get(k) for k in FIXED_KEYS),
                epoch_us(rec.get("start")),
                *(rec.get(k) for k in extracted),
                dumps_json(attrs, _JSON_OPTS).decode() if attrs else None,
            )

    def _sample_metrics(self, conn: sqlite3.Connection, now: float) -> None:
        self._last_metrics = now
        ts_us = time.time_ns() // 1000
        rows = []
        for snap in registry.snapshot().values():
            if snap.kind == "histogram":  # percentiles come exactly from the records instead
                continue
            for labels, value in snap.points.items():
                assert isinstance(value, float | int)
                labels_json = dumps_json(dict(zip(snap.label_names, labels, strict=False)), 0)
                rows.append(
                    (ts_us, self._service, snap.name, snap.kind, labels_json.decode(), value)
                )
        if rows:
            with conn:
                conn.executemany(
                    "INSERT INTO metrics (ts_us, service, name, kind, labels, value)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )

    def _retain(self, conn: sqlite3.Connection, now: float) -> None:
        if self.max_age_s is not None and now - self._last_age_check >= 60:
            self._last_age_check = now
            cutoff = (time.time() - self.max_age_s) * 1_000_000
            with conn:
                conn.execute("DELETE FROM records WHERE start_us < ?", (cutoff,))
                conn.execute("DELETE FROM metrics WHERE ts_us < ?", (cutoff,))
        if self.max_bytes is not None:
            while self._used_bytes(conn) > self.max_bytes:
                count = conn.execute("SELECT count(*) FROM records").fetchone()[0]
                if not count:
                    break
                with conn:  # oldest tenth by insertion order: a few large deletes, not many small
                    conn.execute(
                        "DELETE FROM records WHERE id IN"
                        " (SELECT id FROM records ORDER BY id LIMIT ?)",
                        (max(count // 10, 1),),
                    )

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def flush(self) -> None:
        """Sample metrics now (records are committed batch by batch)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._conn is not None:
            self._sample_metrics(self._db(), time.monotonic())

    def after_fork(self) -> None:
        """In a forked child: abandon the parent's connection; the child opens its own."""
        if self._conn is not None:
            self._abandoned.append(self._conn)
            self._conn = None

    def shutdown(self) -> None:
        """Sample metrics a last time, checkpoint the WAL and close."""
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                return
            self._flush()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
                self._conn = None


# SQLite keeps each file's lock state in process memory, which a child inherits: forked in the
# middle of a transaction, the child would find the store locked for ever by a connection that
# never commits there. So a fork waits for the store to be idle (one batch at most), as
# ``logging`` makes it wait for its handlers.
_exporters: weakref.WeakSet[SqliteExporter] = weakref.WeakSet()
_held: list[SqliteExporter] = []


def _before_fork() -> None:
    for exporter in list(_exporters):
        exporter._lock.acquire()
        _held.append(exporter)


def _after_fork() -> None:
    for exporter in _held:
        exporter._lock.release()
    _held.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
