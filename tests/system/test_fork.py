"""``os.fork()`` under load: no child deadlocks, no record exported twice, no loss left uncounted.

The parent runs threads that finish spans and update metrics and one that reads metric
snapshots, all in loops, and forks several children while they run. Each child finishes its own
spans, flushes and leaves with ``os._exit``. Across parent and children, for each exporter:
every child exits in time, every span id is exported at most once, and the spans exported plus
those counted in ``obs.dropped`` are exactly the spans produced.

Then one test per kind of state a process holds at the fork, forked at the moment it matters:
core locks held by other threads, a file buffer, an HTTP response being read, a pooled
connection, an open transaction, traces held for printing, a listening port, a spool segment.
"""

from __future__ import annotations

import collections
import faulthandler
import gc
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core import cost, events
from obs_middleware._core import span as _span
from obs_middleware._core.config import Config, PipelineOptions, PricingOptions, SamplingOptions
from obs_middleware._core.metrics import http_active, http_duration, registry
from obs_middleware.exporters import MemoryExporter
from obs_middleware.testing.emulators.tinybird import TinybirdEmulator

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(autouse=True)
def _random_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real span ids (``random`` reseeds in each child), whatever an earlier test swapped in."""
    monkeypatch.setattr(_span, "randbits", random.getrandbits)


Configure = Callable[..., Config]

CHILD_TIMEOUT_S = 30.0  # generous: a child needs well under a second when nothing blocks it
CHILDREN = 5
CHILD_SPANS = 500
PRODUCERS = 4


# -- forking ---------------------------------------------------------------------------------------
def fork(body: Callable[[], None]) -> int:
    """Fork; the child runs ``body`` and exits 0, or 1 if it raised (traceback on stderr).

    A child that ``wait_all`` finds stuck prints every thread's stack on stderr (SIGUSR1).
    """
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        faulthandler.unregister(signal.SIGUSR1)
        raise
    if pid:
        faulthandler.unregister(signal.SIGUSR1)
        return pid
    code = 1
    try:
        body()
        code = 0
    except BaseException:
        import traceback  # noqa: PLC0415 - the child only

        traceback.print_exc(file=sys.__stderr__)
    finally:
        os._exit(code)


def wait_all(pids: list[int], timeout: float = CHILD_TIMEOUT_S) -> dict[int, int | None]:
    """Exit code of each child; None for a child still running after ``timeout`` (killed)."""
    deadline = time.monotonic() + timeout
    codes: dict[int, int | None] = {}
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                waiting.discard(pid)
        time.sleep(0.01)
    for pid in waiting:
        os.kill(pid, signal.SIGUSR1)  # where it is stuck, on stderr (see ``fork``)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes[pid] = None
    return codes


# -- load ------------------------------------------------------------------------------------------
class Load:
    """Threads finishing spans and updating metrics, and one reading snapshots, until stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.ids: list[list[int]] = [[] for _ in range(PRODUCERS)]
        self.threads = [threading.Thread(target=self._produce, args=(ids,)) for ids in self.ids]
        self.threads.append(threading.Thread(target=self._read))
        self.work = registry.counter("test.fork.work", ("process",))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _produce(self, ids: list[int]) -> None:
        n = 0
        while not self.stop.is_set():
            leave = http_active.enter(("GET",))
            with obs.span("load") as span:
                self.work.add(("parent",))
                http_duration.record(("GET", "/load", "2xx"), 1.0)
            next(leave)
            ids.append(span.span_id)
            n += 1
            if n % 5 == 0:
                time.sleep(0.001)  # a busy service, not a benchmark: leave CPU to the children

    def _read(self) -> None:
        while not self.stop.is_set():
            registry.snapshot()

    def produced(self) -> list[int]:
        return [i for ids in self.ids for i in ids]


def child_work(report: Path, local_ids: Callable[[], list[int]] | None) -> None:
    """A child's life: finish spans and update metrics, flush, write what it did to ``report``."""
    ids = []
    work = registry.counter("test.fork.work", ("process",))
    for i in range(CHILD_SPANS):
        with obs.span("child") as span:
            work.add(("child",))
            http_duration.record(("GET", "/child", "2xx"), 1.0)
        ids.append(span.span_id)
        if i % 50 == 0:
            registry.snapshot()
            time.sleep(0.01)  # batches go out while the parent and the other children send theirs
    flushed = obs.flush(20)
    snap = registry.snapshot()
    report.write_bytes(
        orjson.dumps(
            {
                "ids": ids,
                "flushed": flushed,
                "dropped": sum(snap["obs.dropped"].points.values()),
                "work": {k[0]: v for k, v in snap["test.fork.work"].points.items()},
                "routes": sorted(k[1] for k in snap["http.server.duration"].points),
                "local": local_ids() if local_ids is not None else [],
            }
        )
    )


# -- sinks: where each exporter's records land -----------------------------------------------------
class Receiver:
    """A loopback HTTP collector recording the span ids of every request ``decode`` accepts,
    with the path and the client port (one port, one connection) of each request. While
    ``down`` is set it answers 503.
    """

    def __init__(self, decode: Callable[[str, bytes], list[int]]) -> None:
        self.requests: list[tuple[str, int, list[int]]] = []
        self.down = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    ids = decode(self.path, body)
                    status = 503 if receiver.down.is_set() else 200
                except Exception:  # a torn or interleaved body: refused, as a collector would
                    ids, status = [], 400
                if status != 200:
                    ids = []
                with receiver.lock:
                    receiver.requests.append((self.path, self.client_address[1], ids))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def ids(self) -> list[int]:
        with self.lock:
            return [i for _, _, ids in self.requests for i in ids]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json_ids(path: str, body: bytes) -> list[int]:
    return [int(rec["span_id"], 16) for rec in json.loads(body)]


def _otlp_ids(path: str, body: bytes) -> list[int]:
    if path != "/v1/traces":
        return []  # metrics
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    return [
        int.from_bytes(span.span_id, "big")
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


class Sink:
    """One exporter under test: what to configure, and the span ids that reached its backend."""

    def __init__(
        self,
        exporter: Any,
        exported: Callable[[], list[int]],
        local: Callable[[], list[int]] | None = None,
    ) -> None:
        self.exporter = exporter
        self.exported = exported
        self.local = local  # ids a process keeps to itself (memory): reported by each child


@pytest.fixture(params=["jsonl", "http", "sqlite", "tinybird", "memory", "otlp"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    kind = request.param
    if kind == "jsonl":
        path = tmp_path / "out.jsonl"

        def lines() -> list[int]:
            text = path.read_text() if path.exists() else ""
            return [int(json.loads(line)["span_id"], 16) for line in text.splitlines()]

        yield Sink(f"jsonl:{path}", lines)
    elif kind == "sqlite":
        db = tmp_path / "obs.db"

        def rows() -> list[int]:
            with sqlite3.connect(db) as conn:
                return [int(r[0], 16) for r in conn.execute("SELECT span_id FROM records")]

        yield Sink(f"sqlite:{db}", rows)
    elif kind == "memory":
        memory = MemoryExporter()

        def records() -> list[int]:
            return [int(rec["span_id"], 16) for rec in memory.records]

        yield Sink(memory, lambda: [], records)
    elif kind == "tinybird":
        from obs_middleware.exporters.tinybird import TinybirdExporter  # noqa: PLC0415

        with TinybirdEmulator(requests_per_s=100_000) as tb:  # rate limits are not under test
            exporter = TinybirdExporter(token="test-token", host=tb.url)
            yield Sink(exporter, lambda: [int(r["span_id"], 16) for r in tb.rows("obs_events")])
    else:
        receiver = Receiver(_otlp_ids if kind == "otlp" else _json_ids)
        try:
            if kind == "otlp":
                pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
            yield Sink(f"{kind}:{receiver.url}", receiver.ids)
        finally:
            receiver.close()


def test_forking_under_load_never_deadlocks_duplicates_or_loses_uncounted(
    configured: Configure, sink: Sink, tmp_path: Path
) -> None:
    configured(
        exporters=[sink.exporter],
        pipeline=PipelineOptions(interval_s=0.02, batch_size=50, flush_on_sigterm=False),
    )
    pids: list[int] = []
    reports: dict[int, Path] = {}
    with Load() as load:
        time.sleep(0.2)  # the export worker is busy before the first fork
        for k in range(CHILDREN):
            report = tmp_path / f"child-{k}.json"
            pid = fork(lambda report=report: child_work(report, sink.local))
            pids.append(pid)
            reports[pid] = report
            time.sleep(0.03)
        codes = wait_all(pids)
    assert obs.flush(30)

    stuck = [pid for pid, code in codes.items() if code is None]
    assert not stuck, f"{len(stuck)} of {CHILDREN} children deadlocked"
    assert all(code == 0 for code in codes.values()), f"children failed: {codes}"
    children = [orjson.loads(reports[pid].read_bytes()) for pid in pids]
    assert all(child["flushed"] for child in children)
    # A child counts only its own work: the parent's values stay the parent's.
    assert all(child["work"] == {"child": CHILD_SPANS} for child in children)
    assert all(child["routes"] == ["/child"] for child in children)

    produced = load.produced() + [i for child in children for i in child["ids"]]
    assert len(set(produced)) == len(produced)  # distinct ids in every process
    exported = collections.Counter(sink.exported())
    if sink.local is not None:
        exported.update(sink.local())
        for child in children:
            exported.update(child["local"])
    twice = {i: n for i, n in exported.items() if n > 1}
    assert not twice, f"{len(twice)} spans exported more than once"
    assert set(exported) <= set(produced)
    parent_dropped = dict(registry.snapshot()["obs.dropped"].points)
    dropped = sum(parent_dropped.values()) + sum(child["dropped"] for child in children)
    assert len(exported) + dropped == len(produced), (
        f"{len(produced) - len(exported) - dropped} spans lost without a count"
    )
    # The backends are healthy: a fork must not cost a record either (a child sending on the
    # parent's connection, or finding the store locked by a transaction it inherited).
    assert dropped == 0, (parent_dropped, [child["dropped"] for child in children])


# -- locks a request thread can hold ---------------------------------------------------------------
def _hold(locks: list[Any]) -> Callable[[], None]:
    """Hold ``locks`` in another thread until the returned function is called."""
    held, release = threading.Event(), threading.Event()

    def body() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(60)
        for lock in reversed(locks):
            lock.release()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert held.wait(10)

    def done() -> None:
        release.set()
        thread.join(10)

    return done


def test_a_child_forked_while_other_threads_hold_every_core_lock_runs_normally(
    configured: Configure,
) -> None:
    memory = MemoryExporter()
    configured(exporters=[memory])
    counter = registry.counter("test.fork.locked", ("k",))
    counter.add(("parent",))
    with obs.span("parent.before"):
        pass
    assert obs.flush(5)
    locks = [
        counter._lock,
        http_duration._lock,
        registry._lock,
        events._lock,
        cost._lock,
        _setup._lock,
        memory._lock,
    ]
    release = _hold(locks)

    def child() -> None:
        counter.add(("child",))
        http_duration.record(("GET", "/child", "2xx"), 1.0)
        assert registry.snapshot()["test.fork.locked"].points == {("child",): 1}
        events.attach("test.fork", "child.", lambda name, fields: None)
        events.detach("test.fork")
        cost.table(PricingOptions(prices={"models": {}}))
        _setup.activate(_setup.current_config())  # takes the configuration lock
        with obs.span("child.work"):
            pass
        assert obs.flush(10)
        assert [r["name"] for r in memory.records] == ["child.work"]

    try:
        codes = wait_all([fork(child)])
    finally:
        release()
    assert list(codes.values()) == [0], "the child deadlocked" if None in codes.values() else ""
    assert registry.snapshot()["test.fork.locked"].points == {("parent",): 1}


def test_a_child_forked_while_other_threads_hold_the_integrations_locks_runs_normally(
    configured: Configure, tmp_path: Path
) -> None:
    """The locks integrations take on a request's path: SQLAlchemy's (the module's, when an
    engine is made; the engine's, on a statement's first sight and on pool connect/checkout),
    fal's (a submitted request remembered, then looked up), Modal's, ComfyUI's, the registry's."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    fal_client = pytest.importorskip("fal_client")
    from obs_middleware.integrations import _registry, modal  # noqa: PLC0415
    from obs_middleware.integrations import comfyui as obs_comfyui  # noqa: PLC0415
    from obs_middleware.integrations import fal as obs_fal  # noqa: PLC0415
    from obs_middleware.integrations import sqlalchemy as obs_sqlalchemy  # noqa: PLC0415
    from obs_middleware.integrations.comfyui import _tracking  # noqa: PLC0415
    from obs_middleware.integrations.sqlalchemy import _state  # noqa: PLC0415
    from obs_middleware.testing.emulators.fal import FalEmulator  # noqa: PLC0415

    memory = MemoryExporter()
    configured(exporters=[memory])
    obs_sqlalchemy.patch()
    obs_fal.patch()
    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'app.db'}", poolclass=sqlalchemy.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        with FalEmulator(queue_s=0.01, run_s=0.01) as emu, emu.use():
            assert obs.flush(5)
            locks = [
                _state.lock,
                _state.states[engine].lock,
                obs_fal._lock,
                modal._lock,
                _tracking.lock,
                _registry._lock,
            ]
            release = _hold(locks)

            def child() -> None:
                memory.records.clear()
                with obs.span("child.work"):
                    other = sqlalchemy.create_engine("sqlite://")  # instrumented as it is made
                    with other.connect() as conn:
                        assert conn.exec_driver_sql("SELECT 2").scalar() == 2
                    with engine.connect() as conn:  # a new connection, a statement never seen
                        assert conn.exec_driver_sql("SELECT 3").scalar() == 3
                    # The submit remembers its request, the get looks it up.
                    fal_client.submit("fal-ai/flux/dev", {"prompt": "x"}).get()
                modal.patch()
                modal.unpatch()
                obs_comfyui.unpatch()
                obs.instrument_all(only=["sqlalchemy"])
                assert obs.flush(10)
                assert sorted(r["name"] for r in memory.records) == [
                    "ai.request",
                    "ai.request",
                    "child.work",
                    "db.query",
                    "db.query",
                ]

            try:
                codes = wait_all([fork(child)])
            finally:
                release()
    finally:
        obs_fal.unpatch()
        obs_sqlalchemy.unpatch()
        engine.dispose()
    assert list(codes.values()) == [0], "the child deadlocked" if None in codes.values() else ""


# -- what each exporter holds at the fork ----------------------------------------------------------
def test_a_child_never_writes_the_parents_buffered_jsonl_records_again(
    configured: Configure, tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    seen = MemoryExporter()  # exports after jsonl: once it has the batch, jsonl wrote it
    configured(exporters=[f"jsonl:{path}", seen])
    for _ in range(10):
        with obs.span("parent"):
            pass
    deadline = time.monotonic() + 10
    while len(seen.records) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    def child() -> None:
        assert obs.flush(10)

    codes = wait_all([fork(child) for _ in range(3)])
    assert list(codes.values()) == [0, 0, 0]
    assert obs.flush(10)
    written = len(path.read_text().splitlines())
    assert written == 10, f"{written} records for 10 spans"


class HoldingCollector:
    """A loopback collector that answers the first request's headers, then holds its body until
    ``release`` is set; records each request's span names by client port (one port, one
    connection).
    """

    def __init__(self) -> None:
        self.holding, self.release = threading.Event(), threading.Event()
        self.batches: dict[int, list[list[str]]] = collections.defaultdict(list)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                names = [rec["name"] for rec in json.loads(body)]
                collector.batches[self.client_address[1]].append(names)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                if not collector.holding.is_set():
                    self.wfile.flush()
                    collector.holding.set()
                    collector.release.wait(30)
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_child_opens_its_own_http_connection_while_the_parent_reads_a_response(
    configured: Configure,
) -> None:
    from obs_middleware._delivery import DeliveryOptions  # noqa: PLC0415
    from obs_middleware.exporters.http import HttpExporter  # noqa: PLC0415

    collector = HoldingCollector()
    patient = DeliveryOptions(timeout_s=30, retry_budget_s=30)  # held, not timed out and retried
    try:
        configured(exporters=[HttpExporter(collector.url, delivery=patient)])
        with obs.span("parent.first"):
            pass
        assert collector.holding.wait(10)  # the parent's worker is reading the answer's body

        def child() -> None:
            with obs.span("child.work"):
                pass
            assert obs.flush(10)
            assert sum(registry.snapshot()["obs.dropped"].points.values()) == 0

        codes = wait_all([fork(child)])
        collector.release.set()
        with obs.span("parent.second"):
            pass
        assert obs.flush(10)
    finally:
        collector.close()
    assert list(codes.values()) == [0]
    # The parent kept its connection; the child's batch came on a connection of its own.
    assert sorted(collector.batches.values()) == [
        [["child.work"]],
        [["parent.first"], ["parent.second"]],
    ]


def test_a_child_never_takes_the_parents_pooled_otlp_connection(
    configured: Configure,
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    receiver = Receiver(_otlp_ids)
    try:
        configured(exporters=[f"otlp:{receiver.url}"])
        with obs.span("parent.first"):
            pass
        assert obs.flush(10)  # the parent's connection now waits, idle, in its pool

        def child() -> None:
            with obs.span("child.work"):
                pass
            assert obs.flush(10)

        codes = wait_all([fork(child)])
        with obs.span("parent.second"):
            pass
        assert obs.flush(10)
    finally:
        receiver.close()
    assert list(codes.values()) == [0]
    parent_first, child_work, parent_second = (
        port for path, port, _ in receiver.requests if path == "/v1/traces"
    )
    assert parent_second == parent_first  # the parent keeps its connection
    assert child_work != parent_first  # the child's request came on a connection of its own
    assert len(receiver.ids()) == 3


class Blocker:
    """An attribute whose text takes a while: the store's transaction is open meanwhile."""

    def __init__(self) -> None:
        self.inside = threading.Event()

    def __str__(self) -> str:
        self.inside.set()
        time.sleep(0.5)
        return "slow"


def test_a_child_forked_during_a_sqlite_transaction_writes_to_the_store(
    configured: Configure, tmp_path: Path
) -> None:
    db = tmp_path / "obs.db"
    configured(exporters=[f"sqlite:{db}"])
    with obs.span("parent.first"):
        pass
    blocker = Blocker()
    with obs.span("parent.slow", value=blocker):
        pass
    assert blocker.inside.wait(10)  # the worker inserted the first row and holds the write lock

    def child() -> None:
        with obs.span("child.work"):
            pass
        assert obs.flush(10)
        assert sum(registry.snapshot()["obs.dropped"].points.values()) == 0

    codes = wait_all([fork(child)])
    assert obs.flush(10)
    assert list(codes.values()) == [0]
    with sqlite3.connect(db) as conn:
        names = sorted(r[0] for r in conn.execute("SELECT name FROM records"))
    assert names == ["child.work", "parent.first", "parent.slow"]


class FdStream:
    """A text stream writing straight to a descriptor: no buffer for a child to inherit."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, text: str) -> int:
        return os.write(self.fd, text.encode())

    def flush(self) -> None:
        pass


def test_a_child_never_prints_the_traces_the_parents_console_holds(
    configured: Configure, tmp_path: Path
) -> None:
    from obs_middleware.exporters.console import ConsoleExporter  # noqa: PLC0415

    out = tmp_path / "console.txt"
    seen = MemoryExporter()
    configured(exporters=[ConsoleExporter(FdStream(out)), seen])
    with obs.span("parent.root"):
        with obs.span("parent.held"):
            pass
        deadline = time.monotonic() + 10  # the child span is exported, held until its root
        while not seen.records and time.monotonic() < deadline:
            time.sleep(0.01)

        def child() -> None:
            assert obs.flush(10)

        codes = wait_all([fork(child)])
    assert obs.flush(10)
    assert list(codes.values()) == [0]
    assert out.read_text().count("parent.held") == 1


def test_a_child_leaves_the_prometheus_port_to_the_parent(configured: Configure) -> None:
    pytest.importorskip("prometheus_client")
    from obs_middleware.exporters.prometheus import PrometheusExporter  # noqa: PLC0415

    exporter = PrometheusExporter(0, addr="127.0.0.1")
    port = exporter.port
    configured(exporters=[exporter])
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()

    def child() -> None:  # lives on (a worker) while the parent lets the port go
        os.write(ready_w, b"x")
        os.read(exit_r, 1)

    pid = fork(child)
    try:
        assert os.read(ready_r, 1) == b"x"
        exporter.shutdown()
        deadline = time.monotonic() + 10
        while True:  # the port is free once the parent's server closed: no child holds it
            try:
                socket.create_server(("127.0.0.1", port)).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "a child still holds the metrics port"
                time.sleep(0.05)
    finally:
        os.write(exit_w, b"x")
        codes = wait_all([pid])
        for fd in (ready_r, ready_w, exit_r, exit_w):
            os.close(fd)
    assert list(codes.values()) == [0]


def test_parent_and_child_spool_apart_and_every_record_is_replayed_once(tmp_path: Path) -> None:
    from obs_middleware._delivery import DeliveryOptions  # noqa: PLC0415
    from obs_middleware.exporters.http import HttpExporter  # noqa: PLC0415

    receiver = Receiver(_json_ids)
    receiver.down.set()
    spool = tmp_path / "spool"
    options = DeliveryOptions(
        max_attempts=1, breaker_failures=1, breaker_cooldown_s=0, spool_dir=str(spool)
    )
    exporter = HttpExporter(receiver.url, delivery=options)
    config = _setup.build_config(
        exporters=[exporter],
        pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
        sampling=SamplingOptions(traces_per_s=0),
    )
    registry.reset()
    try:
        with _setup.scoped(config):  # not ``configured``: the exporter is gone after the test
            with obs.span("parent.before"):
                pass
            deadline = time.monotonic() + 10  # exported, refused, spooled: the segment is open
            while not (spool.exists() and list(spool.glob("*.open"))):
                assert time.monotonic() < deadline
                time.sleep(0.01)

            def child() -> None:
                with obs.span("child.work"):
                    pass
                assert obs.flush(10)

            codes = wait_all([fork(child)])
            receiver.down.clear()
            with obs.span("parent.after"):
                pass
            assert obs.flush(10)
            dropped = sum(registry.snapshot()["obs.dropped"].points.values())
    finally:
        receiver.close()
        del exporter, config  # its spool leaves the process-wide gauges with it
        gc.collect()
        registry.reset()
    assert list(codes.values()) == [0]
    assert sorted(collections.Counter(receiver.ids()).values()) == [1, 1, 1]
    assert dropped == 0
    assert not list(spool.iterdir())


class BrokenAfterFork(MemoryExporter):
    name = "broken"

    def after_fork(self) -> None:
        raise RuntimeError("cannot reset")


def test_an_exporter_failing_after_fork_is_logged_and_the_child_exports_on(
    configured: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    broken, memory = BrokenAfterFork(), MemoryExporter()
    configured(exporters=[broken, memory])

    def child() -> None:
        warnings = [r.getMessage() for r in caplog.records if r.name == "obs_middleware"]
        assert warnings == ["obs-middleware: exporter 'broken' failed to reset after fork"]
        with obs.span("child.work"):
            pass
        assert obs.flush(10)
        assert [r["name"] for r in memory.records] == ["child.work"]
        assert [r["name"] for r in broken.records] == ["child.work"]

    assert list(wait_all([fork(child)]).values()) == [0]
