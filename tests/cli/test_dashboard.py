"""``obs dashboard``: loopback by default; another address only with ``--allow-remote``, loudly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from obs_middleware.dashboard import is_loopback, serve
from obs_middleware.exporters.sqlite import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def obs(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "obs_middleware.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "obs.db"
    connect(path, readonly=False).close()  # an empty store
    return str(path)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_an_address_beyond_loopback_is_refused_without_the_flag_and_never_bound(
    store: str, host: str
) -> None:
    port = free_port()
    proc = obs("dashboard", "--store", store, "--host", host, "--port", str(port))
    out, err = proc.communicate(timeout=60)  # it would serve forever had it bound
    assert proc.returncode == 2
    assert f"refusing to serve on {host}" in err
    assert "prompts, user ids and error messages" in err
    assert "--allow-remote" in err and "ssh -L" in err
    assert out == ""


def test_with_allow_remote_it_serves_and_warns_loudly(store: str) -> None:
    port = free_port()
    proc = obs(
        "dashboard", "--store", store, "--host", "0.0.0.0", "--port", str(port), "--allow-remote"
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.2:{port}/api/meta", timeout=5) as r:
                    assert r.status == 200  # reachable beyond 127.0.0.1: every interface
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert f"WARNING: obs dashboard is serving on 0.0.0.0:{port} with no authentication" in err


def test_loopback_hosts_need_no_flag() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "192.0.2.1", "no-such-host.invalid"]))


def test_serve_itself_refuses_beyond_loopback(store: str) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        serve(store, host="0.0.0.0", port=free_port())
