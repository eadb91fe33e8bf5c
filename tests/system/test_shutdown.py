"""The shutdown matrix: every way a process ends, by backend (healthy, hung, down) and spool.

Each case is a real process (``_shutdown_child.py``) that makes 2,000 spans, one batch of them
on its way to the backend and the rest queued, then ends by ``obs.shutdown()``, SIGTERM (default
action, or chained to a server's handler), uvicorn receiving SIGTERM (lifespan shutdown, then
SIGTERM re-raised), or a plain interpreter exit. The HTTP exporter posts to a loopback backend
that answers, one that reads and never answers, or a port where nothing listens; the OTLP
exporter is run against the port where nothing listens.

Checked for each: the process ends within the shutdown deadline (counted from the moment it is
told to stop, so interpreter start-up is excluded) plus a margin, and every span is delivered
(received by the backend), spooled (read back from the spool) or counted (``obs.dropped``, as
reported by the child), exactly once; with a spool nothing is counted.

The cases run concurrently (they mostly wait on sockets), in well under a minute.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from obs_middleware._spool import Spool

HERE = Path(__file__).parent
CHILD = HERE / "_shutdown_child.py"
SPANS = 2000
DEADLINE_S = 2.0  # PipelineOptions.shutdown_timeout_s, the children's default
# What a process takes after our last hook returns (interpreter teardown, uvicorn closing its
# loop), stretched by many processes sharing a loaded machine. Far below a second deadline: one
# hook after another each waiting a whole deadline is the failure this matrix exists for.
MARGIN_S = 1.0
STOPS = ("shutdown", "sigterm", "sigterm_chained", "uvicorn", "exit")


def _spooled_span_id(item: Any) -> str:
    """The span id of a spooled item: a record or row, or an OTLP span as encoded
    (a ``ScopeSpans.spans`` field, as latin-1 text)."""
    if isinstance(item, str):
        from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans  # noqa: PLC0415

        return str(ScopeSpans.FromString(item.encode("latin-1")).spans[0].span_id.hex())
    return str(item["span_id"])


@dataclass(frozen=True)
class Case:
    stop: str
    backend: str  # healthy | hung | down
    spool: bool
    exporter: str = "http"

    @property
    def id(self) -> str:
        spool = "spool" if self.spool else "no_spool"
        return f"{self.exporter}-{self.stop}-{self.backend}-{spool}"


CASES = [
    Case(stop, backend, spool)
    for stop in STOPS
    for backend in ("healthy", "hung", "down")
    for spool in (True, False)
] + [Case(stop, "down", spool, "otlp") for stop in STOPS for spool in (True, False)]


class Backend:
    """Loopback collector for JSON batches: ``/ok/<case>`` records and answers 200,
    ``/hung/<case>`` reads the batch and never answers."""

    def __init__(self) -> None:
        self.received: dict[str, list[str]] = defaultdict(list)
        self.release = threading.Event()
        lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                _, kind, case = self.path.split("/", 2)
                if kind == "hung":
                    backend.release.wait(60)
                    self.close_connection = True
                    return
                with lock:
                    backend.received[case].extend(r["span_id"] for r in json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

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


@dataclass
class Outcome:
    """What one case's process did."""

    case: Case
    elapsed: float  # s from the stop to the process's end
    returncode: int
    delivered: list[str]
    spooled: list[str]
    dropped: dict[str, float]
    stderr: str
    expected: int = SPANS
    notes: list[str] = field(default_factory=list)


def run_case(case: Case, backend: Backend, closed_url: str, tmp: Path) -> Outcome:
    directory = tmp / case.id
    directory.mkdir()
    report = directory / "report.json"
    spool_dir = directory / "spool"
    env = {
        **os.environ,
        "CHILD_STOP": case.stop,
        "CHILD_REPORT": str(report),
        "OBS_HTTP_TAG": f"{'ok' if case.backend == 'healthy' else 'hung'}/{case.id}",
    }
    for var in ("OBS_EXPORTERS", "OBS_SPOOL_DIR", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(var, None)
    env["OBS_SPOOL_DIR"] = str(spool_dir) if case.spool else "off"
    url = closed_url if case.backend == "down" else backend.url
    env["CHILD_EXPORTER"] = f"{case.exporter}:{url}"
    expected = SPANS
    if case.stop == "uvicorn":
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        command = [sys.executable, "-m", "uvicorn", "_shutdown_child:app", "--app-dir", str(HERE)]
        command += ["--fd", str(listener.fileno()), "--log-level", "warning"]
        proc = subprocess.Popen(
            command,
            env=env,
            pass_fds=[listener.fileno()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        listener.close()
        try:  # connections wait in the listener's backlog until uvicorn serves them
            for query in ("start=0&n=1000&flush=0.5", "start=1000&n=1000"):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/produce?{query}", timeout=60)
            expected += 2  # the two server spans
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
        except OSError:
            proc.kill()
            raise
    else:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if case.stop in ("shutdown", "exit"):
            assert line[:1] == ["stop"], line
            stopped_at = float(line[1])
        else:
            assert line == ["ready"], line
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    ended = time.monotonic()
    spooled: list[str] = []
    for root, _, files in os.walk(spool_dir):
        if any(name.endswith((".seg", ".open")) for name in files):
            spool = Spool(root, 1 << 30, 1.0)
            for batch in spool.batches():
                spooled.extend(map(_spooled_span_id, batch))
                spool.ack()
    return Outcome(
        case=case,
        elapsed=ended - stopped_at,
        returncode=proc.returncode,
        delivered=list(backend.received.get(case.id, [])),
        spooled=spooled,
        dropped=json.loads(report.read_text()) if report.exists() else {"<no report>": -1},
        stderr=stderr,
        expected=expected,
    )


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every selected case, started at once; each test waits for its own."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)
    }
    backend = Backend()
    tmp = tmp_path_factory.mktemp("shutdown")
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with ThreadPoolExecutor(max_workers=4) as pool:
            yield {
                case.id: pool.submit(run_case, case, backend, closed_url, tmp)
                for case in CASES
                if case.id in selected
            }
            backend.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_span_is_delivered_spooled_or_counted_within_the_deadline(
    case: Case, outcomes: dict[str, Future[Outcome]]
) -> None:
    outcome = outcomes[case.id].result(timeout=120)
    counted = sum(outcome.dropped.values())
    summary = (
        f"{case.id}: {outcome.elapsed:.2f} s, rc {outcome.returncode}, "
        f"{len(outcome.delivered)} delivered, {len(outcome.spooled)} spooled, "
        f"dropped {outcome.dropped}\n{outcome.stderr[-3000:]}"
    )
    killed_by_sigterm = case.stop in ("sigterm", "uvicorn")  # SIGTERM's default action stays
    assert outcome.returncode == (-signal.SIGTERM if killed_by_sigterm else 0), summary
    assert outcome.elapsed <= DEADLINE_S + MARGIN_S, summary
    # Every span exactly once: delivered, spooled or counted.
    kept = outcome.delivered + outcome.spooled
    assert len(set(kept)) == len(kept), summary
    assert len(kept) + counted == outcome.expected, summary
    if case.spool:
        assert counted == 0, summary  # what a spool can keep is never dropped
    if case.backend != "healthy":
        assert outcome.delivered == [], summary
    elif not case.spool:
        assert counted == 0, summary
    # Failures are counted and warned about once; the OTel SDK does not log each retry.
    assert "Traceback" not in outcome.stderr, summary
    assert "retrying in" not in outcome.stderr, summary
