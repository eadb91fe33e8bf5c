"""Every query of the shipped Grafana dashboard returns data from a real Prometheus.

The demo service (its apps, SQLAlchemy database, AI SDKs against emulators and job workers) runs
under load in a subprocess (``_demo_load.py``) serving /metrics where .ci/backends/prometheus.sh
scrapes every second; then each panel target's expression, with the dashboard's variables
substituted, goes through ``/api/v1/query`` and must answer at least one series with a number.
Verified with Prometheus 2.42 (Debian).
"""

from __future__ import annotations

import json
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from obs_middleware.exporters.tinybird import asset_path

HERE = Path(__file__).parent
# Grafana's variables as a query of the last half minute would see them: the load lasts about
# ten 1-second scrapes, so a 30 s window holds all of it.
VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$job": "app"}


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.load(resp)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]  # type: ignore[no-any-return]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable left unsubstituted in {expr}"
    return expr


def targets(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title and refId, expression) of every target of every panel."""
    found = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            found.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
        assert panel["type"] == "row" or panel.get("targets"), f"{panel['title']}: no query"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sent(proc: subprocess.Popen[str], timeout: float) -> int:
    """The ``sent N`` line of the load process, waited for at most ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            pytest.fail(f"the demo load did not finish in {timeout:.0f} s")
        if line.startswith("sent "):
            return int(line.split()[1])
        if not line:
            pytest.fail(f"the demo load exited ({proc.wait()}) before it was done")


@pytest.fixture
def demo_load(prometheus_url: str, tmp_path: Path) -> Iterator[int]:
    """Run the demo load; yields the number of requests sent once the load is over."""
    port = os.environ["OBS_PROMETHEUS_TARGET_PORT"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBS_")}
    args = [str(HERE / "_demo_load.py"), port, str(free_port()), str(tmp_path / "spool")]
    proc = subprocess.Popen(
        [sys.executable, *args, "10", "150"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield sent(proc, timeout=300)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_every_panel_query_returns_data_after_the_demo_load(prometheus_url, demo_load):
    doc = json.loads(Path(asset_path("grafana", "obs-middleware.json")).read_text())
    # Prometheus has scraped the counters' final values: the whole load is in the window.
    deadline = time.monotonic() + 30
    total = 0.0
    while time.monotonic() < deadline:
        answer = query(prometheus_url, 'sum(http_server_requests_total{job="app"})')
        total = float(answer[0]["value"][1]) if answer else 0.0
        if total >= demo_load:
            break
        time.sleep(0.5)
    assert total == demo_load, f"Prometheus saw {total} of {demo_load} requests"
    time.sleep(2)  # one more scrape of the gauges and the last job counters

    # The $job variable's own query lists the scraped job.
    url = f"{prometheus_url}/api/v1/label/job/values?" + urllib.parse.urlencode(
        {"match[]": "http_server_requests_total"}
    )
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert "app" in json.load(resp)["data"]

    empty = []
    checked = targets(doc)
    assert len(checked) >= 25
    for where, expr in checked:
        result = query(prometheus_url, substitute(expr))
        numbers = [float(s["value"][1]) for s in result]
        if not any(math.isfinite(n) for n in numbers):
            empty.append(f"{where}: {substitute(expr)} -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # The rarer panels show what happened: the down backend dropped records and opened its
    # breakers, the other spooled; some jobs failed.
    dropped = query(prometheus_url, 'sum by (reason) (obs_dropped_total{job="app"})')
    assert any(s["metric"]["reason"].endswith(":http-dropping") for s in dropped), dropped
    breakers = query(prometheus_url, 'obs_exporter_breaker_state{job="app"}')
    assert {s["metric"]["exporter"] for s in breakers} == {"http-dropping", "http-spooling"}
    assert all(s["value"][1] in ("1", "2") for s in breakers), breakers  # not closed
    spool = query(prometheus_url, 'obs_exporter_spool_bytes{job="app",exporter="http-spooling"}')
    assert float(spool[0]["value"][1]) > 0
    failures = query(prometheus_url, 'sum(job_failures_total{job="app"})')
    assert float(failures[0]["value"][1]) > 0

    # The shipped recording rules (loaded by Prometheus, evaluated every second) read these
    # series: each has a value for the demo's job, so the alerts built on them can fire.
    rules = yaml.safe_load(Path(asset_path("prometheus", "alerts.yml")).read_text())
    records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert len(records) == 7
    for record in records:
        deadline = time.monotonic() + 10
        while not query(prometheus_url, f'{record}{{job="app"}}') and time.monotonic() < deadline:
            time.sleep(0.5)
        assert query(prometheus_url, f'{record}{{job="app"}}'), f"{record}: no value"
