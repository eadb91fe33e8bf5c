"""Fault injection: 60 s of steady traffic through an instrumented ASGI app while the collector
goes down, hangs, answers 500 and resets connections.

Two HTTP exporters receive the same records: one with the disk spool, one without. Checked:
with the spool every record arrives exactly once after recovery; without it, what did not arrive
equals what ``obs.dropped`` counted for it; requests wait no longer during outages (p99 of each
request's wall time minus its thread's CPU time, within 5 % of the healthy phases; phases
alternate every 5 s, so load from elsewhere on the machine hits both alike), and so does their
whole p99 latency (plus 100 µs for this machine's noise); memory stays bounded; and a process
exiting with its backend down or hung finishes its shutdown within 2 s. The collector is a
separate process, as a real one is.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions, SamplingOptions
from obs_middleware._core.metrics import registry
from obs_middleware._delivery import DeliveryOptions
from obs_middleware.exporters.http import HttpExporter

PHASE_S = 5.0
PHASES = ["up", "down", "up", "hang", "up", "error", "up", "reset", "up", "hang", "up", "error"]
RATE = 250  # requests/s, 2 spans each
LONG = os.environ.get("OBS_FAULT_SECONDS")  # shorten locally: OBS_FAULT_SECONDS=12


# The collector runs in its own process, as a real one would: its threads, JSON parsing and
# garbage must not be charged to the instrumented app's GIL, GC and memory. Commands on stdin: a
# mode (up, down, hang, error, reset), answered "ok"; "stats", answered with received, unique
# and most repeated counts of span ids as JSON.
_COLLECTOR = """
import json, socket, struct, sys, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = "up"
seen = Counter()
lock = threading.Lock()
port = int(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if mode == "hang":
            deadline = time.monotonic() + 30
            while mode == "hang" and time.monotonic() < deadline:
                time.sleep(0.05)
            self.close_connection = True  # the client gave up long ago
            return
        if mode in ("reset", "down"):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        status = 500 if mode == "error" else 200
        if status == 200:
            ids = [r["span_id"] for r in json.loads(body)]
            with lock:
                seen.update(ids)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def listen():
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


server = listen()
for line in sys.stdin:
    command = line.strip()
    if command == "stats":
        with lock:
            values = list(seen.values())
        print(json.dumps([sum(values), len(values), max(values, default=0)]), flush=True)
        continue
    if command == "down" and server is not None:
        server.shutdown()
        server.server_close()
        server = None
    elif command != "down" and server is None:
        server = listen()
    mode = command
    print("ok", flush=True)
"""


class FlakyCollector:
    """A JSON-batch collector process whose behaviour the test switches: up, down, hang, error,
    reset."""

    def __init__(self) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _COLLECTOR, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.set("up")  # answered once it listens

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def set(self, mode: str) -> None:
        assert self._ask(mode).strip() == "ok"

    def stats(self) -> tuple[int, int, int]:
        """Span ids received, distinct span ids, and the most times one id arrived."""
        received, unique, most = json.loads(self._ask("stats"))
        return received, unique, most

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_app() -> obs.ObsMiddleware:
    async def work(request):
        with obs.span("work", step=1):
            pass
        return PlainTextResponse("ok")

    return obs.ObsMiddleware(Starlette(routes=[Route("/work", work)]))


Phase = tuple[str, list[int], list[int]]


async def drive(app, seconds: float, on_phase) -> tuple[list[Phase], int]:
    """Call ``app`` at RATE per second; requests made, and per phase its mode, each request's
    latency and its wait (latency minus the thread's CPU time for it), in ns."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/work", "raw_path": b"/work", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"app")], "server": ("app", 80),
    }  # fmt: skip

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    phases: list[Phase] = []
    start = time.perf_counter()
    n = 0
    while True:
        now = time.perf_counter() - start
        if now >= seconds:
            return phases, n
        if int(now // PHASE_S) >= len(phases):
            mode = PHASES[len(phases) % len(PHASES)]
            on_phase(mode)
            phases.append((mode, [], []))
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        await app(dict(scope), receive, send)
        wall = time.perf_counter_ns() - t0
        phases[-1][1].append(wall)
        phases[-1][2].append(wall - (time.thread_time_ns() - c0))
        n += 1
        delay = start + n / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


def p99(values: list[int]) -> float:
    """99th percentile in µs."""
    values = sorted(values)
    return values[int(len(values) * 0.99)] / 1000


def dropped_for(name: str) -> float:
    points = registry.snapshot()["obs.dropped"].points
    return sum(v for (reason,), v in points.items() if reason.endswith(":" + name))


def test_outages_lose_nothing_with_the_spool_and_count_every_loss_without(tmp_path):
    spooled_backend, lossy_backend = FlakyCollector(), FlakyCollector()
    delivery = {
        "timeout_s": 1.0, "retry_budget_s": 1.0, "max_attempts": 2, "backoff_s": 0.05,
        "breaker_failures": 3, "breaker_cooldown_s": 1.0,
    }  # fmt: skip
    spooled = HttpExporter(
        spooled_backend.url,
        name="spooled",
        delivery=DeliveryOptions(**delivery, spool_dir=str(tmp_path / "spool")),
    )
    lossy = HttpExporter(
        lossy_backend.url, name="lossy", delivery=DeliveryOptions(**delivery, spool_dir=None)
    )
    registry.reset()
    options = PipelineOptions(queue_size=100_000, interval_s=0.2, flush_on_sigterm=False)
    every = SamplingOptions(traces_per_s=0)
    config = _setup.build_config(exporters=[spooled, lossy], pipeline=options, sampling=every)
    app = make_app()
    seconds = float(LONG) if LONG else PHASE_S * len(PHASES)
    memory: list[float] = []

    def on_phase(mode: str) -> None:
        memory.append(rss_mb())
        spooled_backend.set(mode)
        lossy_backend.set(mode)

    try:
        with _setup.scoped(config, shutdown_timeout=5):
            gc.collect()
            phases, requests = asyncio.run(drive(app, seconds, on_phase))
            on_phase("up")
            sent = requests * 2
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and spooled_backend.stats()[0] < sent:
                obs.flush(10)
                time.sleep(0.5)
            obs.flush(10)
            pipeline_drops = {
                reason: v
                for (reason,), v in registry.snapshot()["obs.dropped"].points.items()
                if ":" not in reason
            }
            lossy_dropped = dropped_for("lossy")
            spooled_stats, lossy_stats = spooled_backend.stats(), lossy_backend.stats()
            report = {
                "requests": requests,
                "records": sent,
                "spooled_received": spooled_stats[0],
                "spooled_unique": spooled_stats[1],
                "lossy_received": lossy_stats[0],
                "lossy_dropped": lossy_dropped,
                "p99_healthy_us": p99([x for mode, v, _ in phases if mode == "up" for x in v]),
                "p99_outage_us": p99([x for mode, v, _ in phases if mode != "up" for x in v]),
                "p99_wait_healthy_us": p99([x for mode, _, w in phases if mode == "up" for x in w]),
                "p99_wait_outage_us": p99([x for mode, _, w in phases if mode != "up" for x in w]),
                "p99_by_phase_us": [(mode, round(p99(v), 1)) for mode, v, _ in phases if v],
                "rss_mb": memory,
            }
            print(json.dumps(report))
    finally:
        spooled_backend.close()
        lossy_backend.close()

    assert pipeline_drops == {}
    # Spool on: every record exactly once.
    assert report["spooled_unique"] == sent
    assert spooled_stats[2] == 1
    assert dropped_for("spooled") == 0
    # Spool off: losses happened and every one of them is counted.
    assert lossy_stats[2] == 1
    assert 0 < lossy_dropped == sent - report["lossy_received"]
    # Request latency does not feel the outages. What an outage could add is waiting (a blocking
    # queue, a lock held across I/O, the GIL held by a busy worker), which would cost
    # milliseconds to seconds: p99 waits (wall minus the thread's CPU) within 5 % (+50 µs).
    # Whole p99 latencies within 5 % too, plus 100 µs for this machine's noise: a healthy 5 s
    # phase's p99 alone swings by ±30 % on 2 shared cores, and pooled outage/healthy ratios read
    # 0.87-1.14 over seven runs. (With the collector in this process, its threads and JSON garbage
    # made the request thread collect more often: 1.02-1.19.)
    assert report["p99_wait_outage_us"] <= report["p99_wait_healthy_us"] * 1.05 + 50, report
    assert report["p99_outage_us"] <= report["p99_healthy_us"] * 1.05 + 100, report
    # Memory stays bounded: no growth with the outage count (the spool is on disk).
    assert max(memory) - min(memory) < 64, memory


_EXITING = """
import sys, time
import obs_middleware as obs
from obs_middleware._delivery import DeliveryOptions
from obs_middleware.exporters.http import HttpExporter
exporter = HttpExporter(sys.argv[1], delivery=DeliveryOptions(spool_dir=sys.argv[2]))
every = obs.SamplingOptions(traces_per_s=0)
obs.configure(service="exit-test", exporters=[exporter], sampling=every)
for i in range(2000):
    with obs.span("work"):
        pass
print(time.monotonic(), flush=True)
"""


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_exit_with_the_backend_down_or_hung_takes_at_most_2_s(tmp_path, mode):
    backend = FlakyCollector()
    backend.set(mode)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_EXITING), backend.url, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        script_done = float(proc.stdout.readline())
        proc.wait(30)
        exited = time.monotonic()
    finally:
        backend.close()
    assert proc.returncode == 0
    print(f"exit took {exited - script_done:.3f} s ({mode})")
    assert exited - script_done <= 2.0
