"""``obs run -- COMMAND`` against real servers: uvicorn with two workers, gunicorn with two
UvicornWorkers, ``python app.py`` (uvicorn.run inside), Flask on werkzeug, Litestar on uvicorn.

The apps under ``obs_run_apps/`` (but ``starlette_app.py`` and ``doubled.py``, which instrument
themselves as well) never import obs_middleware. Every server is started at once when the module
starts (their startups overlap), on a free loopback port; each fixture drives its server, then
stops it with SIGTERM and waits, so every test reads what a stopped server left: the spans (JSON
lines, flushed at SIGTERM), the metrics it served, its exit code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from obs_middleware.cli.run import BOOTSTRAP
from obs_middleware.testing.emulators.openai import OpenAIEmulator

pytest.importorskip("gunicorn")
pytest.importorskip("prometheus_client")

APPS = Path(__file__).parent / "obs_run_apps"
OBS_RUN = [sys.executable, "-m", "obs_middleware.cli", "run", "--"]
# uvicorn.workers is deprecated (uvicorn 0.55 still has it): the uvicorn-worker package once gone
WORKER_CLASS = (
    "uvicorn.workers.UvicornWorker"
    if importlib.util.find_spec("uvicorn.workers")
    else "uvicorn_worker.UvicornWorker"
)
REQUESTS = 40  # to /users/{id}, 8 at a time, on each multi-worker server
LAST = 777  # the request sent right before SIGTERM: its spans are still queued then

Record = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One ``obs run`` command: started at once, driven and stopped by its fixture."""

    name: str
    command: list[str]
    ready_line: str  # in the server's log, once per worker
    workers: int
    root: Path
    env: dict[str, str]
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None
    metrics: str = ""  # the last scrape

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def spans_file(self) -> Path:
        return self.root / "spans.jsonl"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"  # obs run's metrics folder is made here (TMPDIR)

    def start(self) -> None:
        self.tmp.mkdir(parents=True)
        env = {k: v for k, v in self.env.items() if "MULTIPROC_DIR" not in k}
        env |= {
            "TMPDIR": str(self.tmp),
            "OBS_SERVICE": self.name,
            "OBS_EXPORTERS": f"jsonl:{self.spans_file}",
            "OBS_TRACES_PER_S": "0",
            "OBS_SHUTDOWN_TIMEOUT_S": "5",
        }
        command = [a.replace("{port}", str(self.port)) for a in self.command]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # a group of its own: no worker outlives the test
                OBS_RUN + command,
                cwd=APPS,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count(self.ready_line) < self.workers:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.output()}"
            time.sleep(0.1)
        while True:  # listening too (werkzeug logs before it binds)
            try:
                get(self.base + "/metrics")
                return
            except OSError:
                assert time.monotonic() < deadline, f"{self.name} not listening"
                time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit (killed after 30 s: the test then fails)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.output()}") from None
        return self.code

    def kill(self) -> None:
        """Stop whatever is left of the server's process group: SIGTERM, then SIGKILL."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return  # nothing left in the group
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()  # reaps the leader; the group is gone once its workers are
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def records(self) -> list[Record]:
        text = self.spans_file.read_text() if self.spans_file.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def counter(metrics: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def metrics_when(server: Server, name: str, want: float, **labels: str) -> str:
    """Scrape until ``name`` sums to ``want`` (workers publish their values within a second)."""
    deadline = time.monotonic() + 20
    while True:
        text = get(server.base + "/metrics").decode()
        if counter(text, name, **labels) == want or time.monotonic() > deadline:
            return text
        time.sleep(0.25)


def server_spans(records: list[Record]) -> list[Record]:
    return [r for r in records if r.get("span.kind") == "server"]


def children(records: list[Record], parent: Record) -> list[Record]:
    return [r for r in records if r["parent_id"] == parent["span_id"]]


# -- the servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, emulator: OpenAIEmulator
) -> Iterator[dict[str, Server]]:
    root = tmp_path_factory.mktemp("obs-run")
    db = root / "users.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"user{i}") for i in range(1000)])
    env = {**os.environ, "APP_DB": str(db), "APP_OPENAI_URL": emulator.url + "/v1"}
    host = ["--host", "127.0.0.1", "--port", "{port}"]
    uvicorn = [sys.executable, "-m", "uvicorn"]
    startup = "Application startup complete"
    specs = [
        ("uvicorn", [*uvicorn, "fastapi_app:app", *host, "--workers", "2"], startup, 2),
        (
            "gunicorn",
            [
                *(sys.executable, "-m", "gunicorn", "fastapi_app:app"),
                *("-k", WORKER_CLASS, "-w", "2"),
                *("-b", "127.0.0.1:{port}", "--graceful-timeout", "10"),
            ],
            startup,
            2,
        ),
        (
            "gunicorn-flask",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "flask_app:app",
                "-w",
                "2",
                "-b",
                "127.0.0.1:{port}",
            ],
            "Booting worker",
            2,
        ),
        ("python-app", [sys.executable, "starlette_app.py", "{port}"], startup, 1),
        ("flask", [sys.executable, "flask_app.py", "{port}"], "Running on", 1),
        ("litestar", [*uvicorn, "litestar_app:app", *host], startup, 1),
    ]
    started = {
        name: Server(name, command, ready, workers, root / name, env)
        for name, command, ready, workers in specs
    }
    try:
        for server in started.values():
            server.start()
        yield started
    finally:
        for server in started.values():
            server.kill()


@dataclass
class Run:
    """What a multi-worker server left once stopped."""

    server: Server
    pids: set[int]
    metrics: str
    records: list[Record]


def drive(server: Server, path: str = "/users/{}", route: str = "/users/{user_id}") -> Run:
    """REQUESTS concurrent requests, the summed metrics, one last request, SIGTERM."""
    server.wait_ready()
    try:
        with ThreadPoolExecutor(8) as pool:
            urls = [server.base + path.format(i) for i in range(REQUESTS)]
            replies = list(pool.map(get, urls))
        pids = {json.loads(r)["pid"] for r in replies}
        metrics = metrics_when(server, "http_server_requests_total", REQUESTS, http_route=route)
        get(server.base + path.format(LAST))
    finally:
        server.stop()
    return Run(server, pids, metrics, server.records())


@pytest.fixture(scope="module")
def uvicorn_run(servers: dict[str, Server]) -> Run:
    return drive(servers["uvicorn"])


@pytest.fixture(scope="module")
def gunicorn_run(servers: dict[str, Server]) -> Run:
    return drive(servers["gunicorn"])


@pytest.fixture(params=["uvicorn_run", "gunicorn_run"])
def run(request: pytest.FixtureRequest) -> Run:
    result: Run = request.getfixturevalue(request.param)
    return result


# -- uvicorn --workers 2, gunicorn -k uvicorn.workers.UvicornWorker -w 2 ------------------------


def test_every_request_is_a_server_span_with_its_route_and_db_and_ai_children(run: Run) -> None:
    spans = server_spans(run.records)
    assert len(spans) == REQUESTS + 1, run.server.output()
    for span in spans:
        assert span["name"] == "GET /users/{user_id}"
        assert span["http.route"] == "/users/{user_id}"
        assert span["http.status_code"] == 200
        kids = {r["name"]: r for r in children(run.records, span)}
        assert set(kids) == {"db.query", "ai.request"}
        assert kids["db.query"]["db.statement"] == "SELECT name FROM users WHERE id = ?"
        assert kids["ai.request"]["ai.model"] == "gpt-4o-mini"
        assert kids["ai.request"]["ai.input_tokens"] == 20
    assert {r["service"] for r in run.records} == {run.server.name}


def test_a_warning_the_app_logs_is_exported_in_its_request_trace(run: Run) -> None:
    # ``obs run`` sets OBS_LOGS=warning: no logging line of ours in the app.
    traces = {s["trace_id"] for s in server_spans(run.records)}
    logs = [r for r in run.records if r["type"] == "event" and r["name"] == "log"]
    assert len(logs) == REQUESTS + 1, run.server.output()
    for log in logs:
        assert log["log.logger"] == "app.users"
        assert log["log.level"] == "WARNING"
        assert log["log.message"].startswith("slow user lookup for ")
        assert log["trace_id"] in traces


def test_both_workers_served_and_metrics_are_summed_across_them(run: Run) -> None:
    assert len(run.pids) == 2, "one worker took every request"
    instances = Counter(r["service.instance.id"] for r in server_spans(run.records))
    assert len(instances) == 2
    route = {"http_route": "/users/{user_id}"}
    assert counter(run.metrics, "http_server_requests_total", **route) == REQUESTS
    assert counter(run.metrics, "ai_requests_total", ai_model="gpt-4o-mini") == REQUESTS
    assert 'http_route="/metrics"' not in run.metrics  # scrapes are not traffic


def test_sigterm_flushes_the_last_spans_and_the_metrics_folder_goes(run: Run) -> None:
    assert run.server.code == 0, run.server.output()
    last = [s for s in server_spans(run.records) if s["url.path"] == f"/users/{LAST}"]
    assert len(last) == 1
    deadline = time.monotonic() + 10
    while list(run.server.tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)  # the reaper removes it once every process of the command is gone
    assert list(run.server.tmp.iterdir()) == []
    assert "Traceback" not in run.server.output()


def test_gunicorn_sync_workers_trace_a_flask_app_and_sum_its_metrics(
    servers: dict[str, Server],
) -> None:
    run = drive(servers["gunicorn-flask"], "/orders/{}", "/orders/<int:order_id>")
    assert run.server.code == 0, run.server.output()
    assert len(run.pids) == 2, "one worker took every request"
    spans = server_spans(run.records)
    assert [s["name"] for s in spans] == ["GET /orders/<int:order_id>"] * (REQUESTS + 1)
    assert len({s["service.instance.id"] for s in spans}) == 2
    route = "/orders/<int:order_id>"
    assert counter(run.metrics, "http_server_requests_total", http_route=route) == REQUESTS
    assert "Traceback" not in run.server.output()


# -- python app.py (uvicorn.run inside, the app adds ObsMiddleware too), Flask, Litestar --------


@pytest.fixture(scope="module")
def single_runs(servers: dict[str, Server]) -> dict[str, Server]:
    paths = {"python-app": "/items/{n}", "flask": "/orders/{n}", "litestar": "/books/{n}"}
    for name, path in paths.items():
        server = servers[name]
        server.wait_ready()
        try:
            for n in range(3):
                get(server.base + path.format(n=n))
            server.metrics = metrics_when(server, "http_server_requests_total", 3)
        finally:
            server.stop()
    return {name: servers[name] for name in paths}


@pytest.mark.parametrize(
    ("name", "span_name"),
    [
        ("python-app", "GET /items/{item_id}"),
        ("flask", "GET /orders/<int:order_id>"),
        ("litestar", "GET /books/{book_id}"),
    ],
)
def test_single_process_servers_trace_each_request_once(
    single_runs: dict[str, Server], name: str, span_name: str
) -> None:
    server = single_runs[name]
    spans = server_spans(server.records())
    assert [s["name"] for s in spans] == [span_name] * 3, server.output()
    assert counter(server.metrics, "http_server_requests_total") == 3
    assert "Traceback" not in server.output()


def test_python_app_with_its_own_middleware_keeps_its_child_spans(
    single_runs: dict[str, Server],
) -> None:
    records = single_runs["python-app"].records()
    for span in server_spans(records):
        assert [c["name"] for c in children(records, span)] == ["work"]


# -- doubled instrumentation in every framework, in one process -----------------------------------


def test_an_app_instrumented_by_obs_run_and_by_itself_yields_one_span_per_request(
    tmp_path: Path,
) -> None:
    out = tmp_path / "spans.jsonl"
    env = {**os.environ, "OBS_EXPORTERS": f"jsonl:{out}", "OBS_TRACES_PER_S": "0"}
    proc = subprocess.run(
        [*OBS_RUN, sys.executable, "doubled.py"],
        cwd=APPS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    names = Counter(r["name"] for r in server_spans(records))
    assert names == {
        "GET /plain/{n}": 3,
        "GET /starlette/{n}": 3,
        "GET /fastapi/{n}": 3,
        "GET /litestar/{n}": 4,  # the app with the plugin of its own too
        "GET /flask/<int:n>": 3,
    }
    for app, seen in result.items():
        assert set(seen["request_ids"]) == {1}, app  # one middleware answered
        assert seen.get("metrics", 200) == 200, app


# -- the command line ------------------------------------------------------------------------------


def test_bootstrap_folder_holds_only_sitecustomize() -> None:
    # Anything else there would shadow a module of the app for every process of the command.
    assert sorted(p.name for p in Path(BOOTSTRAP).glob("*.py")) == ["sitecustomize.py"]
