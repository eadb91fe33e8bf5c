import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_to_uvicorn_flushes_every_span_before_exit(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    port = _free_port()
    env = {**os.environ, "OBS_TEST_OUT": str(out), "PYTHONPATH": str(HERE)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "uvicorn_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        for _ in range(19):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=2).read()
        assert _records(out) == []  # still queued: the export interval is an hour
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if server.poll() is None:
            server.kill()
    names = [r["name"] for r in _records(out)]
    assert names.count("GET /hello") == 20
    assert names.count("work") == 20


SCRIPT = """
import os, time
import obs_middleware as obs
obs.configure(exporters=["jsonl:" + os.environ["OBS_TEST_OUT"]])
for _ in range(50):
    with obs.span("tick"):
        pass
print("ready", flush=True)
time.sleep(30)
"""


def test_sigterm_to_a_plain_process_flushes_then_terminates(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    env = {**os.environ, "OBS_TEST_OUT": str(out), "OBS_EXPORT_INTERVAL_S": "3600"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM  # the default action still happens
    assert [r["name"] for r in _records(out)] == ["tick"] * 50
